package server_test

// Every code of PROTOCOL.md over a real WebSocket: BEGIN, SUBSCRIBE,
// UNSUBSCRIBE, ASK, TELL, FEED, UPDATESUB, BROADCAST, BOOT, presence, and the
// close echo.

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/gorilla/websocket"
	"github.com/sss-go/sss/internal/testutil"
	"github.com/sss-go/sss/protocol"
	"github.com/sss-go/sss/server"
)

func TestE2EBegin(t *testing.T) {
	t.Run("no user, heartbeat off", func(t *testing.T) {
		a := startE2E(t, nil, e2eOptions())
		c := a.dial(t, "")
		c.Send(`{"sys":3}`)
		c.expectExact(`{"sys":3,"prot":{"v":1}}`)
	})
	t.Run("no user, heartbeat default", func(t *testing.T) {
		o := e2eOptions()
		o.HeartbeatInterval = 0 // default 30 s
		a := startE2E(t, nil, o)
		c := a.dial(t, "")
		c.Send(`{"sys":3}`)
		c.expectExact(`{"sys":3,"prot":{"v":1,"hb":true,"hbInterval":30000,"hbThreshold":2500}}`)
	})
	t.Run("heartbeat custom", func(t *testing.T) {
		o := e2eOptions()
		o.HeartbeatInterval = 1500 * time.Millisecond
		o.HeartbeatThreshold = 700 * time.Millisecond
		a := startE2E(t, nil, o)
		c := a.dial(t, "")
		c.Send(`{"sys":3}`)
		c.expectExact(`{"sys":3,"prot":{"v":1,"hb":true,"hbInterval":1500,"hbThreshold":700}}`)
	})
	t.Run("with user", func(t *testing.T) {
		a := startE2E(t, nil, e2eOptions())
		c := a.dial(t, "user=alice")
		m := c.begin()
		pos := a.position("_user.alice")
		want := `{"sys":3,"prot":{"v":1},"channel":"_user.alice","lastUid":"` + pos.String() + `"}`
		if !e2eJSONEqual(m.raw, want) {
			t.Fatalf("BEGIN reply %s, want %s", m.raw, want)
		}
		if string(m.fields["prot"]) != `{"v":1}` {
			t.Errorf("prot = %s, want exactly {\"v\":1}", m.fields["prot"])
		}
		if ch := server.UserChannel("alice"); ch != "_user.alice" {
			t.Errorf("UserChannel(alice) = %q", ch)
		}
		// A second BEGIN gets the same reply again.
		c.Send(`{"sys":3}`)
		c.expectExact(m.raw)
	})
	t.Run("with user and publications", func(t *testing.T) {
		a := startE2E(t, nil, e2eOptions())
		var last protocol.UID
		for i := 0; i < 3; i++ {
			last = a.publish("_user.bob", "dm", strconv.Itoa(i))
		}
		c := a.dial(t, "user=bob")
		m := c.begin()
		if m.str("channel") != "_user.bob" || m.str("lastUid") != last.String() {
			t.Fatalf("BEGIN reply %s, want channel _user.bob lastUid %s", m.raw, last)
		}
		uid := a.publish("_user.bob", "dm", `"next"`)
		c.expectFeed("_user.bob", "dm", `"next"`, uid)
	})
	t.Run("no user has no channel", func(t *testing.T) {
		a := startE2E(t, nil, e2eOptions())
		c := a.dial(t, "")
		m := c.begin()
		if m.has("channel") || m.has("lastUid") {
			t.Fatalf("BEGIN reply without user carries a channel: %s", m.raw)
		}
	})
}

