package protocol

import (
	"bufio"
	"errors"
	"os"
	"strings"
	"testing"
)

// loadClientFrames reads testdata/sss-client-frames.txt: name -> frame.
func loadClientFrames(t testing.TB) map[string]string {
	t.Helper()
	f, err := os.Open("testdata/sss-client-frames.txt")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	frames := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		name, frame, ok := strings.Cut(line, "\t")
		if !ok {
			t.Fatalf("bad line %q", line)
		}
		frames[name] = frame
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return frames
}

func TestDecodeClientSSSFrames(t *testing.T) {
	frames := loadClientFrames(t)
	type want struct {
		sys     Sys
		id      string // "" = nil
		channel string
		topic   string
		msg     string // "" = nil
		query   string // "" = nil
		subs    []SyncEntry
	}
	tests := map[string]want{
		"begin":                     {sys: SysBegin},
		"subscribe-query-object":    {sys: SysSubscribe, id: "1", channel: "room1", query: `{"from":"golden","n":[1,2]}`},
		"subscribe-query-null":      {sys: SysSubscribe, id: "1", channel: "room2"},
		"subscribe-query-undefined": {sys: SysSubscribe, id: "1", channel: "room3"},
		"subscribe-empty-name":      {sys: SysSubscribe, id: "1", channel: ""},
		"subscribe-refused":         {sys: SysSubscribe, id: "1", channel: "forbidden"},
		"unsubscribe":               {sys: SysUnsubscribe, channel: "room4"},
		"unsubscribe-user":          {sys: SysUnsubscribe, channel: "_u_alice"},
		"ask-object":                {sys: SysAsk, id: "1", topic: "echo", msg: `{"a":1,"b":[true,null,"x"],"c":{"d":2.5}}`},
		"ask-string":                {sys: SysAsk, id: "1", topic: "echo", msg: `"hello"`},
		"ask-null":                  {sys: SysAsk, id: "1", topic: "echo", msg: "null"},
		"ask-undefined":             {sys: SysAsk, id: "1", topic: "echo"},
		"tell":                      {sys: SysTell, topic: "post", msg: `{"room":"room1","text":"hi"}`},
		"tell-undefined":            {sys: SysTell, topic: "nothing"},
		"sync-user": {sys: SysSync, subs: []SyncEntry{
			{Channel: "_u_alice"},
			{Channel: "room1", LastUID: "2", HasUID: true, Query: []byte(`{"from":"golden","n":[1,2]}`)},
			{Channel: "room2", LastUID: "2", HasUID: true},
			{Channel: "room3"},
			{Channel: "room5"},
		}},
		"sync-no-user": {sys: SysSync, subs: []SyncEntry{
			{Channel: "42"},
			{Channel: "room1", LastUID: "2", HasUID: true},
		}},
		"sync-empty": {sys: SysSync, subs: []SyncEntry{}},
	}
	if len(frames) != len(tests) {
		t.Fatalf("testdata has %d frames, table %d", len(frames), len(tests))
	}
	for name, w := range tests {
		t.Run(name, func(t *testing.T) {
			frame, ok := frames[name]
			if !ok {
				t.Fatalf("frame %q missing from testdata", name)
			}
			m, err := DecodeClient([]byte(frame), DefaultLimits())
			if err != nil {
				t.Fatalf("DecodeClient: %v", err)
			}
			if m.Sys != w.sys || m.Channel != w.channel || m.Topic != w.topic {
				t.Errorf("sys/channel/topic = %d/%q/%q, want %d/%q/%q", m.Sys, m.Channel, m.Topic, w.sys, w.channel, w.topic)
			}
			checkRaw(t, "id", m.ID, w.id)
			checkRaw(t, "msg", m.Msg, w.msg)
			checkRaw(t, "query", m.Query, w.query)
			if w.sys == SysSync {
				if m.Subscriptions == nil {
					t.Fatal("Subscriptions nil for SYNC")
				}
				if len(m.Subscriptions) != len(w.subs) {
					t.Fatalf("%d subscriptions, want %d", len(m.Subscriptions), len(w.subs))
				}
				for i, e := range m.Subscriptions {
					ws := w.subs[i]
					if e.Channel != ws.Channel || e.LastUID != ws.LastUID || e.HasUID != ws.HasUID {
						t.Errorf("entry %d = %+v, want %+v", i, e, ws)
					}
					checkRaw(t, "entry query", e.Query, string(ws.Query))
				}
			}
		})
	}
}

