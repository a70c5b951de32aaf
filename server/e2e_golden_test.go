package server_test

// Replays every frame the SSS JavaScript client was observed sending
// (testdata/sss-client-frames.txt) and checks the server's answers against
// docs/protocol.md.

import (
	"bufio"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sss-go/sss/protocol"
)

// e2eGolden is one golden client frame.
type e2eGolden struct {
	frame       string // text frame, or "" for a close
	closeCode   int
	closeReason string
}

// loadGolden reads testdata/sss-client-frames.txt.
func loadGolden(t *testing.T) map[string]e2eGolden {
	t.Helper()
	f, err := os.Open("testdata/sss-client-frames.txt")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string]e2eGolden{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<16), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		name, frame, ok := strings.Cut(line, " ")
		if !ok {
			t.Fatalf("bad golden line %q", line)
		}
		g := e2eGolden{frame: frame}
		if rest, ok := strings.CutPrefix(frame, "CLOSE "); ok {
			code, reason, _ := strings.Cut(rest, " ")
			n, err := strconv.Atoi(code)
			if err != nil {
				t.Fatalf("bad close line %q", line)
			}
			g = e2eGolden{closeCode: n, closeReason: reason}
		}
		if _, dup := out[name]; dup {
			t.Fatalf("golden frame %q twice", name)
		}
		out[name] = g
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// expectUpdateSubs reads len(want) frames that must be the UPDATESUBs of
// want's channels (any order between channels) at the given positions.
func (c *e2eConn) expectUpdateSubs(want map[string]protocol.UID) {
	c.t.Helper()
	left := map[string]protocol.UID{}
	for k, v := range want {
		left[k] = v
	}
	for len(left) > 0 {
		m := c.nextMsg()
		pos, ok := left[m.str("channel")]
		if !ok || m.raw != e2eUpdateSub(m.str("channel"), pos) {
			c.t.Fatalf("got %s, want one of the UPDATESUBs %v", m.raw, left)
		}
		delete(left, m.str("channel"))
	}
}