func TestE2ESubscribe(t *testing.T) {
	a := startE2E(t, nil, e2eOptions())
	t.Run("ok", func(t *testing.T) {
		c := a.dial(t, "")
		c.Send(`{"sys":1,"channel":"room","query":{"a":1},"id":7}`)
		pos := a.position("room")
		c.expectExact(`{"sys":1,"result":true,"channel":"room","id":7,"lastUid":"` + pos.String() + `"}`)
		if q := a.queriesOf("room"); len(q) != 1 || q[0] != `{"a":1}` {
			t.Errorf("subscription parser saw queries %q, want [{\"a\":1}]", q)
		}
		uid := a.publish("room", "t", `{"n":1}`)
		if uid.Epoch != pos.Epoch || uid.Seq != pos.Seq+1 {
			t.Fatalf("published uid %s after position %s", uid, pos)
		}
		c.expectFeed("room", "t", `{"n":1}`, uid)
	})
	t.Run("ids echoed byte for byte", func(t *testing.T) {
		c := a.dial(t, "")
		for _, id := range []string{`0`, `"abc"`, `"q 1"`, `1.50`, `-3`, `1e3`, `"<&>"`, `"\u00e9"`, `123456789012345678901234567890`} {
			c.Send(`{"sys":1,"channel":"ids","id":` + id + `}`)
			m := c.nextMsg()
			if m.sys() != 1 || string(m.fields["id"]) != id || string(m.fields["result"]) != "true" {
				t.Errorf("SUBSCRIBE id %s: reply %s, want result true and the id byte for byte", id, m.raw)
			}
			c.Send(`{"sys":5,"topic":"echo","msg":1,"id":` + id + `}`)
			m = c.nextMsg()
			if m.sys() != 7 || string(m.fields["id"]) != id {
				t.Errorf("ASK id %s: reply %s, want the id byte for byte", id, m.raw)
			}
		}
	})
	t.Run("refused", func(t *testing.T) {
		c := a.dial(t, "")
		for _, tc := range []struct{ channel, code, name, message string }{
			{"forbidden", protocol.CodeRefused, "Forbidden", "not for you"},
			{"coded-refuse", "custom_code", "Custom", "custom refusal"},
			{"broken-parser", protocol.CodeInternal, "", ""},
		} {
			m := c.subscribeRaw(tc.channel, "null")
			if string(m.fields["result"]) != "false" || m.str("channel") != tc.channel || m.has("lastUid") {
				t.Errorf("%s: reply %s, want result false with the channel and no lastUid", tc.channel, m.raw)
			}
			if m.errCode() != tc.code {
				t.Errorf("%s: err code %q, want %q (%s)", tc.channel, m.errCode(), tc.code, m.raw)
			}
			if tc.name != "" && (m.errField("name") != tc.name || m.errField("message") != tc.message) {
				t.Errorf("%s: err %s, want the parser's name and message", tc.channel, m.fields["err"])
			}
			if strings.Contains(m.raw, "secret") {
				t.Errorf("%s: reply leaks the parser's error detail: %s", tc.channel, m.raw)
			}
		}
		var w struct{ Subs []string }
		_ = json.Unmarshal([]byte(c.ask("whoami", "")), &w)
		if len(w.Subs) != 0 {
			t.Errorf("refused channels are subscribed: %q", w.Subs)
		}
		// Nothing of a refused channel reaches the socket.
		wit := a.dial(t, "")
		wit.subscribe("other")
		a.publish("forbidden", "t", "1")
		u := a.publish("other", "t", "2")
		wit.expectFeed("other", "t", "2", u)
		c.expectOpen()
	})
	t.Run("duplicate", func(t *testing.T) {
		c := a.dial(t, "")
		first := c.subscribe("dup")
		second := c.subscribe("dup")
		if second.Epoch != first.Epoch || second.Seq != first.Seq {
			t.Errorf("second SUBSCRIBE lastUid %s, first %s (no publication in between)", second, first)
		}
		uid := a.publish("dup", "t", `"once"`)
		c.expectFeed("dup", "t", `"once"`, uid)
		c.expectOpen() // no second FEED
		var w struct{ Subs []string }
		_ = json.Unmarshal([]byte(c.ask("whoami", "")), &w)
		if n := strings.Count(strings.Join(w.Subs, ","), "dup"); n != 1 {
			t.Errorf("Subscriptions() = %q, want dup once", w.Subs)
		}
		third := c.subscribe("dup")
		if third.Epoch != uid.Epoch || third.Seq < first.Seq || third.Seq > uid.Seq {
			t.Errorf("third SUBSCRIBE lastUid %s, want within [%s, %s]", third, first, uid)
		}
		// One UNSUBSCRIBE ends it: subscriptions are not counted.
		c.Send(`{"sys":2,"channel":"dup"}`)
		c.expectOpen()
		wit := a.dial(t, "")
		wit.subscribe("dup")
		u2 := a.publish("dup", "t", `"after"`)
		wit.expectFeed("dup", "t", `"after"`, u2)
		c.expectOpen()
	})
	t.Run("while publishing", func(t *testing.T) {
		const n = 300
		done := make(chan protocol.UID, 1)
		ctx := e2eCtx(t)
		go func() {
			var last protocol.UID
			for i := 0; i < n; i++ {
				u, err := a.srv.Publish(ctx, "busy", "t", json.RawMessage(strconv.Itoa(i)), server.PublishOptions{})
				if err != nil {
					close(done)
					return
				}
				last = u
			}
			done <- last
		}()
		// Three sockets join during the publications: the first takes the
		// scaler's position, the others the hub's. Each must get its reply
		// before any FEED (subscribeRaw fails otherwise), then exactly the
		// publications after lastUid.
		var conns []*e2eConn
		var starts []protocol.UID
		for i := 0; i < 3; i++ {
			c := a.dial(t, "")
			starts = append(starts, c.subscribe("busy"))
			conns = append(conns, c)
		}
		last, ok := <-done
		if !ok {
			t.Fatal("a publication failed")
		}
		for i, c := range conns {
			for seq := starts[i].Seq + 1; seq <= last.Seq; seq++ {
				m := c.nextMsg()
				if m.sys() != 8 || m.str("uid") != (protocol.UID{Epoch: last.Epoch, Seq: seq}).String() {
					t.Fatalf("socket %d (lastUid %s): got %s, want the FEED of seq %d", i, starts[i], m.raw, seq)
				}
				if string(m.fields["msg"]) != strconv.FormatUint(seq-1, 10) {
					t.Fatalf("socket %d: FEED %s carries the wrong msg", i, m.raw)
				}
			}
			c.expectOpen()
		}
	})
}

