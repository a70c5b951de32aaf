package client_test

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sss-go/sss/client"
	"github.com/sss-go/sss/internal/testutil"
	"github.com/sss-go/sss/protocol"
	"github.com/sss-go/sss/server"
)

// TestAsksRacingDrop: asks in flight when the connection drops fail at
// once with ErrConnectionLost (not after their context's deadline), and the
// client works again after reconnecting.
func TestAsksRacingDrop(t *testing.T) {
	testutil.CheckLeaks(t)
	s := startServer(t, nil, serverOpts())
	const n = 20
	var started atomic.Int32
	allIn := make(chan struct{})
	release := make(chan struct{})
	s.srv.HandleAsk("slow", func(ctx context.Context, sock *server.Socket, msg json.RawMessage) (any, error) {
		if started.Add(1) == n {
			close(allIn)
		}
		select {
		case <-release:
		case <-ctx.Done():
		}
		return "late", nil
	})
	s.srv.HandleAsk("fast", func(ctx context.Context, sock *server.Socket, msg json.RawMessage) (any, error) {
		return "ok", nil
	})
	defer close(release)
	px := testutil.NewProxy(t, s.addr)
	c := dial(t, "ws://"+px.Addr+"/", clientOpts())

	// A long deadline: failing at once must not depend on it.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		go func() { errs <- c.Ask(ctx, "slow", i, nil) }()
	}
	recv(t, allIn, "asks at the server")
	start := time.Now()
	px.CutAll()
	for i := 0; i < n; i++ {
		if err := recv(t, errs, "ask result"); !errors.Is(err, client.ErrConnectionLost) {
			t.Errorf("ask %d: %v, want ErrConnectionLost", i, err)
		}
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("asks failed after %v", d)
	}
	// Asks made while reconnecting wait for the new connection.
	var got string
	if err := c.Ask(ctx, "fast", nil, &got); err != nil || got != "ok" {
		t.Fatalf("ask after reconnect: %q %v", got, err)
	}
	if c.Stats().Reconnects < 1 {
		t.Errorf("stats %+v: no reconnection", c.Stats())
	}
}

// TestFailover: with the first URL dead, Dial lands on the second; when
// that server goes away, the client moves to another URL of the list.
func TestFailover(t *testing.T) {
	testutil.CheckLeaks(t)
	a := startServer(t, nil, serverOpts())
	b := startServer(t, nil, serverOpts())
	dead := "ws://" + deadAddr(t) + "/"
	co := clientOpts()
	co.URLs = []string{a.url(""), dead, b.url("")}
	c := dial(t, dead, co)
	if n := a.srv.Stats().Sockets; n != 1 {
		t.Fatalf("server a has %d sockets, want 1 (failover from the dead URL)", n)
	}
	if _, err := c.Subscribe(ctxT(t), "room", nil); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if err := a.srv.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, wait, func() bool { return b.srv.Stats().Sockets == 1 && c.Status() == client.StatusReady }, "client on server b")
	if chs := b.srv.Channels(); len(chs) != 1 || chs[0] != "room" {
		t.Errorf("server b channels %v, want [room] (resubscribed by SYNC)", chs)
	}
	t.Run("SelectURL", func(t *testing.T) {
		var attempts []int
		var mu sync.Mutex
		co := clientOpts()
		co.SelectURL = func(attempt int) string {
			mu.Lock()
			attempts = append(attempts, attempt)
			mu.Unlock()
			if attempt < 2 {
				return dead
			}
			return b.url("")
		}
		dial(t, "", co)
		mu.Lock()
		defer mu.Unlock()
		if len(attempts) != 3 || attempts[2] != 2 {
			t.Errorf("SelectURL attempts %v, want [0 1 2]", attempts)
		}
	})
}

