package scalertest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"testing"
	"time"

	"github.com/sss-go/sss/scaler"
)

func testControl(t *testing.T, f Factory) {
	ns := nodes(t, f, 3)
	require(t, ns, capControl)
	send := func(nd *node, c scaler.Control) {
		t.Helper()
		if err := nd.cp.Control(ctx(t), c); err != nil {
			t.Fatalf("%s: control: %v", nd.name, err)
		}
	}
	send(ns[0], scaler.Control{Kind: scaler.ControlBroadcast, Topic: "news", Msg: json.RawMessage(`{"from":"A"}`)})
	send(ns[1], scaler.Control{Kind: scaler.ControlJoin, Target: "room", Member: &scaler.Member{ID: "s1", User: "u1"}})
	for _, nd := range ns[:2] {
		send(nd, scaler.Control{Kind: scaler.ControlBootSocket, Target: "last-" + nd.name})
	}
	// Controls are not ordered across senders: wait for all four.
	for _, nd := range ns {
		nd.r.wait(t, nd.name+" to receive the four control messages", func() bool {
			kinds := map[scaler.ControlKind]int{}
			for _, c := range nd.r.controls {
				kinds[c.Kind]++
			}
			return kinds[scaler.ControlBroadcast] >= 1 && kinds[scaler.ControlJoin] >= 1 && kinds[scaler.ControlBootSocket] >= 2
		})
	}
	for _, nd := range ns {
		nd.r.mu.Lock()
		got := append([]scaler.Control(nil), nd.r.controls...)
		nd.r.mu.Unlock()
		if len(got) != 4 {
			t.Errorf("%s received %d control messages, want 4 (each once): %+v", nd.name, len(got), got)
		}
		var sawBroadcast, sawJoin bool
		for _, c := range got {
			switch c.Kind {
			case scaler.ControlBroadcast:
				sawBroadcast = true
				if c.Origin != ns[0].id() || c.Topic != "news" || string(c.Msg) != `{"from":"A"}` {
					t.Errorf("%s: broadcast = %+v, want origin %q topic news", nd.name, c, ns[0].id())
				}
			case scaler.ControlJoin:
				sawJoin = true
				if c.Origin != ns[1].id() || c.Target != "room" || c.Member == nil || c.Member.ID != "s1" || c.Member.User != "u1" {
					t.Errorf("%s: join = %+v, want origin %q, member s1/u1", nd.name, c, ns[1].id())
				}
			}
		}
		if !sawBroadcast || !sawJoin {
			t.Errorf("%s: broadcast seen %v, join seen %v; want both", nd.name, sawBroadcast, sawJoin)
		}
	}
}

// memberIDs returns the sorted ids of ms.
func memberIDs(ms []scaler.Member) []string {
	out := make([]string, len(ms))
	for i, m := range ms {
		out[i] = m.ID
	}
	slices.Sort(out)
	return out
}

// expectPresence returns "" when every node sees exactly ids on ch
// (Presence and Count), else what differs.
func expectPresence(t *testing.T, ns []*node, ch string, ids ...string) string {
	slices.Sort(ids)
	for _, nd := range ns {
		ms, err := nd.ps.Presence(ctx(t), ch)
		if err != nil {
			return fmt.Sprintf("%s: Presence: %v", nd.name, err)
		}
		if got := memberIDs(ms); !slices.Equal(got, ids) {
			return fmt.Sprintf("%s: Presence(%q) = %v, want %v", nd.name, ch, got, ids)
		}
		n, err := nd.ps.Count(ctx(t), ch)
		if err != nil || n != len(ids) {
			return fmt.Sprintf("%s: Count(%q) = %d, %v; want %d", nd.name, ch, n, err, len(ids))
		}
	}
	return ""
}