func TestE2EUnsubscribe(t *testing.T) {
	a := startE2E(t, nil, e2eOptions())
	c := a.dial(t, "")
	c.subscribe("u1")
	c.subscribe("u2")
	c.Send(`{"sys":2,"channel":"u1"}`)
	c.expectOpen() // no reply to UNSUBSCRIBE
	c.Send(`{"sys":2,"channel":"never-held"}`)
	c.expectOpen()
	wit := a.dial(t, "")
	wit.subscribe("u1")
	u := a.publish("u1", "t", `"gone"`)
	wit.expectFeed("u1", "t", `"gone"`, u)
	u2 := a.publish("u2", "t", `"kept"`)
	c.expectFeed("u2", "t", `"kept"`, u2)
	c.expectOpen()
}

func TestE2EAsk(t *testing.T) {
	a := startE2E(t, nil, e2eOptions())
	c := a.dial(t, "")
	t.Run("ok", func(t *testing.T) {
		for _, msg := range []string{`{"a":1,"b":[true,null,"x"],"c":{"d":2.5}}`, `"hello"`, `null`, `0`, `[]`} {
			id := c.id()
			c.Send(`{"sys":5,"topic":"echo","msg":` + msg + `,"id":` + id + `}`)
			c.expectExact(`{"sys":7,"msg":` + msg + `,"id":` + id + `}`)
		}
		id := c.id()
		c.Send(`{"sys":5,"topic":"echo","id":` + id + `}`) // no msg key: null
		c.expectExact(`{"sys":7,"msg":null,"id":` + id + `}`)
		// A result the server marshals is not HTML-escaped.
		id = c.id()
		c.Send(`{"sys":5,"topic":"html","id":` + id + `}`)
		c.expectExact(`{"sys":7,"msg":{"a":"<b>&"},"id":` + id + `}`)
	})
	errCases := []struct {
		name, topic, code, errName, message string
	}{
		{"unknown topic", "no-such-topic", protocol.CodeUnknownTopic, "", ""},
		{"handler error", "fail", protocol.CodeInternal, "", ""},
		{"handler panic", "panic", protocol.CodeInternal, "", ""},
		{"protocol.Error without code", "apperr", protocol.CodeAppError, "Nope", "nope says the app"},
		{"protocol.Error with code", "coded", "teapot", "Teapot", "short and stout"},
	}
	for _, tc := range errCases {
		t.Run(tc.name, func(t *testing.T) {
			m := c.askRaw(tc.topic, `{"x":1}`)
			if m.errCode() != tc.code {
				t.Fatalf("ask %q: %s, want err code %q", tc.topic, m.raw, tc.code)
			}
			if len(m.keys) != 3 || m.keys[1] != "err" || m.keys[2] != "id" {
				t.Errorf("error RESPONSE keys %q, want sys, err, id", m.keys)
			}
			if tc.errName != "" && (m.errField("name") != tc.errName || m.errField("message") != tc.message) {
				t.Errorf("ask %q: err %s, want name %q message %q", tc.topic, m.fields["err"], tc.errName, tc.message)
			}
			if strings.Contains(m.raw, "secret") {
				t.Errorf("RESPONSE leaks handler details: %s", m.raw)
			}
			c.expectOpen()
		})
	}
	t.Run("pipelined asks answered exactly once", func(t *testing.T) {
		const n = 50
		for i := 0; i < n; i++ {
			c.Send(fmt.Sprintf(`{"sys":5,"topic":"echo","msg":%d,"id":"p%d"}`, i, i))
		}
		seen := map[string]bool{}
		for i := 0; i < n; i++ {
			m := c.nextMsg()
			var id string
			_ = json.Unmarshal(m.fields["id"], &id)
			if m.sys() != 7 || seen[id] || "p"+string(m.fields["msg"]) != id {
				t.Fatalf("response %d: %s (duplicate or wrong)", i, m.raw)
			}
			seen[id] = true
		}
		c.expectOpen()
	})
}

