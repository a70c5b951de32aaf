package server_test

// The control plane over real WebSockets: broadcasts, boots and tells from
// a Server and from a Publisher (docs/protocol.md, "5.7 BROADCAST", "5.9
// Removal from a channel", "6.2 TELL", "9.3 BOOT").

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/sss-go/sss/internal/testutil"
	"github.com/sss-go/sss/protocol"
	"github.com/sss-go/sss/scaler"
	"github.com/sss-go/sss/server"
)

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

// TestE2EBootRightAfterUpgrade: BootUser boots every socket of the user
// (see Server.BootUser), including one whose upgrade has just completed. The
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

func TestE2EPublisher(t *testing.T) {
	be := scaler.NewMemoryBackend(scaler.MemoryOptions{Logger: e2eLogger()})
	a := startE2E(t, be.Instance(), e2eOptions())
	psc := be.Instance()
	p, err := server.NewPublisher(psc, server.PublisherOptions{Logger: e2eLogger()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = p.Close(context.Background())
		_ = psc.Close(context.Background())
	})
	c := a.dial(t, "user=alice")
	c.begin()
	pos := c.subscribe("jobs")
	ctx := e2eCtx(t)
	u, err := p.Publish(ctx, "jobs", "done", json.RawMessage(`{"job":1}`), server.PublishOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if u.Seq != pos.Seq+1 {
		t.Fatalf("uid %s after %s", u, pos)
	}
	c.expectFeed("jobs", "done", `{"job":1}`, u)
	// A Publisher has no sockets to exclude, and a Server excludes only
	// its own: both are refused, and nothing is published.
	var sock *server.Socket
	a.srv.HandleAsk("grab", func(ctx context.Context, s *server.Socket, msg json.RawMessage) (any, error) {
		sock = s
		return nil, nil
	})
	c.ask("grab", "1")
	if _, err := p.Publish(ctx, "jobs", "done", 2, server.PublishOptions{Exclude: sock}); !errors.Is(err, server.ErrBadOptions) {
		t.Errorf("Publisher.Publish with Exclude = %v, want ErrBadOptions", err)
	}
	other := startE2E(t, be.Instance(), e2eOptions())
	if _, err := other.srv.Publish(ctx, "jobs", "done", 3, server.PublishOptions{Exclude: sock}); !errors.Is(err, server.ErrBadOptions) {
		t.Errorf("Server.Publish excluding another server's socket = %v, want ErrBadOptions", err)
	}
	if err := p.TellUser(ctx, "alice", "hey", json.RawMessage(`1`)); err != nil {
		t.Fatal(err)
	}
	c.expectExact(`{"sys":6,"topic":"hey","msg":1}`)
	if err := p.Broadcast(ctx, "all", json.RawMessage(`2`)); err != nil {
		t.Fatal(err)
	}
	c.expectExact(`{"sys":11,"topic":"all","msg":2}`)
	sess := a.dial(t, "session=worker-s")
	sess.begin()
	if err := p.TellSession(ctx, "worker-s", "t", 3); err != nil {
		t.Fatal(err)
	}
	sess.expectExact(`{"sys":6,"topic":"t","msg":3}`)
	if err := p.TellSocket(ctx, sess.whoami(), "t", 4); err != nil {
		t.Fatal(err)
	}
	sess.expectExact(`{"sys":6,"topic":"t","msg":4}`)
	if err := p.BootChannel(ctx, "jobs"); err != nil {
		t.Fatal(err)
	}
	c.expectExact(`{"err":{"name":"ChannelBooted","message":"removed from channel jobs","code":"channel_booted","channel":"jobs"}}`)
	testutil.WaitFor(t, e2eTimeout, func() bool {
		chs := a.srv.Channels()
		return len(chs) == 1 && chs[0] == "_user.alice"
	}, "jobs vacated")
	if _, err := p.Publish(ctx, "_reserved", "m", 1, server.PublishOptions{}); !errors.Is(err, server.ErrBadChannel) {
		t.Errorf("Publisher.Publish to a reserved channel: %v, want ErrBadChannel", err)
	}
	if err := p.BootUser(ctx, "alice", "worker says bye"); err != nil {
		t.Fatal(err)
	}
	c.expectExact(`{"sys":9,"reason":"worker says bye"}`)
	if r := c.ExpectClose(protocol.CloseBooted); r != "worker says bye" {
		t.Errorf("close reason %q", r)
	}
	for i := 0; i < 2; i++ { // Close is idempotent
		if err := p.Close(ctx); err != nil {
			t.Fatalf("Close #%d: %v", i+1, err)
		}
	}
}
