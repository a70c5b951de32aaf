package main

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sss-go/sss/internal/testutil"
	"github.com/sss-go/sss/protocol"
	"github.com/sss-go/sss/server"
)

const timeout = 20 * time.Second

func startChat(t *testing.T) (*app, string) {
	t.Helper()
	a, err := newApp(nil, config{spread: -1, log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(a.mux)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		if err := a.srv.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		hs.Close()
	})
	return a, hs.URL
}

// conn is a raw client of the chat: testutil.WireConn with the chat's
// requests.
type conn struct {
	*testutil.WireConn
	t  *testing.T
	id int
}

// dial connects to /ws with an optional user query and cookie, and sends
// BEGIN, returning the BEGIN reply.
func dial(t *testing.T, base, query, cookie string) (*conn, *protocol.Message) {
	t.Helper()
	u := "ws" + strings.TrimPrefix(base, "http") + "/ws"
	if query != "" {
		u += "?" + query
	}
	h := http.Header{}
	if cookie != "" {
		h.Set("Cookie", "sss_user="+cookie)
	}
	wc, _, err := testutil.DialWire(t, u, testutil.WireOptions{Header: h, Timeout: timeout})
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	c := &conn{WireConn: wc, t: t}
	c.Send(`{"sys":3}`)
	m := c.next()
	if m.Sys != protocol.SysBegin {
		t.Fatalf("BEGIN reply %+v", m)
	}
	return c, m
}

// decode decodes one frame from the server.
func (c *conn) decode(data string) *protocol.Message {
	c.t.Helper()
	m, err := protocol.DecodeServer([]byte(data), protocol.Limits{})
	if err != nil {
		c.t.Fatalf("decode %s: %v", data, err)
	}
	return m
}

// next returns the next frame other than presence tells.
func (c *conn) next() *protocol.Message {
	c.t.Helper()
	for {
		m := c.decode(c.Next())
		if m.Sys == protocol.SysTell && m.Topic == protocol.PresenceTopic {
			continue
		}
		return m
	}
}

// nextPresence returns the next presence tell, skipping other frames.
func (c *conn) nextPresence() map[string]any {
	c.t.Helper()
	for {
		m := c.decode(c.Next())
		if m.Sys == protocol.SysTell && m.Topic == protocol.PresenceTopic {
			var v map[string]any
			_ = json.Unmarshal(m.Msg, &v)
			return v
		}
	}
}

func (c *conn) ask(topic, msg string) *protocol.Message {
	c.t.Helper()
	c.id++
	c.Send(`{"sys":5,"topic":"` + topic + `","msg":` + msg + `,"id":` + strconv.Itoa(c.id) + `}`)
	m := c.next()
	if m.Sys != protocol.SysResponse || string(m.ID) != strconv.Itoa(c.id) {
		c.t.Fatalf("ask %s: got %+v", topic, m)
	}
	return m
}

func (c *conn) subscribe(room string) *protocol.Message {
	c.t.Helper()
	c.id++
	c.Send(`{"sys":1,"channel":"` + room + `","query":null,"id":` + strconv.Itoa(c.id) + `}`)
	m := c.next()
	if m.Sys != protocol.SysSubscribe || m.Channel != room {
		c.t.Fatalf("subscribe %s: got %+v", room, m)
	}
	return m
}

func TestPage(t *testing.T) {
	_, base := startChat(t)
	res, err := http.Get(base + "/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != 200 || !strings.Contains(string(body), `from "/sss.js"`) || !strings.HasPrefix(res.Header.Get("Content-Type"), "text/html") {
		t.Fatalf("GET / = %d %q", res.StatusCode, res.Header.Get("Content-Type"))
	}
}

func TestSessionUser(t *testing.T) {
	_, base := startChat(t)
	tests := []struct {
		name, query, cookie, want string
	}{
		{"query", "user=alice", "", `"alice"`},
		{"cookie", "", "carol", `"carol"`},
		{"query wins over cookie", "user=dave", "erin", `"dave"`},
		{"none", "", "", "null"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, begin := dial(t, base, tt.query, tt.cookie)
			if got := string(c.ask("whoami", "null").Msg); got != tt.want {
				t.Fatalf("whoami = %s, want %s", got, tt.want)
			}
			if tt.want == "null" {
				if begin.Channel != "" {
					t.Fatalf("BEGIN without user carries channel %q", begin.Channel)
				}
			} else if begin.Channel != "_user."+strings.Trim(tt.want, `"`) || begin.LastUID == "" {
				t.Fatalf("BEGIN channel %q lastUid %q", begin.Channel, begin.LastUID)
			}
		})
	}
}