// TestHeartbeatLost: the server's heartbeats stop arriving (the network
// silently drops everything); the client closes with 4100, reconnects and
// recovers what it missed.
func TestHeartbeatLost(t *testing.T) {
	testutil.CheckLeaks(t)
	opts := serverOpts()
	opts.HeartbeatInterval = 200 * time.Millisecond
	opts.HeartbeatThreshold = 300 * time.Millisecond
	s := startServer(t, nil, opts)
	px := testutil.NewProxy(t, s.addr)
	log := newStatusLog()
	co := clientOpts()
	co.Setup = func(c *client.Client) { c.OnStatusChange(log.fn) }
	// A reconnection attempt made while the network drops everything
	// hangs until this timeout.
	co.HandshakeTimeout = 2 * time.Second
	c := dial(t, "ws://"+px.Addr+"/", co)
	ctx := ctxT(t)
	sub, err := c.Subscribe(ctx, "count", nil)
	if err != nil {
		t.Fatal(err)
	}
	got := newNumbers()
	sub.On("n", got.on)
	publish := func(from, to int) {
		for i := from; i <= to; i++ {
			if _, err := s.srv.Publish(ctx, "count", "n", i, server.PublishOptions{}); err != nil {
				t.Fatal(err)
			}
		}
	}
	publish(1, 5)
	got.waitLen(t, 5)
	// Several heartbeats pass while the connection is healthy.
	time.Sleep(700 * time.Millisecond) // lets heartbeats flow; not used for synchronisation
	if s := c.Status(); s != client.StatusReady {
		t.Fatalf("status %v while heartbeats flow", s)
	}
	px.Blackhole(true)
	publish(6, 20) // lost in the black hole
	log.waitFor(t, client.StatusDroppedRetrying)
	px.Blackhole(false)
	log.waitFor(t, client.StatusReady)
	publish(21, 25)
	got.waitLen(t, 25)
	got.checkExactlyOnce(t, 25)
	if c.Stats().Recovered < 15 {
		t.Errorf("stats %+v, want Recovered >= 15", c.Stats())
	}
}

// TestResyncRefused: after a reconnection the subscription parser refuses
// a channel: its subscription ends SubRefused with the server's error,
// while the others recover.
func TestResyncRefused(t *testing.T) {
	testutil.CheckLeaks(t)
	var closed atomic.Bool
	opts := serverOpts()
	opts.SubscriptionParser = func(ctx context.Context, sock *server.Socket, channel string, query json.RawMessage) (*server.ChannelOptions, error) {
		if channel == "vip" && closed.Load() {
			return nil, &protocol.Error{Name: "Closed", Message: "vip room closed", Code: "room_closed"}
		}
		return nil, nil
	}
	s := startServer(t, nil, opts)
	px := testutil.NewProxy(t, s.addr)
	c := dial(t, "ws://"+px.Addr+"/", clientOpts())
	ctx := ctxT(t)
	vip, err := c.Subscribe(ctx, "vip", nil)
	if err != nil {
		t.Fatal(err)
	}
	lobby, err := c.Subscribe(ctx, "lobby", nil)
	if err != nil {
		t.Fatal(err)
	}
	refused := make(chan error, 4)
	vip.OnStatusChange(func(st, old client.SubStatus, err error) {
		if st == client.SubRefused {
			refused <- err
		}
	})
	closed.Store(true)
	px.CutAll()
	err = recv(t, refused, "refusal")
	var perr *protocol.Error
	if !errors.Is(err, client.ErrSubscriptionRefused) || !errors.As(err, &perr) || perr.Code != "room_closed" {
		t.Errorf("refusal error %v", err)
	}
	waitStatus(t, c, ready, "ready")
	if lobby.Status() != client.SubActive || vip.Status() != client.SubRefused {
		t.Errorf("lobby %v vip %v, want active and refused", lobby.Status(), vip.Status())
	}
	if c.Stats().Refused != 1 {
		t.Errorf("stats %+v", c.Stats())
	}
	// The refused channel is not re-sent in later SYNCs, and a new
	// Subscribe asks the server again.
	if _, err := c.Subscribe(ctx, "vip", nil); !errors.Is(err, client.ErrSubscriptionRefused) {
		t.Errorf("Subscribe vip again = %v", err)
	}
}