// checkRaw compares a raw field with want ("" meaning nil).
func checkRaw(t *testing.T, what string, got []byte, want string) {
	t.Helper()
	if want == "" {
		if got != nil {
			t.Errorf("%s = %q, want nil", what, got)
		}
		return
	}
	if string(got) != want {
		t.Errorf("%s = %q, want %q", what, got, want)
	}
}

func TestDecodeClientBadInput(t *testing.T) {
	deep := func(n int) string { return strings.Repeat("[", n-1) + strings.Repeat("]", n-1) }
	tests := []struct {
		name  string
		frame string
		code  string
		id    string // expected DecodeError.ID, "" = nil
		large bool   // wraps ErrFrameTooLarge
	}{
		{"not JSON", `{"sys":1,`, CodeBadFrame, "", false},
		{"empty", ``, CodeBadFrame, "", false},
		{"invalid UTF-8 in a string", "{\"sys\":6,\"topic\":\"t\",\"msg\":\"\xff\"}", CodeBadFrame, "", false},
		{"invalid UTF-8 in an id", "{\"sys\":5,\"topic\":\"t\",\"id\":\"\xc3\"}", CodeBadFrame, "", false},
		{"heartbeat is not a frame", `h`, CodeBadFrame, "", false},
		{"not an object: array", `[{"sys":3}]`, CodeBadFrame, "", false},
		{"not an object: string", `"sys"`, CodeBadFrame, "", false},
		{"not an object: number", `3`, CodeBadFrame, "", false},
		{"two objects", `{"sys":3}{"sys":3}`, CodeBadFrame, "", false},
		{"too deep", `{"sys":6,"topic":"t","msg":` + deep(33) + `}`, CodeBadFrame, "", false},
		{"oversize frame", `{"sys":6,"topic":"t","msg":"` + strings.Repeat("x", 64<<10) + `"}`, CodeBadFrame, "", true},
		{"unknown sys", `{"sys":13}`, CodeUnknownSys, "", false},
		{"sys 0", `{"sys":0}`, CodeUnknownSys, "", false},
		{"huge sys", `{"sys":100000000000000000000}`, CodeUnknownSys, "", false},
		{"negative sys", `{"sys":-1}`, CodeUnknownSys, "", false},
		{"missing sys", `{"channel":"a"}`, CodeUnknownSys, "", false},
		{"sys case-sensitive", `{"SYS":3}`, CodeUnknownSys, "", false},
		{"sys string", `{"sys":"1","channel":"a","id":1}`, CodeUnknownSys, "", false},
		{"sys 1.5", `{"sys":1.5}`, CodeUnknownSys, "", false},
		{"sys 1.0", `{"sys":1.0,"channel":"a","id":1}`, CodeUnknownSys, "", false},
		{"sys 3e0", `{"sys":3e0}`, CodeUnknownSys, "", false},
		{"sys null", `{"sys":null}`, CodeUnknownSys, "", false},
		{"sys true", `{"sys":true}`, CodeUnknownSys, "", false},
		{"server-only 7", `{"sys":7,"msg":1,"id":1}`, CodeUnknownSys, "", false},
		{"server-only 8", `{"sys":8,"topic":"t","msg":1,"channel":"c","uid":"a.1"}`, CodeUnknownSys, "", false},
		{"server-only 9", `{"sys":9,"reason":"x"}`, CodeUnknownSys, "", false},
		{"server-only 10", `{"sys":10}`, CodeUnknownSys, "", false},
		{"server-only 11", `{"sys":11,"topic":"t","msg":1}`, CodeUnknownSys, "", false},
		{"server-only 12", `{"sys":12,"channel":"c","uid":"a.1"}`, CodeUnknownSys, "", false},
		{"subscribe channel a number", `{"sys":1,"channel":5,"id":7}`, CodeBadRequest, "7", false},
		{"subscribe channel missing", `{"sys":1,"id":"q"}`, CodeBadRequest, `"q"`, false},
		{"subscribe channel null", `{"sys":1,"channel":null,"id":0}`, CodeBadRequest, "0", false},
		{"subscribe without id", `{"sys":1,"channel":"a"}`, CodeMissingID, "", false},
		{"subscribe id null", `{"sys":1,"channel":"a","id":null}`, CodeMissingID, "", false},
		{"subscribe id object", `{"sys":1,"channel":"a","id":{}}`, CodeBadRequest, "", false},
		{"subscribe id array", `{"sys":1,"channel":"a","id":[1]}`, CodeBadRequest, "", false},
		{"subscribe id true", `{"sys":1,"channel":"a","id":true}`, CodeBadRequest, "", false},
		{"subscribe no id and bad channel", `{"sys":1,"channel":5}`, CodeMissingID, "", false},
		{"ask topic missing", `{"sys":5,"msg":1,"id":3}`, CodeBadRequest, "3", false},
		{"ask topic a number", `{"sys":5,"topic":1,"id":"x"}`, CodeBadRequest, `"x"`, false},
		{"ask without id", `{"sys":5,"topic":"t"}`, CodeMissingID, "", false},
		{"ask id null", `{"sys":5,"topic":"t","id":null}`, CodeMissingID, "", false},
		{"tell topic missing", `{"sys":6,"msg":1}`, CodeBadRequest, "", false},
		{"tell topic object", `{"sys":6,"topic":{}}`, CodeBadRequest, "", false},
		{"unsubscribe channel a number", `{"sys":2,"channel":1}`, CodeBadRequest, "", false},
		{"unsubscribe channel missing", `{"sys":2}`, CodeBadRequest, "", false},
		{"sync subscriptions missing", `{"sys":4}`, CodeBadRequest, "", false},
		{"sync subscriptions null", `{"sys":4,"subscriptions":null}`, CodeBadRequest, "", false},
		{"sync subscriptions object", `{"sys":4,"subscriptions":{"a":"1"}}`, CodeBadRequest, "", false},
		{"sync entry not an object", `{"sys":4,"subscriptions":["a"]}`, CodeBadRequest, "", false},
		{"sync entry without channel", `{"sys":4,"subscriptions":[{"lastUid":"a.1"}]}`, CodeBadRequest, "", false},
		{"sync entry channel a number", `{"sys":4,"subscriptions":[{"channel":1}]}`, CodeBadRequest, "", false},
		{"sync lastUid a number", `{"sys":4,"subscriptions":[{"channel":"a","lastUid":2}]}`, CodeBadRequest, "", false},
		{"sync bad entry keeps id", `{"sys":4,"id":9,"subscriptions":[{"channel":1}]}`, CodeBadRequest, "9", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m, err := DecodeClient([]byte(tc.frame), DefaultLimits())
			if err == nil {
				t.Fatalf("decoded %+v, want error %s", m, tc.code)
			}
			var de *DecodeError
			if !errors.As(err, &de) {
				t.Fatalf("error %T %v is not a *DecodeError", err, err)
			}
			if de.Code != tc.code {
				t.Errorf("code %q, want %q (%v)", de.Code, tc.code, err)
			}
			checkRaw(t, "DecodeError.ID", de.ID, tc.id)
			if errors.Is(err, ErrFrameTooLarge) != tc.large {
				t.Errorf("errors.Is(ErrFrameTooLarge) = %v, want %v", !tc.large, tc.large)
			}
			if !strings.HasPrefix(err.Error(), "sss/protocol: "+tc.code) {
				t.Errorf("message %q", err.Error())
			}
			if o := de.Object(); o.Code != tc.code || o.Name == "" {
				t.Errorf("Object() = %+v", o)
			}
		})
	}
}