func TestE2EGoldenClientFrames(t *testing.T) {
	g := loadGolden(t)
	frame := func(name string) string {
		t.Helper()
		f, ok := g[name]
		if !ok || f.frame == "" {
			t.Fatalf("no golden frame %q", name)
		}
		return f.frame
	}
	o := e2eOptions()
	o.HeartbeatInterval = 2000 * time.Millisecond // as the recording fixture
	o.HeartbeatThreshold = 2500 * time.Millisecond
	a := startE2E(t, nil, o)

	t.Run("connect without user", func(t *testing.T) {
		c := a.dial(t, "")
		c.Send(frame("begin"))
		c.expectExact(`{"sys":3,"prot":{"v":1,"hb":true,"hbInterval":2000,"hbThreshold":2500}}`)
	})
	t.Run("connect with user", func(t *testing.T) {
		c := a.dial(t, "user=alice")
		c.Send(frame("begin"))
		m := c.nextMsg()
		want := `{"sys":3,"prot":{"v":1,"hb":true,"hbInterval":2000,"hbThreshold":2500},"channel":"_user.alice","lastUid":"` + a.position("_user.alice").String() + `"}`
		if !e2eJSONEqual(m.raw, want) {
			t.Fatalf("got %s, want %s", m.raw, want)
		}
	})
	t.Run("subscribe", func(t *testing.T) {
		c := a.dial(t, "user=alice")
		c.begin()
		for _, tc := range []struct{ name, channel, query string }{
			{"subscribe-query-object", "room1", `{"from":"golden","n":[1,2]}`},
			{"subscribe-query-null", "room2", "null"},
			{"subscribe-query-undefined", "room3", "null"},
		} {
			c.Send(frame(tc.name))
			c.expectExact(`{"sys":1,"result":true,"channel":"` + tc.channel + `","id":1,"lastUid":"` + a.position(tc.channel).String() + `"}`)
			q := a.queriesOf(tc.channel)
			if len(q) == 0 || (q[len(q)-1] != tc.query && !(tc.query == "null" && q[len(q)-1] == "<nil>")) {
				t.Errorf("%s: parser saw query %q, want %s", tc.name, q, tc.query)
			}
		}
		c.Send(frame("subscribe-empty-name"))
		m := c.nextMsg()
		// The channel key may be left out for the empty name (the
		// protocol encoder omits an empty channel).
		if (m.raw != `{"sys":1,"result":false,"channel":"","id":1,"err":`+string(m.fields["err"])+`}` &&
			m.raw != `{"sys":1,"result":false,"id":1,"err":`+string(m.fields["err"])+`}`) || m.errCode() != protocol.CodeBadChannel {
			t.Errorf("empty channel name: %s, want false with code bad_channel", m.raw)
		}
		c.Send(frame("subscribe-refused"))
		m = c.nextMsg()
		if m.raw != `{"sys":1,"result":false,"channel":"forbidden","id":1,"err":`+string(m.fields["err"])+`}` || m.errCode() != protocol.CodeRefused {
			t.Errorf("refused: %s, want false with the parser's error (code refused)", m.raw)
		}
		for i, ch := range []string{"room1", "room2", "room3"} {
			u := a.publish(ch, "t", strconv.Itoa(i))
			c.expectFeed(ch, "t", strconv.Itoa(i), u)
		}
	})
	t.Run("unsubscribe", func(t *testing.T) {
		c := a.dial(t, "user=alice")
		c.begin()
		c.subscribe("room4")
		c.Send(frame("unsubscribe"))
		c.Send(frame("unsubscribe-user")) // "_u_alice" is not held: nothing happens
		c.expectOpen()
		w := a.dial(t, "user=alice")
		w.begin()
		w.subscribe("room4")
		u := a.publish("room4", "t", "1")
		w.expectFeed("room4", "t", "1", u)
		u = a.publish("_user.alice", "dm", "1")
		w.expectFeed("_user.alice", "dm", "1", u)
		c.expectFeed("_user.alice", "dm", "1", u) // still held
		c.Send(frame("unsubscribe-user-renamed"))
		c.expectOpen()
		u = a.publish("_user.alice", "dm", "2")
		w.expectFeed("_user.alice", "dm", "2", u)
		c.expectOpen()
	})
	t.Run("ask", func(t *testing.T) {
		c := a.dial(t, "")
		c.begin()
		for _, tc := range []struct{ name, want string }{
			{"ask-object", `{"sys":7,"msg":{"a":1,"b":[true,null,"x"],"c":{"d":2.5}},"id":1}`},
			{"ask-string", `{"sys":7,"msg":"hello","id":1}`},
			{"ask-null", `{"sys":7,"msg":null,"id":1}`},
			{"ask-undefined", `{"sys":7,"msg":null,"id":1}`},
		} {
			c.Send(frame(tc.name))
			c.expectExact(tc.want)
		}
	})
	t.Run("request ids", func(t *testing.T) {
		c := a.dial(t, "")
		c.begin()
		// Four requests in one tick, a fifth while 2-4 are outstanding,
		// then id 1 again once all were answered.
		c.Send(`{"sys":5,"topic":"echo","msg":"a","id":1}`)
		c.Send(`{"sys":5,"topic":"echo","msg":"b","id":2}`)
		c.Send(`{"sys":1,"channel":"room1","query":null,"id":3}`)
		c.Send(`{"sys":5,"topic":"echo","msg":"d","id":4}`)
		seen := map[string]int{}
		for len(seen) < 5 {
			m := c.nextMsg()
			id := string(m.fields["id"])
			seen[id]++
			want := map[string]string{"1": `"a"`, "2": `"b"`, "4": `"d"`, "5": `"e"`}[id]
			if seen[id] > 1 || m.has("err") || (want != "" && string(m.fields["msg"]) != want) || (id == "3" && string(m.fields["result"]) != "true") {
				t.Fatalf("reply %s", m.raw)
			}
			if id == "1" {
				c.Send(`{"sys":5,"topic":"echo","msg":"e","id":5}`)
			}
		}
		c.Send(frame("ask-string"))
		c.expectExact(`{"sys":7,"msg":"hello","id":1}`)
	})
	t.Run("tell", func(t *testing.T) {
		c := a.dial(t, "")
		c.begin()
		c.Send(frame("tell"))
		if tl := a.waitTell(); tl.Topic != "post" || tl.Msg != `{"room":"room1","text":"hi"}` {
			t.Errorf("tell handler got %+v", tl)
		}
		c.Send(frame("tell-undefined"))
		if tl := a.waitTell(); tl.Topic != "nothing" || (tl.Msg != "" && tl.Msg != "null") {
			t.Errorf("tell handler got %+v", tl)
		}
		c.expectOpen()
	})
	t.Run("heartbeat", func(t *testing.T) {
		c := a.dial(t, "")
		c.begin()
		for i := 0; i < 2; i++ {
			select {
			case <-c.Heartbeats():
			case <-time.After(e2eTimeout):
				t.Fatal("no heartbeat")
			}
		}
		c.Send(frame("heartbeat")) // an extra "h" is no bad frame
		c.expectOpen()
	})
	t.Run("sync with user, renamed user channel", func(t *testing.T) {
		for _, ch := range []string{"room1", "room2"} {
			a.publish(ch, "t", `"old"`)
			a.publish(ch, "t", `"old"`)
		}
		c := a.dial(t, "user=alice")
		r := c.sync(frame("sync-user-renamed"))
		chans := []string{"_user.alice", "room1", "room2", "room3", "room5"}
		want := map[string]protocol.UID{}
		for _, ch := range chans {
			r.expectOutcome(t, ch, false, protocol.CodeNotRecoverable)
			want[ch] = a.position(ch)
		}
		if len(r.result) != len(chans) || len(r.records) != 0 {
			t.Fatalf("reply %s", r.msg.raw)
		}
		c.expectUpdateSubs(want)
		if q := a.queriesOf("room1"); q[len(q)-1] != `{"from":"golden","n":[1,2]}` {
			t.Errorf("parser saw %q for room1", q)
		}
		for _, ch := range chans {
			u := a.publish(ch, "t", `"new"`)
			c.expectFeed(ch, "t", `"new"`, u)
		}
	})
	t.Run("sync with user, verbatim", func(t *testing.T) {
		c := a.dial(t, "user=alice")
		r := c.sync(frame("sync-user"))
		r.expectOutcome(t, "_u_alice", false, protocol.CodeReservedChannel)
		want := map[string]protocol.UID{}
		for _, ch := range []string{"room1", "room2", "room3", "room5"} {
			r.expectOutcome(t, ch, false, protocol.CodeNotRecoverable)
			want[ch] = a.position(ch)
		}
		c.expectUpdateSubs(want)
		// The user channel was not listed: not subscribed.
		w := a.dial(t, "user=alice")
		w.begin()
		u := a.publish("_user.alice", "dm", `"x"`)
		w.expectFeed("_user.alice", "dm", `"x"`, u)
		c.expectOpen()
	})
	t.Run("sync without user", func(t *testing.T) {
		c := a.dial(t, "")
		r := c.sync(frame("sync-no-user"))
		r.expectOutcome(t, "42", false, protocol.CodeNotRecoverable)
		r.expectOutcome(t, "room1", false, protocol.CodeNotRecoverable)
		c.expectUpdateSubs(map[string]protocol.UID{"42": a.position("42"), "room1": a.position("room1")})
		u := a.publish("42", "t", "42")
		c.expectFeed("42", "t", "42", u)
	})
	t.Run("sync empty", func(t *testing.T) {
		c := a.dial(t, "")
		c.Send(frame("sync-empty"))
		c.expectExact(`{"sys":4,"result":{},"records":[]}`)
	})
	t.Run("close by app", func(t *testing.T) {
		c := a.dial(t, "")
		c.begin()
		f := g["close-by-app"]
		c.SendClose(f.closeCode, f.closeReason)
		if r := c.ExpectClose(f.closeCode); r != f.closeReason {
			t.Errorf("echo reason %q", r)
		}
		c.ExpectTCPClosed()
	})
	t.Run("boot", func(t *testing.T) {
		c := a.dial(t, "")
		c.begin()
		id := c.whoami()
		f := g["close-after-boot"]
		if err := a.srv.BootSocket(e2eCtx(t), id, f.closeReason); err != nil {
			t.Fatal(err)
		}
		c.expectExact(`{"sys":9,"reason":"` + f.closeReason + `"}`)
		c.SendClose(f.closeCode, f.closeReason)
		if r := c.ExpectClose(protocol.CloseBooted); r != f.closeReason {
			t.Errorf("echo reason %q", r)
		}
		c.ExpectTCPClosed()
	})
	t.Run("heartbeat lost close", func(t *testing.T) {
		c := a.dial(t, "")
		c.begin()
		f := g["close-heartbeat-lost"]
		c.SendClose(f.closeCode, f.closeReason)
		if r := c.ExpectClose(f.closeCode); r != f.closeReason {
			t.Errorf("echo reason %q", r)
		}
		c.ExpectTCPClosed()
	})
}
