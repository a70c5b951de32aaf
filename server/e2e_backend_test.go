package server_test

// A backend that stops answering (Redis down, MongoDB unreachable): every
// scaler call made for a socket is bounded by Options.BackendTimeout and
// cancelled when the socket closes; SUBSCRIBE answers "unavailable", SYNC
// and BEGIN close with 1013, and Shutdown completes.

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sss-go/sss/internal/testutil"
	"github.com/sss-go/sss/protocol"
	"github.com/sss-go/sss/scaler"
)

// stallScaler wraps a memory scaler. While stalled, the calls a server
// makes for a socket (subscribe, unsubscribe, position, since, presence,
// users, control) block until their context ends, as with a backend that
// accepts the connection and never answers. Publish is left alone.
type stallScaler struct {
	*scaler.Memory
	mu       sync.Mutex
	stalled  bool
	only     string // when not "", only calls about this channel stall
	inflight atomic.Int64
	entered  chan string   // "op channel" of each call that started stalling
	unblock  chan struct{} // closed at cleanup, releasing calls nothing bounded
}

// newStallScaler returns a healthy stallScaler. At cleanup it fails the
// test if a stalled call is still blocked (nothing bounded it), then
// releases such calls so the test ends.
func newStallScaler(t *testing.T) *stallScaler {
	s := &stallScaler{
		Memory:  scaler.NewMemory(scaler.MemoryOptions{Logger: e2eLogger()}),
		entered: make(chan string, 256),
		unblock: make(chan struct{}),
	}
	t.Cleanup(func() { close(s.unblock) })
	return s
}

// checkBounded is registered after startE2E, so it runs before the
// server's shutdown: stalls stop, and every call already stalled must end
// by itself.
func (s *stallScaler) checkBounded(t *testing.T) {
	t.Cleanup(func() {
		s.stall(false, "")
		deadline := time.Now().Add(10 * time.Second)
		for s.inflight.Load() > 0 && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond) // polling interval, not synchronisation
		}
		if n := s.inflight.Load(); n > 0 {
			t.Errorf("%d scaler call(s) still blocked 10 s after the test: not bounded by BackendTimeout", n)
			s.mu.Lock()
			close(s.unblock)
			s.unblock = make(chan struct{}) // the first cleanup closes this one
			s.mu.Unlock()
		}
	})
}

// stall turns stalling on or off; only, when not "", limits it to calls
// about that channel.
func (s *stallScaler) stall(on bool, only string) {
	s.mu.Lock()
	s.stalled, s.only = on, only
	s.mu.Unlock()
}

func (s *stallScaler) block(ctx context.Context, op, channel string) error {
	s.mu.Lock()
	on := s.stalled && (s.only == "" || s.only == channel)
	unblock := s.unblock
	s.mu.Unlock()
	if !on {
		return nil
	}
	s.inflight.Add(1)
	defer s.inflight.Add(-1)
	select {
	case s.entered <- op + " " + channel:
	default:
	}
	select {
	case <-ctx.Done():
		return fmt.Errorf("stalled %s %q: %w (%v)", op, channel, scaler.ErrUnavailable, ctx.Err())
	case <-unblock:
		return fmt.Errorf("stalled %s %q: released at cleanup: %w", op, channel, scaler.ErrUnavailable)
	}
}

// waitEntered waits until a call of op on channel is stalled.
func (s *stallScaler) waitEntered(t *testing.T, what string) {
	t.Helper()
	timer := time.NewTimer(e2eTimeout)
	defer timer.Stop()
	for {
		select {
		case got := <-s.entered:
			if got == what {
				return
			}
		case <-timer.C:
			t.Fatalf("no stalled scaler call %q", what)
		}
	}
}

func (s *stallScaler) Subscribe(ctx context.Context, channel string) (protocol.UID, error) {
	if err := s.block(ctx, "subscribe", channel); err != nil {
		return protocol.UID{}, err
	}
	return s.Memory.Subscribe(ctx, channel)
}