func TestAsks(t *testing.T) {
	_, base := startChat(t)
	a, _ := dial(t, base, "user=alice", "")
	b, _ := dial(t, base, "user=bob", "")
	if got := string(a.ask("rooms", "null").Msg); got != `[]` {
		t.Fatalf("rooms before any subscription = %s", got)
	}
	a.subscribe("zeta")
	a.subscribe("alpha")
	b.subscribe("alpha")
	tests := []struct {
		name, topic, msg, want string
	}{
		{"rooms sorted, no user channels", "rooms", "null", `["alpha","zeta"]`},
		{"echo object", "echo", `{"a":[1,"<x>"]}`, `{"a":[1,"<x>"]}`},
		{"echo number", "echo", `3.5`, `3.5`},
		{"whoami", "whoami", `null`, `"alice"`},
		{"members two", "members", `{"room":"alpha"}`, `2`},
		{"members one", "members", `{"room":"zeta"}`, `1`},
		{"members none", "members", `{"room":"empty"}`, `0`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a.t = t
			var got string
			deadline := time.Now().Add(timeout)
			for {
				got = string(a.ask(tt.topic, tt.msg).Msg)
				// members is eventually consistent with the subscribe replies.
				if got == tt.want || tt.topic != "members" || time.Now().After(deadline) {
					break
				}
				time.Sleep(10 * time.Millisecond)
			}
			if got != tt.want {
				t.Fatalf("%s = %s, want %s", tt.topic, got, tt.want)
			}
		})
	}
	a.t = t
	if m := a.ask("nosuch", "1"); m.Err == nil || m.Err.Code != protocol.CodeUnknownTopic {
		t.Fatalf("unknown ask: %+v", m)
	}
}

func TestForbiddenRoom(t *testing.T) {
	_, base := startChat(t)
	c, _ := dial(t, base, "", "")
	m := c.subscribe("forbidden")
	if m.Result || m.Err == nil || m.Err.Code != "forbidden" || m.Err.Name != "Forbidden" || m.Err.Message == "" {
		t.Fatalf("forbidden room: %+v (err %+v)", m, m.Err)
	}
	if m := c.subscribe("allowed"); !m.Result {
		t.Fatalf("allowed room refused: %+v", m.Err)
	}
}

func TestPostAndPresence(t *testing.T) {
	_, base := startChat(t)
	a, _ := dial(t, base, "user=alice", "")
	b, _ := dial(t, base, "", "")
	a.subscribe("room")
	b.subscribe("room")
	if p := a.nextPresence(); p["event"] != "join" || p["channel"] != "room" {
		t.Fatalf("alice got presence %v, want the join of the anonymous socket", p)
	}

	a.Send(`{"sys":6,"topic":"post","msg":{"room":"room","text":"hi"}}`)
	fa, fb := a.next(), b.next()
	for _, f := range []*protocol.Message{fa, fb} {
		if f.Sys != protocol.SysFeed || f.Channel != "room" || f.Topic != "message" || string(f.Msg) != `{"text":"hi","user":"alice"}` {
			t.Fatalf("post feed %+v msg %s", f, f.Msg)
		}
	}
	b.Send(`{"sys":6,"topic":"post","msg":{"room":"room","text":"yo","echo":false}}`)
	fa, fb = a.next(), b.next()
	if fa.Sys != protocol.SysFeed || string(fa.Msg) != `{"text":"yo","user":null}` {
		t.Fatalf("alice got %+v", fa)
	}
	if fb.Sys != protocol.SysUpdateSub || fb.Channel != "room" || fb.UID != fa.UID {
		t.Fatalf("sender with echo false got %+v, want UPDATESUB %s", fb, fa.UID)
	}
	for _, bad := range []string{`{"text":"no room"}`, `{"room":"_x","text":"t"}`, `{"room":"bad room","text":"t"}`} {
		a.Send(`{"sys":6,"topic":"post","msg":` + bad + `}`)
		m := a.next()
		if m.Sys != protocol.SysTell || m.Topic != "error" || !strings.Contains(string(m.Msg), `"code":"bad_request"`) {
			t.Fatalf("bad post %s answered %+v", bad, m)
		}
	}
	b.Drop()
	if p := a.nextPresence(); p["event"] != "leave" {
		t.Fatalf("alice got presence %v, want a leave", p)
	}
}