func TestDecodeClientIDs(t *testing.T) {
	// Ids are echoed byte for byte: numbers and strings as spelled.
	for _, id := range []string{`0`, `7`, `-1`, `1.50`, `1e3`, `12345678901234567890123`, `""`, `"a"`, `"<&>"`, `"\u00e9\"x"`} {
		t.Run(id, func(t *testing.T) {
			for _, frame := range []string{
				`{"sys":1,"channel":"c","id":` + id + `}`,
				`{"sys":5,"topic":"t","id":` + id + `}`,
				`{ "sys" : 5 , "topic" : "t" , "id" : ` + id + ` }`,
			} {
				m, err := DecodeClient([]byte(frame), Limits{})
				if err != nil {
					t.Fatalf("%s: %v", frame, err)
				}
				if string(m.ID) != id {
					t.Errorf("%s: id %q, want %q", frame, m.ID, id)
				}
				// The reply echoes the same bytes.
				if got, want := string(AppendResponse(nil, m.ID, nil)), `{"sys":7,"msg":null,"id":`+id+`}`; got != want {
					t.Errorf("reply %s, want %s", got, want)
				}
			}
		})
	}
}

func TestDecodeClientDetails(t *testing.T) {
	tests := []struct {
		name  string
		frame string
		check func(*Message) bool
	}{
		{"sync id echoed", `{"sys":4,"id":"s1","subscriptions":[]}`, func(m *Message) bool { return string(m.ID) == `"s1"` }},
		{"sync object id dropped", `{"sys":4,"id":{},"subscriptions":[]}`, func(m *Message) bool { return m.ID == nil }},
		{"sync entry missing lastUid", `{"sys":4,"subscriptions":[{"channel":"a"}]}`, func(m *Message) bool {
			return len(m.Subscriptions) == 1 && !m.Subscriptions[0].HasUID && m.Subscriptions[0].Query == nil
		}},
		{"sync entry empty lastUid is a string", `{"sys":4,"subscriptions":[{"channel":"a","lastUid":""}]}`, func(m *Message) bool {
			return m.Subscriptions[0].HasUID && m.Subscriptions[0].LastUID == ""
		}},
		{"duplicate key: last wins", `{"sys":6,"topic":"a","topic":"b"}`, func(m *Message) bool { return m.Topic == "b" }},
		{"keys are case-sensitive", `{"sys":6,"topic":"a","Topic":"b"}`, func(m *Message) bool { return m.Topic == "a" }},
		{"escaped key", `{"s\u0079s":6,"topic":"a"}`, func(m *Message) bool { return m.Sys == SysTell }},
		{"escaped string", `{"sys":2,"channel":"a\u0062\n"}`, func(m *Message) bool { return m.Channel == "ab\n" }},
		{"unknown keys ignored", `{"sys":3,"x":{"sys":5},"y":[1]}`, func(m *Message) bool { return m.Sys == SysBegin }},
		{"whitespace around", " \n{\"sys\":3}\t ", func(m *Message) bool { return m.Sys == SysBegin }},
		{"brackets in strings do not nest", `{"sys":6,"topic":"` + strings.Repeat("[{", 40) + `"}`, func(m *Message) bool { return len(m.Topic) == 80 }},
		{"escaped quote then brackets", `{"sys":6,"topic":"\"[[[[","msg":"\\"}`, func(m *Message) bool { return m.Topic == `"[[[[` && string(m.Msg) == `"\\"` }},
		{"depth 32 allowed", `{"sys":6,"topic":"t","msg":` + strings.Repeat("[", 31) + strings.Repeat("]", 31) + `}`, func(m *Message) bool { return len(m.Msg) == 62 }},
		{"long channel decodes", `{"sys":1,"channel":"` + strings.Repeat("a", 300) + `","id":1}`, func(m *Message) bool { return len(m.Channel) == 300 }},
		{"msg number kept raw", `{"sys":6,"topic":"t","msg":1.50}`, func(m *Message) bool { return string(m.Msg) == "1.50" }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m, err := DecodeClient([]byte(tc.frame), DefaultLimits())
			if err != nil {
				t.Fatal(err)
			}
			if !tc.check(m) {
				t.Errorf("unexpected %+v", m)
			}
		})
	}
}

