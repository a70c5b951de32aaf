package protocol

import (
	"encoding/json"
	"strings"
	"testing"
	"unicode/utf8"
)

var (
	uidSport = UID{Epoch: "E1", Seq: 42}
	errNR    = NewError(CodeNotRecoverable, "lost")
)

// goldenFrames lists every frame shape of docs/protocol.md with the exact bytes
// our encoders must produce (key order included).
var goldenFrames = []struct {
	name string
	got  []byte
	want string
}{
	{"BEGIN request", AppendBegin(nil), `{"sys":3}`},
	{"BEGIN reply heartbeats", AppendBeginReply(nil, Prot{V: 1, HB: true, HBInterval: 30000, HBThreshold: 2500}, "", UID{}),
		`{"sys":3,"prot":{"v":1,"hb":true,"hbInterval":30000,"hbThreshold":2500}}`},
	{"BEGIN reply no heartbeats", AppendBeginReply(nil, Prot{V: 1}, "", UID{}), `{"sys":3,"prot":{"v":1}}`},
	{"BEGIN reply zero prot", AppendBeginReply(nil, Prot{}, "", UID{}), `{"sys":3,"prot":{"v":1}}`},
	{"BEGIN reply with user", AppendBeginReply(nil, Prot{V: 1, HB: true, HBInterval: 30000, HBThreshold: 2500}, "_user.alice", UID{Epoch: "Ab9", Seq: 0}),
		`{"sys":3,"prot":{"v":1,"hb":true,"hbInterval":30000,"hbThreshold":2500},"channel":"_user.alice","lastUid":"Ab9.0"}`},
	{"SUBSCRIBE request", AppendSubscribe(nil, json.RawMessage("7"), "sport", json.RawMessage(`{"a":1}`)),
		`{"sys":1,"channel":"sport","query":{"a":1},"id":7}`},
	{"SUBSCRIBE request null query", AppendSubscribe(nil, json.RawMessage("1"), "room2", nil),
		`{"sys":1,"channel":"room2","query":null,"id":1}`},
	{"SUBSCRIBE reply ok", AppendSubscribeOK(nil, json.RawMessage("7"), "sport", uidSport),
		`{"sys":1,"result":true,"channel":"sport","id":7,"lastUid":"E1.42"}`},
	{"SUBSCRIBE reply fail", AppendSubscribeFail(nil, json.RawMessage("7"), "sport", NewError(CodeForbidden, "no")),
		`{"sys":1,"result":false,"channel":"sport","id":7,"err":{"name":"Forbidden","message":"no","code":"forbidden"}}`},
	{"SUBSCRIBE reply fail bad_request", AppendSubscribeFail(nil, json.RawMessage(`"x"`), "", NewError(CodeBadRequest, "channel must be a string")),
		`{"sys":1,"result":false,"id":"x","err":{"name":"BadRequest","message":"channel must be a string","code":"bad_request"}}`},
	{"UNSUBSCRIBE", AppendUnsubscribe(nil, "sport"), `{"sys":2,"channel":"sport"}`},
	{"FEED", AppendFeed(nil, "sport", "article", json.RawMessage(`{"t":"goal"}`), uidSport),
		`{"sys":8,"topic":"article","msg":{"t":"goal"},"channel":"sport","uid":"E1.42"}`},
	{"FEED nil msg", AppendFeed(nil, "sport", "article", nil, uidSport),
		`{"sys":8,"topic":"article","msg":null,"channel":"sport","uid":"E1.42"}`},
	{"UPDATESUB", AppendUpdateSub(nil, "sport", uidSport), `{"sys":12,"channel":"sport","uid":"E1.42"}`},
	{"BROADCAST", AppendBroadcast(nil, "maintenance", json.RawMessage(`"soon"`)), `{"sys":11,"topic":"maintenance","msg":"soon"}`},
	{"TELL", AppendTell(nil, "likedMsg", json.RawMessage(`{"id":3}`)), `{"sys":6,"topic":"likedMsg","msg":{"id":3}}`},
	{"TELL presence", AppendTell(nil, PresenceTopic, json.RawMessage(`{"channel":"sport","event":"join","member":{"user":"u","info":{}}}`)),
		`{"sys":6,"topic":"_presence","msg":{"channel":"sport","event":"join","member":{"user":"u","info":{}}}}`},
	{"ASK", AppendAsk(nil, json.RawMessage("3"), "serverTime", json.RawMessage(`{}`)), `{"sys":5,"topic":"serverTime","msg":{},"id":3}`},
	{"ASK nil msg", AppendAsk(nil, json.RawMessage("3"), "serverTime", nil), `{"sys":5,"topic":"serverTime","msg":null,"id":3}`},
	{"RESPONSE", AppendResponse(nil, json.RawMessage("3"), json.RawMessage(`1700000000`)), `{"sys":7,"msg":1700000000,"id":3}`},
	{"RESPONSE error", AppendResponseError(nil, json.RawMessage("3"), NewError(CodeUnknownTopic, "no handler")),
		`{"sys":7,"err":{"name":"UnknownTopic","message":"no handler","code":"unknown_topic"},"id":3}`},
	{"RESPONSE nil error", AppendResponseError(nil, json.RawMessage("3"), nil),
		`{"sys":7,"err":{"name":"Internal","message":"internal error","code":"internal"},"id":3}`},
	{"BOOT", AppendBoot(nil, "you asked for it"), `{"sys":9,"reason":"you asked for it"}`},
	{"error frame", AppendErrorFrame(nil, NewError(CodeBadFrame, "not JSON")),
		`{"err":{"name":"BadFrame","message":"not JSON","code":"bad_frame"}}`},
	{"SYNC request", AppendSync(nil, nil, []SyncEntry{
		{Channel: "_user.alice"},
		{Channel: "room1", LastUID: "E1.2", HasUID: true, Query: json.RawMessage(`{"n":[1]}`)},
	}), `{"sys":4,"subscriptions":[{"channel":"_user.alice","lastUid":null,"query":null},{"channel":"room1","lastUid":"E1.2","query":{"n":[1]}}]}`},
	{"SYNC request empty with id", AppendSync(nil, json.RawMessage("5"), nil), `{"sys":4,"id":5,"subscriptions":[]}`},
	{"SYNC reply empty", AppendSyncReply(nil, nil, nil, nil), `{"sys":4,"result":{},"records":[]}`},
	{"SYNC reply", AppendSyncReply(nil, nil,
		[]SyncResult{{Channel: "sport", OK: true}, {Channel: "news", Err: errNR}},
		[][]byte{AppendFeed(nil, "sport", "a", json.RawMessage("1"), UID{"E1", 3}), AppendFeed(nil, "sport", "a", json.RawMessage("2"), UID{"E1", 4})}),
		`{"sys":4,"result":{"sport":true,"news":false},"errors":{"news":{"name":"NotRecoverable","message":"lost","code":"not_recoverable"}},` +
			`"records":[{"sys":8,"topic":"a","msg":1,"channel":"sport","uid":"E1.3"},{"sys":8,"topic":"a","msg":2,"channel":"sport","uid":"E1.4"}]}`},
	{"SYNC reply all ok with id", AppendSyncReply(nil, json.RawMessage(`"s"`), []SyncResult{{Channel: "a", OK: true}}, nil),
		`{"sys":4,"id":"s","result":{"a":true},"records":[]}`},
	{"SYNC reply failure without error", AppendSyncReply(nil, nil, []SyncResult{{Channel: "a"}}, [][]byte{}),
		`{"sys":4,"result":{"a":false},"errors":{"a":{"name":"NotRecoverable","message":"channel not recoverable","code":"not_recoverable"}},"records":[]}`},
}

