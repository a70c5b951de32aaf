package server_test

// Sessions (parser, refusal, origin), user channels, heartbeats and
// shutdown over real WebSockets.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/sss-go/sss/internal/testutil"
	"github.com/sss-go/sss/protocol"
	"github.com/sss-go/sss/server"
)

func TestE2ESessionRefused(t *testing.T) {
	t.Run("close 4001 with the reason", func(t *testing.T) {
		a := startE2E(t, nil, e2eOptions())
		c := a.dial(t, "refuse="+url.QueryEscape("go away"))
		if r := c.ExpectClose(protocol.CloseBooted); r != "go away" {
			t.Errorf("close reason %q, want the parser's message", r)
		}
		c.ExpectTCPClosed()
	})
	t.Run("plain error hides details", func(t *testing.T) {
		a := startE2E(t, nil, e2eOptions())
		c := a.dial(t, "refuseplain=1")
		if r := c.ExpectClose(protocol.CloseBooted); r != "refused" {
			t.Errorf("close reason %q, want \"refused\" (the parser's error is not shown)", r)
		}
	})
	t.Run("long reason cut to 123 bytes", func(t *testing.T) {
		a := startE2E(t, nil, e2eOptions())
		for _, reason := range []string{strings.Repeat("x", 300), strings.Repeat("é", 100), strings.Repeat("日", 60)} {
			c := a.dial(t, "refuse="+url.QueryEscape(reason))
			if r := c.ExpectClose(protocol.CloseBooted); len(r) == 0 || len(r) > protocol.MaxReasonLen || !strings.HasPrefix(reason, r) {
				t.Errorf("close reason %q (%d bytes), want a prefix of whole characters, 1..123 bytes", r, len(r))
			}
		}
	})
	t.Run("invalid user id", func(t *testing.T) {
		a := startE2E(t, nil, e2eOptions())
		for _, user := range []string{strings.Repeat("u", 129), "a\nb", "\xff", "bad\x01user"} {
			c := a.dial(t, e2eQueryUser(user))
			if r := c.ExpectClose(protocol.CloseBooted); r != "invalid user id" {
				t.Errorf("user %q: close reason %q, want \"invalid user id\"", user, r)
			}
		}
	})
	t.Run("HTTP 403", func(t *testing.T) {
		o := e2eOptions()
		o.RefuseWithHTTP403 = true
		a := startE2E(t, nil, o)
		_, resp, err := a.dialRaw(t, "refuse=no", nil)
		if err == nil {
			t.Fatal("upgrade succeeded, want HTTP 403")
		}
		if resp == nil || resp.StatusCode != http.StatusForbidden {
			t.Fatalf("response %v, want 403", resp)
		}
		// Accepted sessions still upgrade.
		c := a.dial(t, "user=ok")
		c.begin()
	})
}