func TestDecodeLimits(t *testing.T) {
	frame := []byte(`{"sys":6,"topic":"t","msg":[[[]]]}`) // depth 4
	tests := []struct {
		name string
		lim  Limits
		ok   bool
	}{
		{"defaults", Limits{}, true},
		{"depth 4", Limits{MaxDepth: 4}, true},
		{"depth 3", Limits{MaxDepth: 3}, false},
		{"depth unlimited", Limits{MaxDepth: -1}, true},
		{"size exact", Limits{MaxFrameBytes: len(frame)}, true},
		{"size one less", Limits{MaxFrameBytes: len(frame) - 1}, false},
		{"size unlimited", Limits{MaxFrameBytes: -1}, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := DecodeClient(frame, tc.lim)
			if (err == nil) != tc.ok {
				t.Fatalf("err = %v, want ok %v", err, tc.ok)
			}
			if err != nil {
				var de *DecodeError
				if !errors.As(err, &de) || de.Code != CodeBadFrame {
					t.Fatalf("err = %v, want bad_frame", err)
				}
			}
		})
	}
}

func TestDecodeDoesNotModifyInput(t *testing.T) {
	frame := `{"sys":4,"id":1,"result":{"a\u0062":true},"errors":{"x":{"name":"N","message":"m","code":"c"}},"records":[]}`
	buf := []byte(frame)
	if _, err := DecodeServer(buf, Limits{}); err != nil {
		t.Fatal(err)
	}
	if string(buf) != frame {
		t.Fatalf("input changed to %s", buf)
	}
}