func TestGoldenFrames(t *testing.T) {
	for _, g := range goldenFrames {
		t.Run(g.name, func(t *testing.T) {
			if string(g.got) != g.want {
				t.Fatalf("got  %s\nwant %s", g.got, g.want)
			}
			if !json.Valid(g.got) {
				t.Fatal("not valid JSON")
			}
			if strings.Contains(g.want, `"sys"`) && !strings.HasPrefix(g.want, `{"sys":`) {
				t.Fatal("sys not first")
			}
		})
	}
}

// TestRoundTripServer decodes every server frame shape with DecodeServer.
func TestRoundTripServer(t *testing.T) {
	prot := Prot{V: 1, HB: true, HBInterval: 30000, HBThreshold: 2500}
	feed := AppendFeed(nil, "sport", "a<&>", json.RawMessage(`{"x":[1]}`), uidSport)
	tests := []struct {
		name  string
		frame []byte
		check func(*Message) bool
	}{
		{"begin reply", AppendBeginReply(nil, prot, "_user.al", uidSport), func(m *Message) bool {
			return m.Sys == SysBegin && *m.Prot == prot && m.Channel == "_user.al" && m.LastUID == "E1.42"
		}},
		{"begin reply no hb", AppendBeginReply(nil, Prot{V: 1}, "", UID{}), func(m *Message) bool {
			return *m.Prot == Prot{V: 1} && m.Channel == ""
		}},
		{"subscribe ok", AppendSubscribeOK(nil, json.RawMessage(`"i"`), "c", uidSport), func(m *Message) bool {
			return m.Sys == SysSubscribe && m.Result && string(m.ID) == `"i"` && m.Channel == "c" && m.LastUID == "E1.42" && m.Err == nil
		}},
		{"subscribe fail", AppendSubscribeFail(nil, json.RawMessage(`2`), "c", errNR), func(m *Message) bool {
			return !m.Result && string(m.ID) == "2" && *m.Err == *errNR
		}},
		{"feed", feed, func(m *Message) bool {
			return m.Sys == SysFeed && m.Topic == "a<&>" && m.Channel == "sport" && m.UID == "E1.42" && string(m.Msg) == `{"x":[1]}`
		}},
		{"updatesub", AppendUpdateSub(nil, "c", uidSport), func(m *Message) bool { return m.Sys == SysUpdateSub && m.Channel == "c" && m.UID == "E1.42" }},
		{"broadcast", AppendBroadcast(nil, "t", nil), func(m *Message) bool { return m.Sys == SysBroadcast && string(m.Msg) == "null" }},
		{"tell", AppendTell(nil, "t", json.RawMessage(`[]`)), func(m *Message) bool { return m.Sys == SysTell && string(m.Msg) == "[]" }},
		{"response", AppendResponse(nil, json.RawMessage(`3`), json.RawMessage(`"ok"`)), func(m *Message) bool {
			return m.Sys == SysResponse && string(m.Msg) == `"ok"` && string(m.ID) == "3"
		}},
		{"response error", AppendResponseError(nil, json.RawMessage(`3`), errNR), func(m *Message) bool {
			return m.Sys == SysResponse && m.Msg == nil && *m.Err == *errNR
		}},
		{"boot", AppendBoot(nil, "bye"), func(m *Message) bool { return m.Sys == SysBoot && m.Reason == "bye" }},
		{"error frame", AppendErrorFrame(nil, errNR), func(m *Message) bool { return m.Sys == 0 && *m.Err == *errNR }},
		{"sync reply", AppendSyncReply(nil, json.RawMessage(`1`), []SyncResult{{Channel: "sport", OK: true}, {Channel: "n", Err: errNR}}, [][]byte{feed, feed}),
			func(m *Message) bool {
				return m.Sys == SysSync && string(m.ID) == "1" && len(m.SyncResult) == 2 && m.SyncResult["sport"] && !m.SyncResult["n"] &&
					*m.SyncErrors["n"] == *errNR && len(m.Records) == 2 && m.Records[1].UID == "E1.42" && m.Records[0].Channel == "sport"
			}},
		{"sync reply empty", AppendSyncReply(nil, nil, nil, nil), func(m *Message) bool {
			return m.SyncResult != nil && len(m.SyncResult) == 0 && m.Records != nil && len(m.Records) == 0 && m.SyncErrors == nil
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m, err := DecodeServer(tc.frame, DefaultLimits())
			if err != nil {
				t.Fatalf("%s: %v", tc.frame, err)
			}
			if !tc.check(m) {
				t.Fatalf("%s decoded as %+v", tc.frame, m)
			}
		})
	}
}