func TestE2ETell(t *testing.T) {
	a := startE2E(t, nil, e2eOptions())
	c := a.dial(t, "user=alice")
	c.begin()
	id := c.whoami()
	t.Run("client to server", func(t *testing.T) {
		c.Send(`{"sys":6,"topic":"post","msg":{"room":"room1","text":"hi"}}`)
		tl := a.waitTell()
		if tl.Topic != "post" || tl.Msg != `{"room":"room1","text":"hi"}` || tl.Socket != id || tl.User != "alice" {
			t.Fatalf("tell handler got %+v", tl)
		}
		c.expectOpen() // no reply
		c.Send(`{"sys":6,"topic":"nothing"}`)
		tl = a.waitTell()
		if tl.Topic != "nothing" || (tl.Msg != "" && tl.Msg != "null") {
			t.Fatalf("tell without msg: handler got %+v, want a nil or null msg", tl)
		}
	})
	t.Run("server to client from a handler", func(t *testing.T) {
		c.Send(`{"sys":5,"topic":"tellme","msg":{"x":[1,"y"]},"id":"t1"}`)
		got := []string{c.Next(), c.Next()}
		want := []string{`{"sys":6,"topic":"told","msg":{"x":[1,"y"]}}`, `{"sys":7,"msg":"ok","id":"t1"}`}
		if !(got[0] == want[0] && got[1] == want[1]) && !(got[0] == want[1] && got[1] == want[0]) {
			t.Fatalf("got %q, want %q (any order)", got, want)
		}
	})
	t.Run("TellSocket", func(t *testing.T) {
		if err := a.srv.TellSocket(e2eCtx(t), id, "direct", json.RawMessage(`{"k":"v"}`)); err != nil {
			t.Fatal(err)
		}
		c.expectExact(`{"sys":6,"topic":"direct","msg":{"k":"v"}}`)
	})
	t.Run("TellSession", func(t *testing.T) {
		s1 := a.dial(t, "session=sess-1")
		s2 := a.dial(t, "session=sess-1")
		other := a.dial(t, "session=sess-2")
		for _, s := range []*e2eConn{s1, s2, other} {
			s.begin()
		}
		if err := a.srv.TellSession(e2eCtx(t), "sess-1", "sess", json.RawMessage(`1`)); err != nil {
			t.Fatal(err)
		}
		s1.expectExact(`{"sys":6,"topic":"sess","msg":1}`)
		s2.expectExact(`{"sys":6,"topic":"sess","msg":1}`)
		// The session channel never reaches a client as a FEED.
		s1.expectOpen()
		other.expectOpen()
	})
}

