package clustertest

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sss-go/sss/client"
	"github.com/sss-go/sss/internal/testutil"
	"github.com/sss-go/sss/server"
)

// TestRecoveryAcrossInstances: a Go client subscribed through server A
// (its URLs: A, then B) while a publisher on server B publishes numbered
// messages without pause. A shuts down; B refuses upgrades until at least
// minMissed publications were made after the client saw the drop, then
// lets the client in; the client recovers them by SYNC on B. The
// subscriber ends with every number exactly once, in order. B answers the
// SYNC from MongoDB when it serves no socket of the channel, and from its
// recovery window, or past it from MongoDB, when it does.
func TestRecoveryAcrossInstances(t *testing.T) {
	for _, tc := range []struct {
		name   string
		bLive  bool // B has a subscriber of its own on the channel
		window int  // B's Options.RecoveryWindow (0: default 256)
	}{
		{"B not on the channel", false, 0},
		{"B live on the channel", true, 0},
		{"B live, missed more than its window", true, 32},
	} {
		t.Run(tc.name, func(t *testing.T) { testRecovery(t, tc.bLive, tc.window) })
	}
}

func testRecovery(t *testing.T, bLive bool, window int) {
	testutil.CheckLeaks(t)
	const (
		channel   = "feed"
		minMissed = 120 // B lets the client in after this many were missed
		liveA     = 30  // received live through A before it shuts down
		liveB     = 30  // published after the reconnection
		maxN      = 20_000
	)
	cl := newCluster(t)
	a := cl.startInstance(t, "A", server.Options{ShutdownSpread: -1}, nil)
	var gateOpen atomic.Bool
	gateOpen.Store(true) // for B's own subscriber
	gate := func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if !gateOpen.Load() {
				http.Error(w, "not yet", http.StatusServiceUnavailable)
				return
			}
			h.ServeHTTP(w, r)
		})
	}
	b := cl.startInstance(t, "B", server.Options{ShutdownSpread: -1, MaxRecovery: maxN, RecoveryWindow: window}, gate)
	ctx := ctxFor(t)
	var watch *sink // B's own subscriber
	if bLive {
		wc := dialClient(t, b.url, client.Options{})
		wsub, err := wc.Subscribe(ctx, channel, nil)
		if err != nil {
			t.Fatal(err)
		}
		watch = newSink()
		wsub.On("num", watch.handler("num"))
		wsub.On("end", watch.handler("end"))
	}
	gateOpen.Store(false)

	// published is the number of publications Publish has returned for
	// (the numbers are 1..published). The client's status callback reads
	// it when the connection drops and when the client is ready again.
	var published atomic.Int64
	var (
		dropOnce, backOnce sync.Once
		dropAt, backAt     atomic.Int64
		dropped            = make(chan struct{})
		reconnected        = make(chan struct{})
		statuses           []client.Status
		statusMu           sync.Mutex
	)
	onStatus := func(s, old client.Status) {
		statusMu.Lock()
		statuses = append(statuses, s)
		statusMu.Unlock()
		if old == client.StatusReady && s != client.StatusReady {
			dropOnce.Do(func() {
				dropAt.Store(published.Load())
				close(dropped)
			})
		}
		if s == client.StatusReady && isClosed(dropped) {
			backOnce.Do(func() {
				backAt.Store(published.Load())
				close(reconnected)
			})
		}
	}
	c := dialClient(t, a.url, client.Options{
		URLs:          []string{b.url},
		ReconnectBase: 20 * time.Millisecond,
		ReconnectCap:  200 * time.Millisecond,
		Setup:         func(c *client.Client) { c.OnStatusChange(onStatus) },
	})
	sub, err := c.Subscribe(ctx, channel, nil)
	if err != nil {
		t.Fatal(err)
	}
	s := newSink()
	sub.On("num", s.handler("num"))
	sub.On("end", s.handler("end"))
	var subStatuses []client.SubStatus
	sub.OnStatusChange(func(st, _ client.SubStatus, _ error) {
		statusMu.Lock()
		subStatuses = append(subStatuses, st)
		statusMu.Unlock()
	})

	// The publisher on B runs without pause until liveB numbers were
	// published after the reconnection; it opens B's gate once minMissed
	// numbers were published after the drop.
	pubDone := make(chan error, 1)
	go func() {
		pubDone <- func() error {
			for n := 1; n <= maxN; n++ {
				if _, err := b.srv.Publish(ctx, channel, "num", numbered{N: n}.raw(), server.PublishOptions{}); err != nil {
					return fmt.Errorf("publish %d on B: %w", n, err)
				}
				published.Store(int64(n))
				if isClosed(dropped) && int64(n)-dropAt.Load() >= minMissed {
					gateOpen.Store(true)
				}
				if isClosed(reconnected) && int64(n)-backAt.Load() >= liveB {
					return nil
				}
			}
			return fmt.Errorf("published %d numbers and the client did not reconnect", maxN)
		}()
	}()

	s.waitUntil(t, wait, fmt.Sprintf("%d publications live through A", liveA), func(g []got) bool { return len(g) >= liveA })
	sctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	if err := a.srv.Shutdown(sctx); err != nil {
		t.Fatalf("A: Shutdown: %v", err)
	}
	a.hs.Close()
	waitClosed(t, dropped, "the client to see the drop")
	waitClosed(t, reconnected, "the client to reconnect through B")
	select {
	case err := <-pubDone:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(wait):
		t.Fatalf("publisher not done %v after the reconnection", wait)
	}
	total := int(published.Load())
	if _, err := b.srv.Publish(ctx, channel, "end", numbered{N: total + 1}.raw(), server.PublishOptions{}); err != nil {
		t.Fatal(err)
	}
	s.waitUntil(t, wait, "the last publication", func(g []got) bool { return hasTopic(g, "end") })

	missed := backAt.Load() - dropAt.Load()
	t.Logf("published %d; %d while the client was disconnected (%d..%d); client stats %+v", total, missed, dropAt.Load()+1, backAt.Load(), c.Stats())
	if missed < 100 {
		t.Errorf("%d publications while disconnected, want >= 100", missed)
	}
	st := c.Stats()
	if st.Recovered < uint64(minMissed) || st.Reconnects != 1 || st.NotRecoverable != 0 || st.Refused != 0 {
		t.Errorf("client stats %+v: want one reconnection recovering >= %d publications, none lost", st, minMissed)
	}
	wantSockets := 1
	if bLive {
		wantSockets = 2
	}
	if n := b.srv.Stats().Sockets; n != wantSockets {
		t.Errorf("server B has %d sockets, want %d (the client's, and B's subscriber)", n, wantSockets)
	}
	if sub.Status() != client.SubActive {
		statusMu.Lock()
		t.Errorf("subscription %v after recovery (changes %v), want active", sub.Status(), subStatuses)
		statusMu.Unlock()
	}
	checkNumbers(t, "the client", s, total)
	if watch != nil {
		watch.waitUntil(t, wait, "B's subscriber to get the last publication", func(g []got) bool { return hasTopic(g, "end") })
		checkNumbers(t, "B's subscriber", watch, total)
	}
}

// checkNumbers checks that s received numbers 1..total in order, each
// once, with consecutive uids, then the "end" publication.
func checkNumbers(t *testing.T, who string, s *sink, total int) {
	t.Helper()
	g, _ := s.snapshot()
	if len(g) != total+1 {
		t.Errorf("%s got %d publications, want %d", who, len(g), total+1)
	}
	for i, x := range g {
		if x.msg.N != i+1 {
			t.Errorf("%s: publication %d is number %d (uid %v), want %d: lost, repeated or out of order", who, i, x.msg.N, x.uid, i+1)
			return
		}
		if i > 0 && (x.uid.Epoch != g[0].uid.Epoch || x.uid.Seq != g[i-1].uid.Seq+1) {
			t.Errorf("%s: publication %d has uid %v after %v", who, i, x.uid, g[i-1].uid)
			return
		}
	}
}

func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

func waitClosed(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(wait):
		t.Fatalf("timed out after %v waiting for %s", wait, what)
	}
}