func (s *stallScaler) Unsubscribe(ctx context.Context, channel string) error {
	if err := s.block(ctx, "unsubscribe", channel); err != nil {
		return err
	}
	return s.Memory.Unsubscribe(ctx, channel)
}

func (s *stallScaler) Position(ctx context.Context, channel string) (protocol.UID, error) {
	if err := s.block(ctx, "position", channel); err != nil {
		return protocol.UID{}, err
	}
	return s.Memory.Position(ctx, channel)
}

func (s *stallScaler) Since(ctx context.Context, channel string, after protocol.UID, limit int) ([]scaler.Publication, error) {
	if err := s.block(ctx, "since", channel); err != nil {
		return nil, err
	}
	return s.Memory.Since(ctx, channel, after, limit)
}

func (s *stallScaler) Control(ctx context.Context, msg scaler.Control) error {
	if err := s.block(ctx, "control", msg.Target); err != nil {
		return err
	}
	return s.Memory.Control(ctx, msg)
}

func (s *stallScaler) Join(ctx context.Context, channel string, m scaler.Member) error {
	if err := s.block(ctx, "join", channel); err != nil {
		return err
	}
	return s.Memory.Join(ctx, channel, m)
}

func (s *stallScaler) Leave(ctx context.Context, channel, id string) error {
	if err := s.block(ctx, "leave", channel); err != nil {
		return err
	}
	return s.Memory.Leave(ctx, channel, id)
}

func (s *stallScaler) AddUser(ctx context.Context, user string) error {
	if err := s.block(ctx, "adduser", protocol.UserChannel(user)); err != nil {
		return err
	}
	return s.Memory.AddUser(ctx, user)
}

func (s *stallScaler) RemoveUser(ctx context.Context, user string) error {
	if err := s.block(ctx, "removeuser", protocol.UserChannel(user)); err != nil {
		return err
	}
	return s.Memory.RemoveUser(ctx, user)
}

// startStalled starts a server on a healthy stallScaler with the given
// BackendTimeout.
func startStalled(t *testing.T, timeout time.Duration) (*e2eApp, *stallScaler) {
	t.Helper()
	sc := newStallScaler(t)
	o := e2eOptions()
	o.BackendTimeout = timeout
	a := startE2E(t, sc, o)
	sc.checkBounded(t)
	return a, sc
}

// backendBound is how long a reply may take with a 300 ms BackendTimeout:
// a failure bound for a loaded machine, far below "never".
const backendBound = 10 * time.Second

func TestBackendDownSubscribeUnavailable(t *testing.T) {
	testutil.CheckLeaks(t)
	a, sc := startStalled(t, 300*time.Millisecond)
	c := a.dial(t, "")
	c.subscribe("warm")
	sc.stall(true, "")
	start := time.Now()
	m := c.subscribeRaw("fresh", "")
	if string(m.fields["result"]) != "false" || m.errCode() != protocol.CodeUnavailable {
		t.Fatalf("SUBSCRIBE with the backend down: got %s, want result false, code unavailable", m.raw)
	}
	if d := time.Since(start); d > backendBound {
		t.Errorf("SUBSCRIBE answered after %v, want about the 300 ms BackendTimeout", d)
	}
	// The socket goes on: a channel it holds is served locally.
	u := a.publish("warm", "t", `"still here"`)
	c.expectFeed("warm", "t", `"still here"`, u)
	c.expectOpen()
	sc.stall(false, "")
	c.subscribe("fresh")
}