// TestCloseWhileReconnecting: Close during backoff returns promptly, ends
// in StatusClosed, and the client does not connect again.
func TestCloseWhileReconnecting(t *testing.T) {
	testutil.CheckLeaks(t)
	s := startServer(t, nil, serverOpts())
	px := testutil.NewProxy(t, s.addr)
	co := clientOpts()
	co.ReconnectBase = 200 * time.Millisecond
	co.ReconnectCap = time.Second
	c := dial(t, "ws://"+px.Addr+"/", co)
	sub, err := c.Subscribe(ctxT(t), "room", nil)
	if err != nil {
		t.Fatal(err)
	}
	px.Pause()
	px.CutAll()
	waitStatus(t, c, notReady, "drop noticed")
	asked := make(chan error, 1)
	go func() { asked <- c.Ask(context.Background(), "x", nil, nil) }() // waits for ready
	start := time.Now()
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Close took %v", d)
	}
	<-c.Done()
	if err := recv(t, asked, "waiting ask"); !errors.Is(err, client.ErrClosed) {
		t.Errorf("waiting Ask = %v, want ErrClosed", err)
	}
	if c.Status() != client.StatusClosed || sub.Status() != client.SubClosed {
		t.Errorf("status %v, sub %v", c.Status(), sub.Status())
	}
	px.Resume()
	testutil.WaitFor(t, wait, func() bool { return s.srv.Stats().Sockets == 0 }, "no socket left")
}

// TestReconnectGivesUp: ReconnectAttempts bounds a reconnection;
// DisableReconnect makes a drop final.
func TestReconnectGivesUp(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts func(*client.Options)
	}{
		{"attempts", func(o *client.Options) { o.ReconnectAttempts = 3 }},
		{"disabled", func(o *client.Options) { o.DisableReconnect = true }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			testutil.CheckLeaks(t)
			s := startServer(t, nil, serverOpts())
			px := testutil.NewProxy(t, s.addr)
			co := clientOpts()
			tc.opts(&co)
			c := dial(t, "ws://"+px.Addr+"/", co)
			sub, err := c.Subscribe(ctxT(t), "room", nil)
			if err != nil {
				t.Fatal(err)
			}
			px.Pause()
			px.CutAll()
			select {
			case <-c.Done():
			case <-time.After(wait):
				t.Fatal("client did not give up")
			}
			if c.Status() != client.StatusReconnectFailed || !errors.Is(c.Err(), client.ErrReconnectFailed) {
				t.Errorf("status %v err %v", c.Status(), c.Err())
			}
			if sub.Status() != client.SubReconnectFailed {
				t.Errorf("sub status %v", sub.Status())
			}
		})
	}
}

// TestBootChannel: server.BootChannel ends the channel's subscriptions
// (SubUnsubscribed, ErrChannelBooted), and the channel is not
// re-synchronised after a reconnection.
func TestBootChannel(t *testing.T) {
	testutil.CheckLeaks(t)
	s := startServer(t, nil, serverOpts())
	px := testutil.NewProxy(t, s.addr)
	c := dial(t, "ws://"+px.Addr+"/", clientOpts())
	ctx := ctxT(t)
	gone, err := c.Subscribe(ctx, "gone", nil)
	if err != nil {
		t.Fatal(err)
	}
	kept, err := c.Subscribe(ctx, "kept", nil)
	if err != nil {
		t.Fatal(err)
	}
	ended := make(chan error, 2)
	gone.OnStatusChange(func(st, old client.SubStatus, err error) {
		if st == client.SubUnsubscribed {
			ended <- err
		}
	})
	if err := s.srv.BootChannel(ctx, "gone"); err != nil {
		t.Fatal(err)
	}
	if err := recv(t, ended, "channel boot"); !errors.Is(err, client.ErrChannelBooted) {
		t.Errorf("status error %v, want ErrChannelBooted", err)
	}
	px.CutAll()
	testutil.WaitFor(t, wait, func() bool { return c.Stats().Reconnects == 1 && c.Status() == client.StatusReady }, "reconnection")
	if chs := s.srv.Channels(); len(chs) != 1 || chs[0] != "kept" {
		t.Errorf("server channels %v after resync, want [kept]", chs)
	}
	if kept.Status() != client.SubActive {
		t.Errorf("kept status %v", kept.Status())
	}
}