func TestE2EFeedShape(t *testing.T) {
	a := startE2E(t, nil, e2eOptions())
	c := a.dial(t, "")
	pos := c.subscribe("sport")
	msgs := []string{`{"title":"goal","n":[1,2.5,null,true]}`, `"héllo"`, `null`, `42`, `[]`, `{}`}
	for i, msg := range msgs {
		uid := a.publish("sport", "article", msg)
		if uid.Epoch != pos.Epoch || uid.Seq != pos.Seq+uint64(i)+1 {
			t.Fatalf("publication %d: uid %s after position %s", i, uid, pos)
		}
		c.expectFeed("sport", "article", msg, uid)
	}
	// Topics are any string, escaped as JSON without HTML escaping.
	topic := "t\"<&>é\n\\"
	uid := a.publish("sport", topic, `"<&>"`)
	c.expectExact(`{"sys":8,"topic":"t\"<&>é\n\\","msg":"<&>","channel":"sport","uid":"` + uid.String() + `"}`)
	// Values the server marshals itself.
	uid, err := a.srv.Publish(e2eCtx(t), "sport", "typed", map[string]string{"a": "<&>"}, server.PublishOptions{})
	if err != nil {
		t.Fatal(err)
	}
	c.expectFeed("sport", "typed", `{"a":"<&>"}`, uid)
}

// collectStream reads frames until it has n stream items (FEED or
// UPDATESUB of channel) and the wanted number of RESPONSEs; it returns the
// items and the responses' msgs by id.
func collectStream(t *testing.T, c *e2eConn, channel string, n, responses int) ([]e2eMsg, map[string]string) {
	t.Helper()
	var items []e2eMsg
	resp := map[string]string{}
	for len(items) < n || len(resp) < responses {
		m := c.nextMsg()
		switch m.sys() {
		case 8, 12:
			if m.str("channel") != channel {
				t.Fatalf("frame of another channel: %s", m.raw)
			}
			items = append(items, m)
		case 7:
			if m.has("err") {
				t.Fatalf("ask failed: %s", m.raw)
			}
			resp[string(m.fields["id"])] = m.str("msg")
		default:
			t.Fatalf("unexpected frame %s", m.raw)
		}
	}
	return items, resp
}