func TestDecodeServerBadInput(t *testing.T) {
	tests := []struct {
		name, frame, code string
	}{
		{"client-only 2", `{"sys":2,"channel":"a"}`, CodeUnknownSys},
		{"client-only 5", `{"sys":5,"topic":"a","id":1}`, CodeUnknownSys},
		{"reserved 10", `{"sys":10}`, CodeUnknownSys},
		{"no sys no err", `{"x":1}`, CodeUnknownSys},
		{"err not object", `{"err":"x"}`, CodeBadRequest},
		{"sync result null", `{"sys":4,"result":null,"records":[]}`, CodeBadRequest},
		{"sync records null", `{"sys":4,"result":{},"records":null}`, CodeBadRequest},
		{"sync record not feed", `{"sys":4,"result":{},"records":[{"sys":11,"topic":"t","msg":1}]}`, CodeBadRequest},
		{"begin prot null", `{"sys":3,"prot":null}`, CodeBadRequest},
		{"begin prot missing", `{"sys":3}`, CodeBadRequest},
		{"feed without uid", `{"sys":8,"topic":"t","msg":1,"channel":"c"}`, CodeBadRequest},
		{"subscribe reply result string", `{"sys":1,"result":"true","channel":"c","id":1}`, CodeBadRequest},
		{"response without id", `{"sys":7,"msg":1}`, CodeMissingID},
		{"not JSON", `{`, CodeBadFrame},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := DecodeServer([]byte(tc.frame), Limits{})
			var de *DecodeError
			if !errors.As(err, &de) || de.Code != tc.code {
				t.Fatalf("err = %v, want %s", err, tc.code)
			}
		})
	}
}
