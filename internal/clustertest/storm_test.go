package clustertest

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sss-go/sss/client"
	"github.com/sss-go/sss/internal/testutil"
	"github.com/sss-go/sss/server"
)

// TestShutdownStorm: many Go clients on server0 of three while server1
// publishes without pause; server0 shuts down, spreading its closes, and
// its clients fail over to server1 and server2 at once, recovering by
// SYNC. Every client ends with every number exactly once, in order.
func TestShutdownStorm(t *testing.T) {
	testutil.CheckLeaks(t)
	const (
		clients = 12
		channel = "storm"
		after   = 30 // published after every client is back
		maxN    = 20_000
	)
	cl := newCluster(t)
	var ins []*instance
	for i := range 3 {
		ins = append(ins, cl.startInstance(t, fmt.Sprint("server", i), server.Options{ShutdownSpread: 300 * time.Millisecond}, nil))
	}
	ctx := ctxFor(t)
	var back atomic.Int64 // clients ready again after the drop
	type watched struct {
		c *client.Client
		s *sink
	}
	var ws []watched
	for k := range clients {
		var dropped atomic.Bool
		c := dialClient(t, ins[0].url, client.Options{
			// Attempt n goes to URLs[n%3]: after the drop, server1 or
			// server2 (server0 refuses, then is gone).
			URLs:          []string{ins[1+k%2].url, ins[2-k%2].url},
			ReconnectBase: 20 * time.Millisecond,
			ReconnectCap:  200 * time.Millisecond,
			Setup: func(c *client.Client) {
				c.OnStatusChange(func(s, old client.Status) {
					if old == client.StatusReady && s != client.StatusReady {
						dropped.Store(true)
					}
					if s == client.StatusReady && dropped.Load() {
						back.Add(1)
					}
				})
			},
		})
		sub, err := c.Subscribe(ctx, channel, nil)
		if err != nil {
			t.Fatal(err)
		}
		s := newSink()
		sub.On("num", s.handler("num"))
		sub.On("end", s.handler("end"))
		ws = append(ws, watched{c, s})
	}

	var published atomic.Int64
	pubDone := make(chan error, 1)
	go func() {
		pubDone <- func() error {
			var allBackAt int64
			for n := 1; n <= maxN; n++ {
				if _, err := ins[1].srv.Publish(ctx, channel, "num", numbered{N: n}.raw(), server.PublishOptions{}); err != nil {
					return fmt.Errorf("publish %d: %w", n, err)
				}
				published.Store(int64(n))
				if allBackAt == 0 && back.Load() >= clients {
					allBackAt = int64(n)
				}
				if allBackAt > 0 && int64(n)-allBackAt >= after {
					return nil
				}
			}
			return fmt.Errorf("published %d and %d of %d clients are back", maxN, back.Load(), clients)
		}()
	}()
	ws[0].s.waitUntil(t, wait, "publications live through server0", func(g []got) bool { return len(g) >= 20 })
	sctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	if err := ins[0].srv.Shutdown(sctx); err != nil {
		t.Fatalf("server0: Shutdown: %v", err)
	}
	ins[0].hs.Close()
	select {
	case err := <-pubDone:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(wait):
		t.Fatalf("publisher not done after %v (%d of %d clients back)", wait, back.Load(), clients)
	}
	total := int(published.Load())
	if _, err := ins[1].srv.Publish(ctx, channel, "end", numbered{N: total + 1}.raw(), server.PublishOptions{}); err != nil {
		t.Fatal(err)
	}
	var recovered uint64
	for k, w := range ws {
		name := fmt.Sprint("client ", k)
		w.s.waitUntil(t, wait, name+" to get the last publication", func(g []got) bool { return hasTopic(g, "end") })
		checkNumbers(t, name, w.s, total)
		st := w.c.Stats()
		recovered += st.Recovered
		if st.Reconnects != 1 || st.NotRecoverable != 0 || st.Refused != 0 {
			t.Errorf("%s: stats %+v, want one reconnection, nothing lost", name, st)
		}
	}
	if n1, n2 := ins[1].srv.Stats().Sockets, ins[2].srv.Stats().Sockets; n1+n2 != clients || n1 == 0 || n2 == 0 {
		t.Errorf("sockets on server1 %d, server2 %d: want the %d clients spread over both", n1, n2, clients)
	}
	t.Logf("published %d; %d recovered by SYNC over %d clients", total, recovered, clients)
}