// TestRoundTripClient decodes what the client encoders produce.
func TestRoundTripClient(t *testing.T) {
	entries := []SyncEntry{
		{Channel: "_user.ü"},
		{Channel: "room1", LastUID: "E1.2", HasUID: true, Query: json.RawMessage(`{"q":"<"}`)},
		{Channel: "r", LastUID: "", HasUID: true},
	}
	tests := []struct {
		name  string
		frame []byte
		check func(*Message) bool
	}{
		{"begin", AppendBegin(nil), func(m *Message) bool { return m.Sys == SysBegin }},
		{"subscribe", AppendSubscribe(nil, json.RawMessage(`"a"`), "ch", json.RawMessage(`[1]`)), func(m *Message) bool {
			return m.Sys == SysSubscribe && m.Channel == "ch" && string(m.ID) == `"a"` && string(m.Query) == "[1]"
		}},
		{"subscribe nil query", AppendSubscribe(nil, json.RawMessage(`0`), "ch", nil), func(m *Message) bool {
			return m.Query == nil && string(m.ID) == "0"
		}},
		{"unsubscribe", AppendUnsubscribe(nil, "ch"), func(m *Message) bool { return m.Sys == SysUnsubscribe && m.Channel == "ch" }},
		{"ask", AppendAsk(nil, json.RawMessage(`9`), "t", json.RawMessage(`{"a":null}`)), func(m *Message) bool {
			return m.Sys == SysAsk && m.Topic == "t" && string(m.Msg) == `{"a":null}`
		}},
		{"tell", AppendTell(nil, "t\n", nil), func(m *Message) bool { return m.Sys == SysTell && m.Topic == "t\n" && string(m.Msg) == "null" }},
		{"sync", AppendSync(nil, json.RawMessage(`4`), entries), func(m *Message) bool {
			if m.Sys != SysSync || string(m.ID) != "4" || len(m.Subscriptions) != len(entries) {
				return false
			}
			for i, e := range m.Subscriptions {
				w := entries[i]
				if e.Channel != w.Channel || e.LastUID != w.LastUID || e.HasUID != w.HasUID || string(e.Query) != string(w.Query) {
					return false
				}
			}
			return true
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m, err := DecodeClient(tc.frame, DefaultLimits())
			if err != nil {
				t.Fatalf("%s: %v", tc.frame, err)
			}
			if !tc.check(m) {
				t.Fatalf("%s decoded as %+v", tc.frame, m)
			}
		})
	}
}