func TestDM(t *testing.T) {
	_, base := startChat(t)
	a, _ := dial(t, base, "user=alice", "")
	b, beginB := dial(t, base, "user=bob", "")
	a.Send(`{"sys":6,"topic":"dm","msg":{"to":"bob","text":"psst"}}`)
	m := b.next()
	if m.Sys != protocol.SysFeed || m.Channel != beginB.Channel || m.Topic != "dm" || string(m.Msg) != `{"text":"psst","from":"alice"}` {
		t.Fatalf("dm %+v msg %s", m, m.Msg)
	}
	a.Send(`{"sys":6,"topic":"dm","msg":{"text":"nobody"}}`)
	if m := a.next(); m.Sys != protocol.SysTell || m.Topic != "error" {
		t.Fatalf("bad dm answered %+v", m)
	}
}

func TestAdmin(t *testing.T) {
	_, base := startChat(t)
	admin, _ := dial(t, base, "user=admin", "")
	eve, _ := dial(t, base, "user=eve", "")
	anon, _ := dial(t, base, "", "")

	for _, c := range []*conn{eve, anon} {
		if m := c.ask("announce", `{"text":"x"}`); m.Err == nil || m.Err.Code != "forbidden" {
			t.Fatalf("non-admin announce: %+v", m)
		}
		if m := c.ask("kick", `{"user":"eve","reason":"x"}`); m.Err == nil || m.Err.Code != "forbidden" {
			t.Fatalf("non-admin kick: %+v", m)
		}
	}

	admin.id++
	admin.Send(`{"sys":5,"topic":"announce","msg":{"text":"maintenance"},"id":` + strconv.Itoa(admin.id) + `}`)
	gotResp, gotBC := false, false
	for !gotResp || !gotBC {
		m := admin.next()
		switch {
		case m.Sys == protocol.SysResponse && string(m.Msg) == "true":
			gotResp = true
		case m.Sys == protocol.SysBroadcast:
			gotBC = true
		default:
			t.Fatalf("admin got %+v", m)
		}
	}
	for _, c := range []*conn{eve, anon} {
		m := c.next()
		if m.Sys != protocol.SysBroadcast || m.Topic != "announcement" || string(m.Msg) != `{"text":"maintenance"}` {
			t.Fatalf("broadcast %+v", m)
		}
	}

	if m := admin.ask("kick", `{"user":"eve","reason":"be nice"}`); string(m.Msg) != "true" {
		t.Fatalf("kick answered %+v", m)
	}
	if m := eve.next(); m.Sys != protocol.SysBoot || m.Reason != "be nice" {
		t.Fatalf("eve got %+v, want BOOT", m)
	}
	// The client does not close: the server closes with 4001 after the grace.
	if code, reason := eve.WaitClosed(); code != protocol.CloseBooted || reason != "be nice" {
		t.Fatalf("eve closed with %d %q", code, reason)
	}
	anon.ask("echo", "1") // still connected
}