func TestE2EUpdateSub(t *testing.T) {
	a := startE2E(t, nil, e2eOptions())
	t.Run("in stream order", func(t *testing.T) {
		s := a.dial(t, "")
		o := a.dial(t, "")
		pos := s.subscribe("ex")
		o.subscribe("ex")
		u1 := a.publish("ex", "t", `1`)
		s.Send(`{"sys":5,"topic":"pub","msg":{"channel":"ex","topic":"mine","msg":{"v":2},"exclude":true},"id":"x"}`)
		items, resp := collectStream(t, s, "ex", 2, 1)
		u2 := e2eMustUID(t, resp[`"x"`])
		u3 := a.publish("ex", "t", `3`)
		more, _ := collectStream(t, s, "ex", 1, 0)
		items = append(items, more...)
		want := []string{e2eFeed("ex", "t", `1`, u1), e2eUpdateSub("ex", u2), e2eFeed("ex", "t", `3`, u3)}
		for i, w := range want {
			if items[i].raw != w {
				t.Errorf("socket publishing with exclusion, item %d: got %s, want %s", i, items[i].raw, w)
			}
		}
		if u1.Seq != pos.Seq+1 || u2.Seq != u1.Seq+1 || u3.Seq != u2.Seq+1 {
			t.Errorf("uids %s %s %s after %s", u1, u2, u3, pos)
		}
		o.expectFeed("ex", "t", `1`, u1)
		o.expectFeed("ex", "mine", `{"v":2}`, u2)
		o.expectFeed("ex", "t", `3`, u3)
		s.expectOpen()
	})
	t.Run("user channel", func(t *testing.T) {
		s := a.dial(t, "user=xavier")
		s.begin()
		o := a.dial(t, "user=xavier")
		o.begin()
		s.Send(`{"sys":5,"topic":"pub","msg":{"channel":"_user.xavier","topic":"note","msg":"self","exclude":true},"id":"u"}`)
		items, resp := collectStream(t, s, "_user.xavier", 1, 1)
		u := e2eMustUID(t, resp[`"u"`])
		if items[0].raw != e2eUpdateSub("_user.xavier", u) {
			t.Fatalf("got %s, want the UPDATESUB of %s", items[0].raw, u)
		}
		o.expectFeed("_user.xavier", "note", `"self"`, u)
	})
	t.Run("from a tell handler", func(t *testing.T) {
		// Tells are handled in order, so the publications are too: every
		// third one includes the sender (FEED), the others exclude it
		// (UPDATESUB); a subscriber that did not publish gets FEEDs.
		const n = 50
		s := a.dial(t, "")
		o := a.dial(t, "")
		pos := s.subscribe("extell")
		o.subscribe("extell")
		for i := 0; i < n; i++ {
			s.Send(fmt.Sprintf(`{"sys":6,"topic":"pub","msg":{"channel":"extell","topic":"t","msg":%d,"exclude":%v}}`, i, i%3 != 0))
		}
		items, _ := collectStream(t, s, "extell", n, 0)
		for i, m := range items {
			u := protocol.UID{Epoch: pos.Epoch, Seq: pos.Seq + uint64(i) + 1}
			want := e2eUpdateSub("extell", u)
			if i%3 == 0 {
				want = e2eFeed("extell", "t", strconv.Itoa(i), u)
			}
			if m.raw != want {
				t.Fatalf("publication %d: got %s, want %s", i, m.raw, want)
			}
			o.expectFeed("extell", "t", strconv.Itoa(i), u)
		}
		s.expectOpen()
	})
	t.Run("not subscribed: nothing", func(t *testing.T) {
		s := a.dial(t, "")
		o := a.dial(t, "")
		o.subscribe("ex2")
		m := s.askRaw("pub", `{"channel":"ex2","topic":"mine","msg":1,"exclude":true}`)
		u := e2eMustUID(t, m.str("msg"))
		o.expectFeed("ex2", "mine", `1`, u)
		s.expectOpen()
	})
	t.Run("concurrent publishers", func(t *testing.T) {
		const others, mine = 150, 30
		s := a.dial(t, "")
		o := a.dial(t, "")
		pos := s.subscribe("exs")
		o.subscribe("exs")
		errc := make(chan error, 1)
		ctx := e2eCtx(t)
		go func() {
			for i := 0; i < others; i++ {
				if _, err := a.srv.Publish(ctx, "exs", "other", json.RawMessage(strconv.Itoa(i)), server.PublishOptions{}); err != nil {
					errc <- err
					return
				}
			}
			errc <- nil
		}()
		for i := 0; i < mine; i++ {
			s.Send(fmt.Sprintf(`{"sys":5,"topic":"pub","msg":{"channel":"exs","topic":"mine","msg":%d,"exclude":true},"id":%d}`, i, i))
		}
		items, resp := collectStream(t, s, "exs", others+mine, mine)
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
		excluded := map[string]bool{}
		for _, u := range resp {
			excluded[u] = true
		}
		for i, m := range items {
			want := protocol.UID{Epoch: pos.Epoch, Seq: pos.Seq + uint64(i) + 1}.String()
			if m.str("uid") != want {
				t.Fatalf("item %d: %s, want uid %s (stream order, gap-free)", i, m.raw, want)
			}
			if excluded[want] != (m.sys() == 12) {
				t.Fatalf("item %d: %s; the socket's own publications must be UPDATESUB, others FEED", i, m.raw)
			}
			if m.sys() == 12 && len(m.keys) != 3 {
				t.Fatalf("UPDATESUB has keys %q, want sys, channel, uid", m.keys)
			}
		}
		oi, _ := collectStream(t, o, "exs", others+mine, 0)
		for i, m := range oi {
			if m.sys() != 8 || m.str("uid") != items[i].str("uid") {
				t.Fatalf("other subscriber item %d: %s", i, m.raw)
			}
		}
		s.expectOpen()
	})
}