func testPresence(t *testing.T, f Factory) {
	const ch = "presence"
	ns := nodes(t, f, 2)
	require(t, ns, capPresence)
	a, b := ns[0], ns[1]
	if ms, err := b.ps.Presence(ctx(t), ch); err != nil || len(ms) != 0 {
		t.Fatalf("Presence of an empty channel = %v, %v", ms, err)
	}
	join := func(nd *node, m scaler.Member) {
		t.Helper()
		if err := nd.ps.Join(ctx(t), ch, m); err != nil {
			t.Fatalf("%s: join: %v", nd.name, err)
		}
	}
	join(a, scaler.Member{ID: "a1", User: "ua", Info: json.RawMessage(`{"v":1}`)})
	join(a, scaler.Member{ID: "a2"})
	join(b, scaler.Member{ID: "b1", User: "ub"})
	pollUntil(t, "three members everywhere", func() string { return expectPresence(t, ns, ch, "a1", "a2", "b1") })
	// Joining again with the same id replaces the entry.
	join(a, scaler.Member{ID: "a1", User: "ua", Info: json.RawMessage(`{"v":2}`)})
	pollUntil(t, "a1's new info on B", func() string {
		ms, err := b.ps.Presence(ctx(t), ch)
		if err != nil {
			return err.Error()
		}
		for _, m := range ms {
			if m.ID == "a1" {
				if m.User != "ua" || !jsonEqual(m.Info, `{"v":2}`) {
					return fmt.Sprintf("a1 = %+v, want user ua info {\"v\":2}", m)
				}
				return ""
			}
		}
		return "a1 missing"
	})
	if msg := expectPresence(t, ns, ch, "a1", "a2", "b1"); msg != "" {
		t.Fatalf("after re-join: %s", msg)
	}
	if err := a.ps.Leave(ctx(t), ch, "a2"); err != nil {
		t.Fatal(err)
	}
	pollUntil(t, "a2 gone everywhere", func() string { return expectPresence(t, ns, ch, "a1", "b1") })
	if err := a.ps.Leave(ctx(t), ch, "nobody"); err != nil {
		t.Fatalf("Leave of an unknown member: %v", err)
	}
	if msg := expectPresence(t, ns, "presence-other", []string{}...); msg != "" {
		t.Fatal(msg)
	}
}

func jsonEqual(raw json.RawMessage, want string) bool {
	var a, b any
	if json.Unmarshal(raw, &a) != nil || json.Unmarshal([]byte(want), &b) != nil {
		return false
	}
	return fmt.Sprint(a) == fmt.Sprint(b)
}

// expectUsers returns "" when every node's UserInstances(user) is want.
func expectUsers(t *testing.T, ns []*node, user string, want ...string) string {
	slices.Sort(want)
	for _, nd := range ns {
		got, err := nd.ur.UserInstances(ctx(t), user)
		if err != nil {
			return fmt.Sprintf("%s: UserInstances: %v", nd.name, err)
		}
		got = slices.Clone(got)
		slices.Sort(got)
		if !slices.Equal(got, want) {
			return fmt.Sprintf("%s: UserInstances(%q) = %v, want %v", nd.name, user, got, want)
		}
	}
	return ""
}

func testUsers(t *testing.T, f Factory) {
	ns := nodes(t, f, 2)
	require(t, ns, capUsers)
	a, b := ns[0], ns[1]
	do := func(nd *node, add bool, user string) {
		t.Helper()
		var err error
		if add {
			err = nd.ur.AddUser(ctx(t), user)
		} else {
			err = nd.ur.RemoveUser(ctx(t), user)
		}
		if err != nil {
			t.Fatalf("%s: %v", nd.name, err)
		}
	}
	if msg := expectUsers(t, ns, "u"); msg != "" {
		t.Fatal(msg)
	}
	do(a, true, "u")
	do(a, true, "u")
	do(b, true, "u")
	do(b, true, "v")
	pollUntil(t, "u on A and B", func() string { return expectUsers(t, ns, "u", a.id(), b.id()) })
	do(a, false, "u") // one of A's two sockets: still there
	do(b, false, "u")
	pollUntil(t, "u on A only", func() string { return expectUsers(t, ns, "u", a.id()) })
	do(a, false, "u")
	pollUntil(t, "u nowhere", func() string { return expectUsers(t, ns, "u") })
	if msg := expectUsers(t, ns, "v", b.id()); msg != "" {
		t.Fatal(msg)
	}
}

func testHealth(t *testing.T, f Factory) {
	ns := nodes(t, f, 2)
	for _, nd := range ns {
		pollUntil(t, nd.name+" healthy", func() string {
			if err := nd.s.Health(ctx(t)); err != nil {
				return err.Error()
			}
			return ""
		})
	}
}