func TestAppendStringEscaping(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		{"plain", "abc", `"abc"`},
		{"html stays literal", "<a href='x'>&amp;</a>", `"<a href='x'>&amp;</a>"`},
		{"quote and backslash", `a"b\c`, `"a\"b\\c"`},
		{"short escapes", "\n\r\t\b\f", `"\n\r\t\b\f"`},
		{"control chars", "\x00\x01\x1f\x7f", `"\u0000\u0001\u001f` + "\x7f" + `"`},
		{"utf8 kept", "héllo 世界 🎉", `"héllo 世界 🎉"`},
		{"invalid utf8", "a\xffb\xc3", `"a\ufffdb\ufffd"`},
		{"line separators", "\u2028\u2029", `"\u2028\u2029"`},
		{"empty", "", `""`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := string(appendString(nil, tc.in))
			if got != tc.want {
				t.Fatalf("got %s want %s", got, tc.want)
			}
			var back string
			if err := json.Unmarshal([]byte(got), &back); err != nil {
				t.Fatalf("invalid JSON %s: %v", got, err)
			}
			if want := strings.ToValidUTF8(tc.in, "\ufffd"); back != want && tc.name != "invalid utf8" {
				t.Fatalf("round trip %q, want %q", back, want)
			}
		})
	}
}

func TestEncodersKeepRawVerbatim(t *testing.T) {
	msg := json.RawMessage("{ \"a\" : \"<&>\" }")
	got := string(AppendTell(nil, "t", msg))
	if want := `{"sys":6,"topic":"t","msg":{ "a" : "<&>" }}`; got != want {
		t.Fatalf("got %s want %s", got, want)
	}
	// An empty non-nil raw value would make invalid JSON: it writes null.
	if got := string(AppendResponse(nil, json.RawMessage("1"), json.RawMessage{})); got != `{"sys":7,"msg":null,"id":1}` {
		t.Fatalf("got %s", got)
	}
}

func TestAppendAppends(t *testing.T) {
	b := []byte("prefix")
	b = AppendUpdateSub(b, "c", UID{"e", 1})
	if string(b) != `prefix{"sys":12,"channel":"c","uid":"e.1"}` {
		t.Fatalf("got %s", b)
	}
}

