package client_test

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sss-go/sss/client"
	"github.com/sss-go/sss/internal/testutil"
	"github.com/sss-go/sss/protocol"
	"github.com/sss-go/sss/scaler"
	"github.com/sss-go/sss/server"
)

// numbers records the integers delivered to a subscription, in order.
type numbers struct {
	mu   sync.Mutex
	got  []int
	wake chan struct{}
}

func newNumbers() *numbers { return &numbers{wake: make(chan struct{}, 1)} }

func (n *numbers) on(msg json.RawMessage, uid string) {
	var v int
	_ = json.Unmarshal(msg, &v)
	n.mu.Lock()
	n.got = append(n.got, v)
	n.mu.Unlock()
	select {
	case n.wake <- struct{}{}:
	default:
	}
}

func (n *numbers) snapshot() []int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]int(nil), n.got...)
}

// waitLen waits until at least k numbers arrived.
func (n *numbers) waitLen(t *testing.T, k int) {
	t.Helper()
	deadline := time.After(wait)
	for {
		if len(n.snapshot()) >= k {
			return
		}
		select {
		case <-n.wake:
		case <-deadline:
			t.Fatalf("received %d of %d numbers", len(n.snapshot()), k)
		}
	}
}

// checkExactlyOnce fails unless the numbers are 1..total, each once, in
// order.
func (n *numbers) checkExactlyOnce(t *testing.T, total int) {
	t.Helper()
	got := n.snapshot()
	if len(got) != total {
		t.Fatalf("received %d numbers, want %d", len(got), total)
	}
	for i, v := range got {
		if v != i+1 {
			t.Fatalf("position %d holds %d, want %d (exactly once, in order)", i, v, i+1)
		}
	}
}

// publisher publishes 1, 2, 3, ... on a channel until stopped, paced so
// that an outage of a fraction of a second stays well within MaxRecovery.
type publisher struct {
	n    atomic.Int64 // published so far
	stop chan struct{}
	done chan error
}

func startPublisher(publish func(ctx context.Context, i int) error) *publisher {
	p := &publisher{stop: make(chan struct{}), done: make(chan error, 1)}
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*wait)
		defer cancel()
		for i := 1; ; i++ {
			select {
			case <-p.stop:
				p.done <- nil
				return
			default:
			}
			if err := publish(ctx, i); err != nil {
				p.done <- err
				return
			}
			p.n.Store(int64(i))
			time.Sleep(500 * time.Microsecond) // pacing, not synchronisation
		}
	}()
	return p
}

// finish stops the publisher and returns how many it published.
func (p *publisher) finish(t *testing.T) int {
	t.Helper()
	close(p.stop)
	if err := recv(t, p.done, "publisher"); err != nil {
		t.Fatalf("publish: %v", err)
	}
	return int(p.n.Load())
}

func (p *publisher) waitCount(t *testing.T, k int64, what string) {
	t.Helper()
	testutil.WaitFor(t, wait, func() bool { return p.n.Load() >= k }, what)
}

func waitStatus(t *testing.T, c *client.Client, ok func(client.Status) bool, what string) {
	t.Helper()
	testutil.WaitFor(t, wait, func() bool { return ok(c.Status()) }, what)
}

func notReady(s client.Status) bool { return s != client.StatusReady }
func ready(s client.Status) bool    { return s == client.StatusReady }