func TestHistory(t *testing.T) {
	a, base := startChat(t)
	c, _ := dial(t, base, "user=alice", "")
	if got := string(c.ask("history", `{"room":"empty","limit":5}`).Msg); got != "[]" {
		t.Fatalf("history of an empty room = %s, want []", got)
	}
	c.subscribe("hist")
	var uids []string
	for i := 1; i <= 3; i++ {
		c.Send(`{"sys":6,"topic":"post","msg":{"room":"hist","text":"m` + strconv.Itoa(i) + `"}}`)
		f := c.next()
		if f.Sys != protocol.SysFeed {
			t.Fatalf("post %d: got %+v", i, f)
		}
		uids = append(uids, f.UID)
	}
	type item struct {
		UID   string          `json:"uid"`
		Topic string          `json:"topic"`
		Msg   json.RawMessage `json:"msg"`
		Time  time.Time       `json:"time"`
	}
	decode := func(m *protocol.Message) []item {
		t.Helper()
		if m.Err != nil {
			t.Fatalf("history: %+v", m.Err)
		}
		var items []item
		if err := json.Unmarshal(m.Msg, &items); err != nil {
			t.Fatalf("history answered %s: %v", m.Msg, err)
		}
		return items
	}
	items := decode(c.ask("history", `{"room":"hist","limit":2}`))
	if len(items) != 2 || items[0].UID != uids[1] || items[1].UID != uids[2] {
		t.Fatalf("history limit 2 = %+v, want the uids %v", items, uids[1:])
	}
	if items[1].Topic != "message" || string(items[1].Msg) != `{"text":"m3","user":"alice"}` || items[1].Time.IsZero() {
		t.Fatalf("history item %+v (msg %s)", items[1], items[1].Msg)
	}
	if items := decode(c.ask("history", `{"room":"hist"}`)); len(items) != 3 || items[0].UID != uids[0] {
		t.Fatalf("history without limit = %+v, want all 3", items)
	}

	// At most 100, the newest, oldest first.
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var last protocol.UID
	for i := range 120 {
		uid, err := a.srv.Publish(ctx, "big", "message", map[string]any{"text": strconv.Itoa(i + 1), "user": nil}, server.PublishOptions{})
		if err != nil {
			t.Fatal(err)
		}
		last = uid
	}
	big := decode(c.ask("history", `{"room":"big","limit":1000}`))
	if len(big) != 100 || big[99].UID != last.String() || string(big[0].Msg) != `{"text":"21","user":null}` {
		t.Fatalf("history limit 1000: %d items, first %s, last %s (want 100, text 21 first, %s last)", len(big), big[0].Msg, big[len(big)-1].UID, last)
	}
	for _, bad := range []string{`{"limit":5}`, `{"room":"_x"}`, `{"room":"a b"}`, `{"room":"big","limit":-1}`, `"big"`} {
		if m := c.ask("history", bad); m.Err == nil || m.Err.Code != protocol.CodeBadRequest {
			t.Fatalf("history %s answered %+v", bad, m)
		}
	}
}

func TestWho(t *testing.T) {
	_, base := startChat(t)
	a, _ := dial(t, base, "user=alice", "")
	a2, _ := dial(t, base, "user=alice", "")
	b, _ := dial(t, base, "user=bob", "")
	anon, _ := dial(t, base, "", "")
	for _, c := range []*conn{a, a2, b, anon} {
		c.subscribe("room")
	}
	want := `[{"user":"alice","sockets":2},{"user":"bob","sockets":1},{"user":null,"sockets":1}]`
	var got string
	testutil.WaitFor(t, timeout, func() bool { // presence follows the subscribe replies
		got = string(a.ask("who", `{"room":"room"}`).Msg)
		return got == want
	}, "who to list every member")
	if got := string(a.ask("who", `{"room":"nobody"}`).Msg); got != "[]" {
		t.Fatalf("who of an empty room = %s", got)
	}
	if m := a.ask("who", `{}`); m.Err == nil || m.Err.Code != protocol.CodeBadRequest {
		t.Fatalf("who without room answered %+v", m)
	}
}

func TestClientScript(t *testing.T) {
	_, base := startChat(t)
	for _, tt := range []struct{ path, typ, body string }{
		{"/sss.js", "text/javascript; charset=utf-8", "export function connect("},
		{"/sss.d.ts", "application/typescript; charset=utf-8", "export declare function connect("},
	} {
		res, err := http.Get(base + tt.path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		etag := res.Header.Get("ETag")
		if res.StatusCode != 200 || res.Header.Get("Content-Type") != tt.typ || etag == "" || !strings.Contains(string(body), tt.body) {
			t.Fatalf("GET %s = %d %q etag %q", tt.path, res.StatusCode, res.Header.Get("Content-Type"), etag)
		}
		req, _ := http.NewRequest(http.MethodGet, base+tt.path, nil)
		req.Header.Set("If-None-Match", etag)
		res, err = http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != http.StatusNotModified {
			t.Fatalf("GET %s with If-None-Match %s = %d, want 304", tt.path, etag, res.StatusCode)
		}
	}
}

func TestSpreadOption(t *testing.T) {
	for in, want := range map[time.Duration]time.Duration{0: -1, -time.Second: -1, time.Second: time.Second} {
		if got := spreadOption(in); got != want {
			t.Fatalf("spreadOption(%v) = %v, want %v", in, got, want)
		}
	}
}
