package server_test

// SUBSCRIBE and UNSUBSCRIBE over a real WebSocket (docs/protocol.md, "5.3
// SUBSCRIBE" and "5.4 UNSUBSCRIBE"): replies, refusals, duplicates, limits
// and races with publications and with the last subscriber leaving.

import (
	"encoding/json"
	"strconv"
	"strings"
	"testing"

	"github.com/sss-go/sss/internal/testutil"
	"github.com/sss-go/sss/protocol"
	"github.com/sss-go/sss/server"
)

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

func TestE2ESubscribeRacingLastUnsubscribe(t *testing.T) {
	a := startE2E(t, nil, e2eOptions())
	x := a.dial(t, "")
	y := a.dial(t, "")
	for i := 0; i < 60; i++ {
		ch := "flip" + strconv.Itoa(i%3)
		x.subscribe(ch)
		// X's UNSUBSCRIBE (the last local subscriber leaving) and Y's
		// SUBSCRIBE race in two reader goroutines.
		x.Send(`{"sys":2,"channel":"` + ch + `"}`)
		pos := y.subscribe(ch)
		u := a.publish(ch, "t", strconv.Itoa(i))
		if u.Epoch != pos.Epoch || u.Seq != pos.Seq+1 {
			t.Fatalf("round %d: uid %s after lastUid %s", i, u, pos)
		}
		y.expectFeed(ch, "t", strconv.Itoa(i), u)
		y.Send(`{"sys":2,"channel":"` + ch + `"}`)
		// X may still get that FEED: UNSUBSCRIBE has no reply, so it
		// takes effect at some point after it was sent.
		x.drainOpen()
		y.expectOpen()
	}
	testutil.WaitFor(t, e2eTimeout, func() bool { return len(a.srv.Channels()) == 0 }, "no channel left")
}

func TestE2EMaxSubscribersPerChannel(t *testing.T) {
	o := e2eOptions()
	o.Channels = []server.ChannelRule{{Pattern: "small-*", Options: server.ChannelOptions{MaxSubscribers: 2}}}
	a := startE2E(t, nil, o)
	c1, c2, c3 := a.dial(t, ""), a.dial(t, ""), a.dial(t, "")
	c1.subscribe("small-1")
	c2.subscribe("small-1")
	m := c3.subscribeRaw("small-1", "null")
	if string(m.fields["result"]) != "false" || m.errCode() == "" {
		t.Fatalf("third subscriber of a 2-subscriber channel: %s, want result false", m.raw)
	}
	c3.subscribe("other-1")
	c1.Send(`{"sys":2,"channel":"small-1"}`)
	c1.expectOpen()
	c3.subscribe("small-1")
}