func TestBackendDownSyncCloses1013(t *testing.T) {
	testutil.CheckLeaks(t)
	t.Run("new channel", func(t *testing.T) {
		a, sc := startStalled(t, 300*time.Millisecond)
		c := a.dial(t, "")
		sc.stall(true, "")
		c.Send(e2eSyncFrame(e2eEntry("fresh", `"abc.0"`, "")))
		c.ExpectClose(protocol.CloseTryAgainLater)
	})
	t.Run("no FEED of a channel whose reply was not sent", func(t *testing.T) {
		a, sc := startStalled(t, 300*time.Millisecond)
		w := a.dial(t, "")
		pos := w.subscribe("live") // live here: joining it needs no backend
		c := a.dial(t, "")
		sc.stall(true, "fresh")
		c.Send(e2eSyncFrame(e2eEntry("live", e2eQ(pos), ""), e2eEntry("fresh", `null`, "")))
		sc.waitEntered(t, "subscribe fresh")
		// live is held for c while its SYNC goes on: this FEED is parked.
		u := a.publish("live", "t", "1")
		w.expectFeed("live", "t", "1", u)
		c.ExpectClose(protocol.CloseTryAgainLater)
	})
}

func TestBackendDownBeginCloses1013(t *testing.T) {
	testutil.CheckLeaks(t)
	a, sc := startStalled(t, 300*time.Millisecond)
	sc.stall(true, "")
	c := a.dial(t, "user=ann") // AddUser fails, bounded: the upgrade completes
	c.Send(`{"sys":3}`)
	c.ExpectClose(protocol.CloseTryAgainLater)
	testutil.WaitFor(t, e2eTimeout, func() bool { return a.srv.Stats().Sockets == 0 }, "no socket left")
}

func TestBackendDownClientCloseFreesSocket(t *testing.T) {
	testutil.CheckLeaks(t)
	for _, tc := range []struct {
		name  string
		close func(c *e2eConn)
	}{
		{"close frame", func(c *e2eConn) { c.SendClose(protocol.CloseByClient, "bye") }},
		{"connection dropped", func(c *e2eConn) { c.Drop() }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// A BackendTimeout far beyond the wait below: the socket must
			// be freed by its close, not by the timeout.
			a, sc := startStalled(t, time.Hour)
			c := a.dial(t, "")
			sc.stall(true, "")
			c.Send(`{"sys":1,"channel":"fresh","id":1}`)
			sc.waitEntered(t, "subscribe fresh")
			tc.close(c)
			testutil.WaitFor(t, e2eTimeout, func() bool {
				return a.srv.Stats().Sockets == 0 && sc.inflight.Load() == 0
			}, "the socket freed after its client closed")
		})
	}
}

func TestBackendDownShutdownCompletes(t *testing.T) {
	testutil.CheckLeaks(t)
	a, sc := startStalled(t, 300*time.Millisecond)
	c := a.dial(t, "")
	c.subscribe("held")
	u := a.dial(t, "user=ann")
	u.begin()
	sc.stall(true, "")
	c.Send(`{"sys":1,"channel":"fresh","id":99}`)
	sc.waitEntered(t, "subscribe fresh")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if err := a.srv.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown(3 s) with the backend down: %v", err)
	}
	for _, x := range []*e2eConn{c, u} {
		if code, _ := x.WaitClosed(); code != protocol.CloseGoingAway {
			t.Errorf("closed with %d, want 1001", code)
		}
	}
	if n := sc.inflight.Load(); n != 0 {
		t.Errorf("%d scaler calls still blocked after Shutdown", n)
	}
}

func TestBackendDownJoinWaitersBounded(t *testing.T) {
	testutil.CheckLeaks(t)
	a, sc := startStalled(t, 300*time.Millisecond)
	c1 := a.dial(t, "")
	c2 := a.dial(t, "")
	sc.stall(true, "")
	c1.Send(`{"sys":1,"channel":"x","id":1}`)
	sc.waitEntered(t, "subscribe x")
	// c2 finds x being subscribed and waits for it, bounded the same way.
	m := c2.subscribeRaw("x", "")
	if string(m.fields["result"]) != "false" || m.errCode() != protocol.CodeUnavailable {
		t.Fatalf("second SUBSCRIBE: got %s, want unavailable", m.raw)
	}
	m = c1.nextMsg()
	if m.sys() != 1 || string(m.fields["result"]) != "false" || m.errCode() != protocol.CodeUnavailable {
		t.Fatalf("first SUBSCRIBE: got %s, want unavailable", m.raw)
	}
}