// TestRecoveryAfterCut: the TCP connection is cut (and reconnection held
// off) while a publisher runs; the client reconnects, SYNCs, and has every
// number exactly once, in order, with the missed ones recovered.
func TestRecoveryAfterCut(t *testing.T) {
	testutil.CheckLeaks(t)
	s := startServer(t, nil, serverOpts())
	px := testutil.NewProxy(t, s.addr)
	c := dial(t, "ws://"+px.Addr+"/", clientOpts())
	ctx := ctxT(t)
	sub, err := c.Subscribe(ctx, "count", nil)
	if err != nil {
		t.Fatal(err)
	}
	got := newNumbers()
	sub.On("n", got.on)
	var subStatuses []client.SubStatus
	var smu sync.Mutex
	sub.OnStatusChange(func(st, old client.SubStatus, err error) {
		smu.Lock()
		subStatuses = append(subStatuses, st)
		smu.Unlock()
	})

	pub := startPublisher(func(ctx context.Context, i int) error {
		_, err := s.srv.Publish(ctx, "count", "n", i, server.PublishOptions{})
		return err
	})
	got.waitLen(t, 20) // live delivery works

	px.Pause() // new connections fail until Resume
	px.CutAll()
	cutAt := pub.n.Load() // nothing published after this can arrive live
	waitStatus(t, c, notReady, "client to notice the cut")
	pub.waitCount(t, cutAt+150, "150 publications during the outage")
	missed := pub.n.Load() - cutAt
	px.Resume()
	waitStatus(t, c, ready, "client to reconnect")
	pub.waitCount(t, pub.n.Load()+50, "50 live publications after the reconnection")
	total := pub.finish(t)
	got.waitLen(t, total)
	got.checkExactlyOnce(t, total)

	st := c.Stats()
	if missed < 100 {
		t.Errorf("only %d publications during the outage, want >= 100", missed)
	}
	if st.Recovered < uint64(missed) || st.Reconnects < 1 {
		t.Errorf("stats %+v: want Recovered >= %d (missed while cut), Reconnects >= 1", st, missed)
	}
	smu.Lock()
	defer smu.Unlock()
	if n := len(subStatuses); n < 3 || subStatuses[n-1] != client.SubActive {
		t.Errorf("subscription statuses %v, want ... dropped, syncing, active", subStatuses)
	}
}

// TestRecoveryAfterServerRestart: the server is stopped and a new one is
// started on the same address with the same scaler backend; a publisher on
// another instance of the backend runs all along.
func TestRecoveryAfterServerRestart(t *testing.T) {
	testutil.CheckLeaks(t)
	backend := scaler.NewMemoryBackend(scaler.MemoryOptions{Logger: quiet()})
	var instances []*scaler.Memory
	instance := func() *scaler.Memory {
		m := backend.Instance()
		instances = append(instances, m)
		return m
	}
	t.Cleanup(func() { // after the servers' shutdowns: the caller closes its scalers
		for _, m := range instances {
			_ = m.Close(context.Background())
		}
	})
	pubSrv, err := server.New(context.Background(), instance(), serverOpts())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pubSrv.Shutdown(context.Background()) })

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	serve := func(ln net.Listener) (*server.Server, *http.Server) {
		srv, err := server.New(context.Background(), instance(), serverOpts())
		if err != nil {
			t.Fatal(err)
		}
		hs := &http.Server{Handler: srv}
		go func() { _ = hs.Serve(ln) }()
		return srv, hs
	}
	stop := func(srv *server.Server, hs *http.Server) {
		_ = hs.Close() // listener gone: reconnections fail until the restart
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
	}
	srv1, hs1 := serve(ln)

	c := dial(t, "ws://"+addr+"/?user=erin", clientOpts())
	ctx := ctxT(t)
	sub, err := c.Subscribe(ctx, "count", nil)
	if err != nil {
		t.Fatal(err)
	}
	got := newNumbers()
	sub.On("n", got.on)
	pub := startPublisher(func(ctx context.Context, i int) error {
		_, err := pubSrv.Publish(ctx, "count", "n", i, server.PublishOptions{})
		return err
	})
	got.waitLen(t, 20)

	stop(srv1, hs1)
	downAt := pub.n.Load() // srv1 has no socket left: nothing after this arrives live
	waitStatus(t, c, notReady, "client to see the shutdown")
	pub.waitCount(t, downAt+150, "150 publications while the server is down")
	missed := pub.n.Load() - downAt

	ln2, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("listen again on %s: %v", addr, err)
	}
	srv2, hs2 := serve(ln2)
	defer stop(srv2, hs2)
	waitStatus(t, c, ready, "client to reconnect to the new server")
	pub.waitCount(t, pub.n.Load()+50, "50 live publications after the restart")
	total := pub.finish(t)
	got.waitLen(t, total)
	got.checkExactlyOnce(t, total)

	st := c.Stats()
	if missed < 100 {
		t.Errorf("only %d publications while down, want >= 100", missed)
	}
	if st.Recovered < uint64(missed) {
		t.Errorf("stats %+v: want Recovered >= %d", st, missed)
	}
	if sub.Status() != client.SubActive || c.UserSubscription() == nil {
		t.Errorf("after restart: sub %v, user subscription %v", sub.Status(), c.UserSubscription())
	}
}