func TestE2ESessionValues(t *testing.T) {
	a := startE2E(t, nil, e2eOptions())
	var w struct {
		ID, User, Session, Role, Cookie string
	}
	c, _, err := a.dialRaw(t, "user=alice&session=s9&role=admin", http.Header{"Cookie": {"sid=cookie-value"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal([]byte(c.ask("whoami", "")), &w); err != nil {
		t.Fatal(err)
	}
	if w.ID == "" || w.User != "alice" || w.Session != "s9" || w.Role != "admin" || w.Cookie != "cookie-value" {
		t.Fatalf("socket %+v, want user alice, session s9, role admin, cookie from Socket.Request()", w)
	}
	c2 := a.dial(t, "")
	if err := json.Unmarshal([]byte(c2.ask("whoami", "")), &w); err != nil {
		t.Fatal(err)
	}
	if w.Session == "" || w.User != "" || w.ID == "" {
		t.Fatalf("socket %+v, want a generated session id and no user", w)
	}
	first := w
	c3 := a.dial(t, "")
	if err := json.Unmarshal([]byte(c3.ask("whoami", "")), &w); err != nil {
		t.Fatal(err)
	}
	if w.Session == first.Session || w.ID == first.ID {
		t.Fatalf("two sockets share session %q / id %q", w.Session, w.ID)
	}
}

func TestE2EOrigin(t *testing.T) {
	o := e2eOptions()
	o.AllowedOrigins = []string{"http://good.example"}
	a := startE2E(t, nil, o)
	for _, tc := range []struct {
		origin string
		ok     bool
	}{
		{"", true},
		{strings.TrimSuffix(a.hs.URL, "/"), true},
		{"http://good.example", true},
		{"http://evil.example", false},
	} {
		t.Run("origin "+tc.origin, func(t *testing.T) {
			h := http.Header{}
			if tc.origin != "" {
				h.Set("Origin", tc.origin)
			}
			c, resp, err := a.dialRaw(t, "", h)
			if tc.ok {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				c.begin()
				return
			}
			if err == nil {
				t.Fatal("cross-origin upgrade accepted")
			}
			if resp == nil || resp.StatusCode != http.StatusForbidden {
				t.Errorf("response %v, want 403", resp)
			}
		})
	}
}

func TestE2EUserChannel(t *testing.T) {
	a := startE2E(t, nil, e2eOptions())
	alice1 := a.dial(t, "user=alice")
	alice2 := a.dial(t, "user=alice")
	bob := a.dial(t, "user=bob")
	anon := a.dial(t, "")
	var pos protocol.UID
	for _, c := range []*e2eConn{alice1, alice2} {
		m := c.begin()
		if m.str("channel") != "_user.alice" {
			t.Fatalf("BEGIN reply %s, want channel _user.alice", m.raw)
		}
		pos = e2eMustUID(t, m.str("lastUid"))
	}
	bob.begin()
	anon.begin()
	t.Run("publish reaches the user", func(t *testing.T) {
		u := a.publish("_user.alice", "dm", `{"from":"bob"}`)
		if u.Epoch != pos.Epoch || u.Seq != pos.Seq+1 {
			t.Errorf("uid %s after BEGIN lastUid %s", u, pos)
		}
		alice1.expectFeed("_user.alice", "dm", `{"from":"bob"}`, u)
		alice2.expectFeed("_user.alice", "dm", `{"from":"bob"}`, u)
		bob.expectOpen()
		anon.expectOpen()
	})
	t.Run("SUBSCRIBE to a user channel is reserved", func(t *testing.T) {
		for _, ch := range []string{"_user.alice", "_user.bob"} {
			m := alice1.subscribeRaw(ch, "null")
			if string(m.fields["result"]) != "false" || m.errCode() != protocol.CodeReservedChannel {
				t.Errorf("SUBSCRIBE %s: %s, want false reserved_channel", ch, m.raw)
			}
		}
	})
	t.Run("TellUser", func(t *testing.T) {
		if err := a.srv.TellUser(e2eCtx(t), "alice", "note", json.RawMessage(`"hi alice"`)); err != nil {
			t.Fatal(err)
		}
		alice1.expectExact(`{"sys":6,"topic":"note","msg":"hi alice"}`)
		alice2.expectExact(`{"sys":6,"topic":"note","msg":"hi alice"}`)
		bob.expectOpen()
		anon.expectOpen()
	})
	t.Run("unsubscribe then BEGIN again", func(t *testing.T) {
		alice2.Send(`{"sys":2,"channel":"_user.alice"}`)
		alice2.expectOpen()
		u := a.publish("_user.alice", "dm", `2`)
		alice1.expectFeed("_user.alice", "dm", `2`, u)
		alice2.expectOpen()
		m := alice2.begin()
		if m.str("channel") != "_user.alice" || m.str("lastUid") != u.String() {
			t.Fatalf("second BEGIN %s, want the user channel at %s", m.raw, u)
		}
		u2 := a.publish("_user.alice", "dm", `3`)
		alice1.expectFeed("_user.alice", "dm", `3`, u2)
		alice2.expectFeed("_user.alice", "dm", `3`, u2)
	})
	t.Run("BootUser", func(t *testing.T) {
		if err := a.srv.BootUser(e2eCtx(t), "alice", "bye alice"); err != nil {
			t.Fatal(err)
		}
		for _, c := range []*e2eConn{alice1, alice2} {
			c.expectExact(`{"sys":9,"reason":"bye alice"}`)
			c.SendClose(protocol.CloseBooted, "bye alice")
			if r := c.ExpectClose(protocol.CloseBooted); r != "bye alice" {
				t.Errorf("close reason %q", r)
			}
		}
		bob.expectOpen()
		anon.expectOpen()
	})
}

func TestE2EHeartbeat(t *testing.T) {
	const interval = 300 * time.Millisecond
	o := e2eOptions()
	o.HeartbeatInterval = interval
	a := startE2E(t, nil, o)
	waitH := func(t *testing.T, c *e2eConn, n int) {
		t.Helper()
		for i := 0; i < n; i++ {
			select {
			case <-c.Heartbeats():
			case <-c.Done():
				t.Fatalf("closed with %d %q after %d heartbeats", c.CloseCode(), c.CloseReason(), c.HeartbeatCount())
			case <-time.After(e2eTimeout):
				t.Fatalf("no heartbeat within %v", e2eTimeout)
			}
		}
	}
	t.Run("answered stays open", func(t *testing.T) {
		c := a.dial(t, "")
		m := c.begin()
		if string(m.fields["prot"]) != `{"v":1,"hb":true,"hbInterval":300,"hbThreshold":2500}` {
			t.Errorf("prot %s", m.fields["prot"])
		}
		waitH(t, c, 6)
		c.expectOpen()
		// An SSS client closes with 4100 after hbInterval + hbThreshold
		// without "h": the gaps stay well within that, and "h" does not
		// come much faster than the interval either.
		times := c.HeartbeatTimes()
		for i := 1; i < len(times); i++ {
			if gap := times[i].Sub(times[i-1]); gap > interval+2500*time.Millisecond {
				t.Errorf("heartbeat gap %v, interval %v", gap, interval)
			}
		}
		if avg := times[len(times)-1].Sub(times[0]) / time.Duration(len(times)-1); avg < interval/2 {
			t.Errorf("heartbeats every %v on average, interval %v", avg, interval)
		}
	})
	t.Run("unanswered closes 4003", func(t *testing.T) {
		c := a.dial(t, "")
		c.AnswerHeartbeats(false)
		c.begin()
		c.ExpectClose(protocol.CloseHeartbeatTimeout)
		if c.HeartbeatCount() < 1 {
			t.Error("closed 4003 without ever sending h")
		}
	})
	t.Run("h flows with data", func(t *testing.T) {
		c := a.dial(t, "")
		c.begin() // heartbeats start with BEGIN or SYNC
		pos := c.subscribe("flood")
		seq := pos.Seq
		start := c.HeartbeatCount()
		deadline := time.Now().Add(e2eTimeout)
		for c.HeartbeatCount() < start+4 {
			if time.Now().After(deadline) {
				t.Fatalf("only %d heartbeats while data flowed", c.HeartbeatCount()-start)
			}
			var last protocol.UID
			for i := 0; i < 20; i++ {
				last = a.publish("flood", "t", `"`+strings.Repeat("d", 500)+`"`)
			}
			for seq < last.Seq {
				m := c.nextMsg()
				seq++
				if m.sys() != 8 || m.str("uid") != (protocol.UID{Epoch: pos.Epoch, Seq: seq}).String() {
					t.Fatalf("got %s, want FEED seq %d", m.raw, seq)
				}
			}
		}
		c.expectOpen()
	})
}

func TestE2EShutdown(t *testing.T) {
	for _, tc := range []struct {
		name string
		code int // option; 0 = default
		want int
	}{{"default 1001", 0, 1001}, {"1012", 1012, 1012}} {
		t.Run(tc.name, func(t *testing.T) {
			const spread = time.Second
			o := e2eOptions()
			o.ShutdownSpread = spread
			o.ShutdownCloseCode = tc.code
			a := startE2E(t, nil, o)
			ready := func() int {
				rec := httptest.NewRecorder()
				a.srv.ReadyHandler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/ready", nil))
				return rec.Code
			}
			if got := ready(); got != http.StatusOK {
				t.Fatalf("ReadyHandler = %d before shutdown, want 200", got)
			}
			if a.srv.Draining() {
				t.Fatal("Draining() before Shutdown")
			}
			var conns []*e2eConn
			for i := 0; i < 5; i++ {
				c := a.dial(t, "")
				c.subscribe("sd")
				conns = append(conns, c)
			}
			start := time.Now()
			errc := make(chan error, 1)
			go func() {
				ctx, cancel := context.WithTimeout(context.Background(), e2eTimeout)
				defer cancel()
				errc <- a.srv.Shutdown(ctx)
			}()
			testutil.WaitFor(t, e2eTimeout, a.srv.Draining, "Draining()")
			if got := ready(); got != http.StatusServiceUnavailable {
				t.Errorf("ReadyHandler = %d while draining, want 503", got)
			}
			_, resp, err := a.dialRaw(t, "", nil)
			if err == nil {
				t.Error("upgrade accepted while draining")
			} else if resp == nil || resp.StatusCode != http.StatusServiceUnavailable {
				t.Errorf("upgrade while draining: %v (%v), want HTTP 503", resp, err)
			}
			for i, c := range conns {
				code, _ := c.WaitClosed()
				if code != tc.want {
					t.Errorf("socket %d closed with %d, want %d", i, code, tc.want)
				}
				c.ExpectTCPClosed()
			}
			if el := time.Since(start); el > spread+5*time.Second {
				t.Errorf("sockets closed after %v, spread is %v", el, spread)
			}
			first, lastAt := conns[0].ClosedAt(), conns[0].ClosedAt()
			for _, c := range conns {
				if c.ClosedAt().Before(first) {
					first = c.ClosedAt()
				}
				if c.ClosedAt().After(lastAt) {
					lastAt = c.ClosedAt()
				}
			}
			if lastAt.Sub(first) < spread/4 {
				t.Errorf("5 sockets closed within %v, want them spread over %v", lastAt.Sub(first), spread)
			}
			if err := <-errc; err != nil {
				t.Errorf("Shutdown: %v", err)
			}
			if err := a.srv.Shutdown(e2eCtx(t)); err != nil {
				t.Errorf("second Shutdown: %v", err)
			}
		})
	}
	t.Run("cut short by ctx", func(t *testing.T) {
		a := startE2E(t, nil, e2eOptions())
		c := a.dial(t, "")
		c.Send(`{"sys":5,"topic":"stuck","id":1}`)
		a.waitSlowStarted()
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		defer cancel()
		err := a.srv.Shutdown(ctx)
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Shutdown with a stuck ask: %v, want context.DeadlineExceeded", err)
		}
		a.unstick()
		c.WaitClosed()
		// Shutdown may be called again to finish the work.
		if err := a.srv.Shutdown(e2eCtx(t)); err != nil {
			t.Errorf("Shutdown again after the ask returned: %v, want nil", err)
		}
	})
}

func TestE2EUserIDEscaping(t *testing.T) {
	a := startE2E(t, nil, e2eOptions())
	for _, user := range []string{`a b/ü`, `al"ice<&>\`, "日本", strings.Repeat("u", 128)} {
		t.Run(user, func(t *testing.T) {
			c := a.dial(t, e2eQueryUser(user))
			m := c.begin()
			uc := server.UserChannel(user)
			if m.str("channel") != uc {
				t.Fatalf("BEGIN %s, want channel %q", m.raw, uc)
			}
			if strings.Contains(m.raw, `\u003c`) || strings.Contains(m.raw, `\u0026`) {
				t.Errorf("HTML-escaped frame %s", m.raw)
			}
			u := a.publish(uc, "dm", `"x"`)
			f := c.nextMsg()
			if f.sys() != 8 || f.str("channel") != uc || f.str("uid") != u.String() {
				t.Fatalf("FEED %s, want channel %q uid %s", f.raw, uc, u)
			}
			if err := a.srv.TellUser(e2eCtx(t), user, "note", json.RawMessage(`1`)); err != nil {
				t.Fatal(err)
			}
			c.expectExact(`{"sys":6,"topic":"note","msg":1}`)
		})
	}
}

// e2eQueryUser is the query string naming user.
func e2eQueryUser(user string) string { return url.Values{"user": {user}}.Encode() }

// TestE2EBootRightAfterUpgrade: BootUser boots every socket of the user
// (SERVER-API.md), including one whose upgrade has just completed. The
// server answers the upgrade before it registers the socket, so a boot (or
// a broadcast, a tell) arriving in between misses it and the booted user
// stays connected.
func TestE2EBootRightAfterUpgrade(t *testing.T) {
	const n = 200
	o := e2eOptions()
	o.BootGrace = 100 * time.Millisecond
	a := startE2E(t, nil, o)
	conns := make([]*e2eConn, n)
	for i := range conns {
		user := fmt.Sprintf("u%d", i)
		conns[i] = a.dial(t, "user="+user)
		if err := a.srv.BootUser(e2eCtx(t), user, "kicked"); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(5 * time.Second) // every BOOT is due by then
	var missed []int
	for i, c := range conns {
		f, ok := c.NextFrame(time.Until(deadline))
		if ok && string(f.Data) == `{"sys":9,"reason":"kicked"}` {
			continue
		}
		if !ok && c.CloseCode() == 4001 {
			continue
		}
		missed = append(missed, i)
		deadline = time.Now().Add(100 * time.Millisecond) // the rest are late already
	}
	if len(missed) > 0 {
		t.Fatalf("%d of %d sockets booted right after their upgrade got no BOOT (e.g. socket %d)", len(missed), n, missed[0])
	}
}