// TestSubscribeAbandoned: a Subscribe whose context ends before the reply
// leaves no server subscription behind once the reply comes.
func TestSubscribeAbandoned(t *testing.T) {
	testutil.CheckLeaks(t)
	entered := make(chan struct{}, 1)
	release := make(chan struct{})
	opts := serverOpts()
	opts.SubscriptionParser = func(ctx context.Context, sock *server.Socket, channel string, query json.RawMessage) (*server.ChannelOptions, error) {
		if channel == "slow" {
			entered <- struct{}{}
			<-release
		}
		return nil, nil
	}
	unsubscribed := make(chan string, 4)
	opts.OnUnsubscribe = func(sock *server.Socket, channel string) { unsubscribed <- channel }
	s := startServer(t, nil, opts)
	c := dial(t, s.url(""), clientOpts())
	sctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		_, err := c.Subscribe(sctx, "slow", nil)
		errc <- err
	}()
	recv(t, entered, "parser")
	cancel()
	if err := recv(t, errc, "Subscribe"); !errors.Is(err, context.Canceled) {
		t.Fatalf("Subscribe = %v, want context.Canceled", err)
	}
	close(release)
	// The late grant is undone by an UNSUBSCRIBE.
	if ch := recv(t, unsubscribed, "unsubscribe of the late grant"); ch != "slow" {
		t.Errorf("server unsubscribed %q", ch)
	}
	testutil.WaitFor(t, wait, func() bool { return len(s.srv.Channels()) == 0 }, "no channel left")
	sub, err := c.Subscribe(ctxT(t), "other", nil)
	if err != nil || sub.Status() != client.SubActive {
		t.Fatalf("Subscribe after abandon: %v", err)
	}
}

// TestConcurrentUseUnderDrops: many goroutines ask, tell, subscribe and
// unsubscribe while the connection is cut again and again. Run with -race;
// the only error allowed is ErrConnectionLost, and afterwards the server
// holds exactly the channels the client still holds.
func TestConcurrentUseUnderDrops(t *testing.T) {
	testutil.CheckLeaks(t)
	s := startServer(t, nil, serverOpts())
	s.srv.HandleAsk("echo", func(ctx context.Context, sock *server.Socket, msg json.RawMessage) (any, error) {
		return msg, nil
	})
	s.srv.HandleTell("note", func(ctx context.Context, sock *server.Socket, msg json.RawMessage) {})
	px := testutil.NewProxy(t, s.addr)
	c := dial(t, "ws://"+px.Addr+"/", clientOpts())
	ctx := ctxT(t)

	const workers, rounds = 6, 60
	var ok, lost atomic.Int64
	var wg sync.WaitGroup
	held := make([]*client.Subscription, workers)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			check := func(err error) bool {
				switch {
				case err == nil:
					ok.Add(1)
					return true
				case errors.Is(err, client.ErrConnectionLost):
					lost.Add(1)
				default:
					t.Errorf("worker %d: %v", w, err)
				}
				return false
			}
			for i := 0; i < rounds; i++ {
				var n int
				if check(c.Ask(ctx, "echo", i, &n)) && n != i {
					t.Errorf("echo %d returned %d", i, n)
				}
				check(c.Tell(ctx, "note", i))
				name := []string{"a", "b", "c"}[(w+i)%3]
				sub, err := c.Subscribe(ctx, name, nil)
				if check(err) {
					if held[w] != nil {
						held[w].Unsubscribe()
					}
					held[w] = sub
				}
			}
		}()
	}
	for i := 0; i < 5; i++ {
		px.CutAll()
		testutil.WaitFor(t, wait, func() bool { return c.Stats().Reconnects >= uint64(i+1) }, "reconnection")
	}
	wg.Wait()
	if ok.Load() == 0 {
		t.Fatal("no call succeeded")
	}
	waitStatus(t, c, ready, "ready")
	want := map[string]bool{}
	for _, sub := range held {
		if sub != nil && !sub.Status().Final() {
			want[sub.Channel()] = true
		}
	}
	testutil.WaitFor(t, wait, func() bool {
		chs := s.srv.Channels()
		if len(chs) != len(want) {
			return false
		}
		for _, ch := range chs {
			if !want[ch] {
				return false
			}
		}
		return true
	}, "server channels to match the client's")
	t.Logf("%d calls succeeded, %d lost to drops", ok.Load(), lost.Load())
}