func TestE2EBroadcast(t *testing.T) {
	a := startE2E(t, nil, e2eOptions())
	c1 := a.dial(t, "")
	c1.expectOpen() // registered (a broadcast racing the upgrade is TestE2EBootRightAfterUpgrade)
	c2 := a.dial(t, "user=alice")
	c2.begin()
	c2.subscribe("somewhere")
	if err := a.srv.Broadcast(e2eCtx(t), "maintenance", json.RawMessage(`{"at":"soon"}`)); err != nil {
		t.Fatal(err)
	}
	c1.expectExact(`{"sys":11,"topic":"maintenance","msg":{"at":"soon"}}`)
	c2.expectExact(`{"sys":11,"topic":"maintenance","msg":{"at":"soon"}}`)
}

func TestE2EBoot(t *testing.T) {
	closes := make(chan string, 64)
	o := e2eOptions()
	o.BootGrace = 300 * time.Millisecond
	o.OnClose = func(sock *server.Socket, code int, reason string) {
		closes <- fmt.Sprintf("%s %d %s", sock.ID(), code, reason)
	}
	a := startE2E(t, nil, o)
	waitOnClose := func(t *testing.T, want string) {
		t.Helper()
		deadline := time.After(e2eTimeout)
		for {
			select {
			case got := <-closes:
				if got == want {
					return
				}
			case <-deadline:
				t.Fatalf("OnClose never saw %q", want)
			}
		}
	}
	t.Run("client echoes 4001", func(t *testing.T) {
		c := a.dial(t, "")
		id := c.whoami()
		if err := a.srv.BootSocket(e2eCtx(t), id, "you asked for it"); err != nil {
			t.Fatal(err)
		}
		c.expectExact(`{"sys":9,"reason":"you asked for it"}`)
		c.SendClose(protocol.CloseBooted, "you asked for it")
		if r := c.ExpectClose(protocol.CloseBooted); r != "you asked for it" {
			t.Errorf("close reason %q", r)
		}
		c.ExpectTCPClosed()
		waitOnClose(t, id+" 4001 you asked for it")
	})
	t.Run("client silent", func(t *testing.T) {
		c := a.dial(t, "")
		id := c.whoami()
		start := time.Now()
		if err := a.srv.BootSocket(e2eCtx(t), id, "silence"); err != nil {
			t.Fatal(err)
		}
		c.expectExact(`{"sys":9,"reason":"silence"}`)
		if r := c.ExpectClose(protocol.CloseBooted); r != "silence" {
			t.Errorf("close reason %q, want the boot reason", r)
		}
		if el := time.Since(start); el < 200*time.Millisecond {
			t.Errorf("closed %v after BOOT, before the grace period (300ms)", el)
		}
		c.ExpectTCPClosed()
	})
	t.Run("session", func(t *testing.T) {
		s1 := a.dial(t, "session=bs1")
		s2 := a.dial(t, "session=bs1")
		keep := a.dial(t, "session=bs2")
		for _, s := range []*e2eConn{s1, s2, keep} {
			s.begin()
		}
		if err := a.srv.BootSession(e2eCtx(t), "bs1", "session over"); err != nil {
			t.Fatal(err)
		}
		for _, s := range []*e2eConn{s1, s2} {
			s.expectExact(`{"sys":9,"reason":"session over"}`)
			if r := s.ExpectClose(protocol.CloseBooted); r != "session over" {
				t.Errorf("close reason %q", r)
			}
		}
		keep.expectOpen()
	})
	t.Run("long reason", func(t *testing.T) {
		c := a.dial(t, "")
		id := c.whoami()
		if err := a.srv.BootSocket(e2eCtx(t), id, strings.Repeat("r", 200)); err != nil {
			t.Logf("BootSocket with a 200-byte reason: %v (refusing is acceptable)", err)
			c.expectOpen()
			return
		}
		m := c.nextMsg()
		if m.sys() != 9 || len(m.str("reason")) > protocol.MaxReasonLen || m.str("reason") == "" {
			t.Fatalf("BOOT %s: reason must be 1..123 bytes", m.raw)
		}
		if r := c.ExpectClose(protocol.CloseBooted); len(r) > protocol.MaxReasonLen {
			t.Fatalf("close reason of %d bytes", len(r))
		}
	})
	t.Run("long multibyte reason", func(t *testing.T) {
		c := a.dial(t, "")
		id := c.whoami()
		if err := a.srv.BootSocket(e2eCtx(t), id, strings.Repeat("é", 100)); err != nil {
			t.Logf("BootSocket with a 200-byte reason: %v (refusing is acceptable)", err)
			c.expectOpen()
			return
		}
		m := c.nextMsg()
		r := m.str("reason")
		if m.sys() != 9 || len(r) > protocol.MaxReasonLen || r == "" || !utf8.ValidString(r) || strings.ContainsRune(r, utf8.RuneError) {
			t.Fatalf("BOOT %s: reason must be 1..123 bytes of whole characters", m.raw)
		}
		cr := c.ExpectClose(protocol.CloseBooted)
		if len(cr) > protocol.MaxReasonLen || !utf8.ValidString(cr) {
			t.Fatalf("close reason %q: over 123 bytes or not UTF-8", cr)
		}
	})
	t.Run("channel", func(t *testing.T) {
		c := a.dial(t, "")
		c.subscribe("bootme")
		c.subscribe("stay")
		if err := a.srv.BootChannel(e2eCtx(t), "bootme"); err != nil {
			t.Fatal(err)
		}
		// The socket stays open and is told which channel it lost
		// (docs/protocol.md, "5.9 Removal from a channel").
		c.expectExact(`{"err":{"name":"ChannelBooted","message":"removed from channel bootme","code":"channel_booted","channel":"bootme"}}`)
		testutil.WaitFor(t, e2eTimeout, func() bool {
			for _, ch := range a.srv.Channels() {
				if ch == "bootme" {
					return false
				}
			}
			return true
		}, "BootChannel to remove the subscription")
		wit := a.dial(t, "")
		wit.subscribe("bootme")
		u := a.publish("bootme", "t", `"x"`)
		wit.expectFeed("bootme", "t", `"x"`, u)
		u2 := a.publish("stay", "t", `"y"`)
		// No BOOT and no FEED of bootme.
		c.expectFeed("stay", "t", `"y"`, u2)
		c.expectOpen()
	})
}