func testClose(t *testing.T, f Factory) {
	const ch = "close"
	ns := nodes(t, f, 2)
	a, b := ns[0], ns[1]
	pos := a.subscribe(t, ch)
	b.subscribe(t, ch)
	if a.ps != nil {
		if err := a.ps.Join(ctx(t), ch, scaler.Member{ID: "a1"}); err != nil {
			t.Fatal(err)
		}
	}
	if a.ur != nil {
		if err := a.ur.AddUser(ctx(t), "ua"); err != nil {
			t.Fatal(err)
		}
		pollUntil(t, "A's user entry", func() string { return expectUsers(t, ns, "ua", a.id()) })
	}
	a.publish(t, ch, `1`)
	closeCtx, cancel := context.WithTimeout(context.Background(), waitBound)
	defer cancel()
	if err := a.s.Close(closeCtx); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := a.s.Close(closeCtx); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	closed := []struct {
		name string
		call func() error
	}{
		{"Publish", func() error {
			_, err := a.s.Publish(ctx(t), ch, "t", json.RawMessage(`1`), scaler.PublishOptions{})
			return err
		}},
		{"Subscribe", func() error { _, err := a.s.Subscribe(ctx(t), ch); return err }},
		{"Since", func() error { _, err := a.s.Since(ctx(t), ch, pos, 0); return err }},
		{"Health", func() error { return a.s.Health(ctx(t)) }},
	}
	if a.cp != nil {
		closed = append(closed, struct {
			name string
			call func() error
		}{"Control", func() error { return a.cp.Control(ctx(t), scaler.Control{Kind: scaler.ControlBroadcast}) }})
	}
	if a.ps != nil {
		closed = append(closed, struct {
			name string
			call func() error
		}{"Join", func() error { return a.ps.Join(ctx(t), ch, scaler.Member{ID: "a2"}) }})
	}
	for _, tc := range closed {
		t.Run("after close/"+tc.name, func(t *testing.T) {
			if err := tc.call(); !errors.Is(err, scaler.ErrClosed) {
				t.Fatalf("%s after Close = %v, want ErrClosed", tc.name, err)
			}
		})
	}
	// The closed instance's presence and user entries vanished.
	pollUntil(t, "A's member and user gone", func() string {
		if a.ps != nil {
			if msg := expectPresence(t, ns[1:], ch); msg != "" {
				return msg
			}
		}
		if a.ur == nil {
			return ""
		}
		return expectUsers(t, ns[1:], "ua")
	})
	// B still works.
	u := b.publish(t, ch, `2`)
	b.r.waitSeq(t, b.name, ch, u)

	cancelled, cancelNow := context.WithCancel(context.Background())
	cancelNow()
	calls := []struct {
		name string
		call func() error
	}{
		{"Publish", func() error {
			_, err := b.s.Publish(cancelled, ch, "t", json.RawMessage(`1`), scaler.PublishOptions{})
			return err
		}},
		{"Since", func() error { _, err := b.s.Since(cancelled, ch, u, 0); return err }},
		{"Subscribe", func() error { _, err := b.s.Subscribe(cancelled, "close-2"); return err }},
	}
	for _, tc := range calls {
		t.Run("cancelled/"+tc.name, func(t *testing.T) {
			if err := tc.call(); err == nil {
				t.Fatalf("%s with a cancelled context succeeded", tc.name)
			}
		})
	}
	if p, err := b.s.Position(ctx(t), ch); err != nil || p != u {
		t.Fatalf("a publish with a cancelled context was stored: position %v (%v), want %v", p, err, u)
	}
}

func testNoLeak(t *testing.T, f Factory) {
	mk := f(t)
	before := runtime.NumGoroutine()
	func() {
		a := startNode(t, mk, "A")
		b := startNode(t, mk, "B")
		a.subscribe(t, "leak")
		b.subscribe(t, "leak")
		if a.ps != nil {
			if err := a.ps.Join(ctx(t), "leak", scaler.Member{ID: "m"}); err != nil {
				t.Fatal(err)
			}
		}
		fence(t, b, "leak", a, b)
		for _, nd := range []*node{a, b} {
			cctx, cancel := context.WithTimeout(context.Background(), waitBound)
			err := nd.s.Close(cctx)
			cancel()
			if err != nil {
				t.Fatalf("close %s: %v", nd.name, err)
			}
		}
	}()
	deadline := time.Now().Add(10 * time.Second)
	for {
		n := runtime.NumGoroutine()
		if n <= before {
			return
		}
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			buf = buf[:runtime.Stack(buf, true)]
			t.Fatalf("%d goroutines before the instances, %d after closing them:\n%s", before, n, buf)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