// TestNotRecoverable: when what was missed is gone (trimmed) or too much
// (over MaxRecovery), the subscription reports SubNotRecoverable with an
// error the app can recognise, and live delivery continues.
func TestNotRecoverable(t *testing.T) {
	for _, tc := range []struct {
		name     string
		missed   int
		maxRecov int
		trim     bool
		reset    bool
	}{
		{name: "trimmed", missed: 30, trim: true},
		{name: "too many", missed: 40, maxRecov: 10},
		{name: "history reset", missed: 5, reset: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			testutil.CheckLeaks(t)
			sc := scaler.NewMemory(scaler.MemoryOptions{Logger: quiet()})
			t.Cleanup(func() { _ = sc.Close(context.Background()) })
			opts := serverOpts()
			opts.RecoveryWindow = -1 // every SYNC reads the scaler
			opts.MaxRecovery = tc.maxRecov
			s := startServer(t, sc, opts)
			px := testutil.NewProxy(t, s.addr)
			c := dial(t, "ws://"+px.Addr+"/", clientOpts())
			ctx := ctxT(t)
			sub, err := c.Subscribe(ctx, "count", nil)
			if err != nil {
				t.Fatal(err)
			}
			got := newNumbers()
			sub.On("n", got.on)
			type change struct {
				st  client.SubStatus
				err error
			}
			changes := make(chan change, 16)
			sub.OnStatusChange(func(st, old client.SubStatus, err error) { changes <- change{st, err} })
			publish := func(from, to int) {
				for i := from; i <= to; i++ {
					if _, err := s.srv.Publish(ctx, "count", "n", i, server.PublishOptions{}); err != nil {
						t.Fatal(err)
					}
				}
			}
			publish(1, 10)
			got.waitLen(t, 10)

			px.Pause()
			px.CutAll()
			waitStatus(t, c, notReady, "client to notice the cut")
			last := 10 + tc.missed
			publish(11, last)
			if tc.trim {
				if err := sc.Trim(ctx, "count", uint64(last)); err != nil {
					t.Fatal(err)
				}
			}
			if tc.reset {
				if err := sc.ResetHistory(ctx, "count"); err != nil {
					t.Fatal(err)
				}
			}
			px.Resume()
			var ch change
			for ch.st != client.SubNotRecoverable {
				ch = recv(t, changes, "status not recoverable")
				if ch.st == client.SubActive || ch.st.Final() {
					t.Fatalf("subscription became %v (%v), want not recoverable", ch.st, ch.err)
				}
			}
			var perr *protocol.Error
			if !errors.Is(ch.err, client.ErrNotRecoverable) || !errors.As(ch.err, &perr) || perr.Code != protocol.CodeNotRecoverable {
				t.Errorf("status error %v, want ErrNotRecoverable with code not_recoverable", ch.err)
			}
			if sub.Status() != client.SubNotRecoverable || c.Stats().NotRecoverable != 1 {
				t.Errorf("status %v, stats %+v", sub.Status(), c.Stats())
			}
			// Live delivery goes on from the current position.
			waitStatus(t, c, ready, "client ready")
			publish(last+1, last+5)
			got.waitLen(t, 15)
			want := []int{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, last + 1, last + 2, last + 3, last + 4, last + 5}
			g := got.snapshot()
			if len(g) != len(want) {
				t.Fatalf("got %v, want %v", g, want)
			}
			for i := range want {
				if g[i] != want[i] {
					t.Fatalf("got %v, want %v", g, want)
				}
			}
		})
	}
}