func TestE2ECloseEcho(t *testing.T) {
	closes := make(chan string, 8)
	o := e2eOptions()
	o.OnClose = func(sock *server.Socket, code int, reason string) { closes <- fmt.Sprintf("%d %s", code, reason) }
	a := startE2E(t, nil, o)
	for _, tc := range []struct {
		code   int
		reason string
	}{{4000, "bye"}, {4000, "Connection closed by client"}, {1000, ""}} {
		t.Run(fmt.Sprintf("%d %s", tc.code, tc.reason), func(t *testing.T) {
			c := a.dial(t, "")
			c.begin()
			c.SendClose(tc.code, tc.reason)
			if r := c.ExpectClose(tc.code); r != tc.reason {
				t.Errorf("echoed reason %q, want %q", r, tc.reason)
			}
			c.ExpectTCPClosed()
			select {
			case got := <-closes:
				if want := fmt.Sprintf("%d %s", tc.code, tc.reason); got != want {
					t.Errorf("OnClose(%s), want %s", got, want)
				}
			case <-time.After(e2eTimeout):
				t.Error("OnClose not called")
			}
		})
	}
}

func TestE2ECloseOddFrames(t *testing.T) {
	a := startE2E(t, nil, e2eOptions())
	t.Run("close without code", func(t *testing.T) {
		c := a.dial(t, "")
		c.begin()
		c.SendControl(websocket.CloseMessage, nil)
		c.ExpectClose(websocket.CloseNoStatusReceived) // an empty close frame echoed
		c.ExpectTCPClosed()
	})
	t.Run("invalid close code", func(t *testing.T) {
		c := a.dial(t, "")
		c.begin()
		c.SendClose(5000, "nope")
		code, _ := c.WaitClosed()
		if code == 5000 {
			t.Errorf("server echoed the invalid close code 5000")
		}
		c.ExpectTCPClosed()
	})
	t.Run("ping gets pong", func(t *testing.T) {
		c := a.dial(t, "")
		c.begin()
		c.SendControl(websocket.PingMessage, []byte("abc"))
		select {
		case p := <-c.Pongs():
			if p != "abc" {
				t.Errorf("pong %q, want abc", p)
			}
		case <-time.After(e2eTimeout):
			t.Fatal("no pong")
		}
		c.expectOpen()
	})
}