func TestInvalidUIDEncodesValidJSON(t *testing.T) {
	b := AppendUpdateSub(nil, "c", UID{Epoch: `a"b`, Seq: 1})
	if !json.Valid(b) {
		t.Fatalf("invalid JSON %s", b)
	}
}

func TestAppendBootTruncates(t *testing.T) {
	long := strings.Repeat("é", 100) // 200 bytes
	m, err := DecodeServer(AppendBoot(nil, long), Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Reason) > MaxReasonLen || len(m.Reason) < MaxReasonLen-1 || !strings.HasPrefix(long, m.Reason) {
		t.Fatalf("reason %d bytes %q", len(m.Reason), m.Reason)
	}
	if got := TruncateReason("short"); got != "short" {
		t.Fatalf("TruncateReason(short) = %q", got)
	}
}

func TestAppendFeedZeroAllocs(t *testing.T) {
	msg := json.RawMessage(`{"text":"hello <world>","n":[1,2,3]}`)
	buf := make([]byte, 0, 256)
	allocs := testing.AllocsPerRun(100, func() {
		buf = AppendFeed(buf[:0], "sport-news", "article", msg, UID{Epoch: "AbCdEfGh12345678", Seq: 123456})
	})
	if allocs != 0 {
		t.Fatalf("AppendFeed allocates %v times per call", allocs)
	}
}

func BenchmarkAppendFeed(b *testing.B) {
	msg := json.RawMessage(`{"text":"hello <world>","n":[1,2,3]}`)
	buf := make([]byte, 0, 256)
	uid := UID{Epoch: "AbCdEfGh12345678", Seq: 123456}
	b.ReportAllocs()
	for b.Loop() {
		buf = AppendFeed(buf[:0], "sport-news", "article", msg, uid)
	}
	b.SetBytes(int64(len(buf)))
}

func BenchmarkDecodeClient(b *testing.B) {
	frames := map[string][]byte{
		"ask":       []byte(`{"sys":5,"topic":"echo","msg":{"a":1,"b":[true,null,"x"],"c":{"d":2.5}},"id":1}`),
		"subscribe": []byte(`{"sys":1,"channel":"room1","query":{"from":"golden","n":[1,2]},"id":1}`),
		"sync":      []byte(`{"sys":4,"subscriptions":[{"channel":"_u_alice","lastUid":null,"query":null},{"channel":"room1","lastUid":"2","query":{"from":"golden","n":[1,2]}},{"channel":"room2","lastUid":"2","query":null}]}`),
	}
	for name, f := range frames {
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(f)))
			for b.Loop() {
				if _, err := DecodeClient(f, Limits{}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestTruncateReasonValidUTF8: a reason is cut on a rune boundary to at
// most MaxReasonLen bytes and always comes out as valid UTF-8 (a close
// frame's reason must be), its valid text kept.
func TestTruncateReasonValidUTF8(t *testing.T) {
	for _, in := range []string{
		"ok \xff",                             // invalid byte
		strings.Repeat("\x80", 200),           // only continuation bytes
		strings.Repeat("😀", 40),               // 4-byte runes across byte 123
		"a" + strings.Repeat("é", 100),        // 2-byte runes, odd start
		strings.Repeat("x", 122) + "\xe2\x98", // truncated rune at the end
		"caf\xe9 " + strings.Repeat("é", 80),
	} {
		got := TruncateReason(in)
		if !utf8.ValidString(got) || len(got) > MaxReasonLen {
			t.Errorf("TruncateReason(%.40q) = %q (%d bytes): not valid UTF-8 within %d bytes", in, got, len(got), MaxReasonLen)
		}
		if utf8.ValidString(in) && !strings.HasPrefix(in, got) {
			t.Errorf("TruncateReason(%.40q) = %q: not a prefix of the valid input", in, got)
		}
		if utf8.ValidString(in) && len(in) > MaxReasonLen && len(got) < MaxReasonLen-3 {
			t.Errorf("TruncateReason(%.40q) kept only %d bytes", in, len(got))
		}
	}
	if got := TruncateReason("ok \xff"); got != "ok \uFFFD" {
		t.Errorf("TruncateReason(ok \\xff) = %q, want the invalid byte replaced by U+FFFD", got)
	}
}
