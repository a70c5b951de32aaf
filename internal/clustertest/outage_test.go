package clustertest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sss-go/sss/client"
	"github.com/sss-go/sss/internal/testutil"
	"github.com/sss-go/sss/scaler"
	"github.com/sss-go/sss/server"
)

// TestMongoOutage: MongoDB stops while publishers on two servers publish.
// Publish fails (scaler.ErrUnavailable, or scaler.ErrUncertain when the
// insert was on the wire) instead of returning a uid it cannot keep; each
// publisher retries the same message with the same idempotency key until
// it succeeds, so a publication whose acknowledgement was lost is not
// stored twice. After MongoDB is back,
// every subscriber on both servers has every message exactly once, uids
// gap-free, in one order.
func TestMongoOutage(t *testing.T) {
	testutil.CheckLeaks(t)
	mg := testutil.StartMongo(t)
	if !mg.CanRestart() {
		t.Skip("SSS_TEST_MONGO_URI: the shared MongoDB cannot be restarted")
	}
	const (
		servers = 2
		per     = 60
		total   = servers * per
		channel = "outage"
	)
	cl := newClusterOn(t, mg)
	var ins []*instance
	var sinks []*sink
	ctx := ctxFor(t)
	for i := range servers {
		in := cl.startInstance(t, fmt.Sprint("server", i), server.Options{ShutdownSpread: -1}, nil)
		ins = append(ins, in)
		c := dialClient(t, in.url, client.Options{})
		sub, err := c.Subscribe(ctx, channel, nil)
		if err != nil {
			t.Fatal(err)
		}
		s := newSink()
		sub.On("num", s.handler("num"))
		sub.On("end", s.handler("end"))
		sinks = append(sinks, s)
	}

	var (
		done     atomic.Int64 // publications acknowledged
		failures atomic.Int64 // failed attempts
		paused   = make(chan struct{}, servers)
		resume   = make(chan struct{})
		once     sync.Once
	)
	resumeAll := func() { once.Do(func() { close(resume) }) }
	defer resumeAll()
	errc := make(chan error, servers)
	var wg sync.WaitGroup
	for p, in := range ins {
		wg.Add(1)
		go func() {
			defer wg.Done()
			retry := time.NewTicker(100 * time.Millisecond) // pace of retries, not a synchronisation
			defer retry.Stop()
			for n := 1; n <= per; n++ {
				m := numbered{P: p, N: n}
				key := fmt.Sprintf("p%d-n%d", p, n)
				for {
					actx, cancel := context.WithTimeout(ctx, 3*time.Second)
					_, err := in.srv.Publish(actx, channel, "num", m.raw(), server.PublishOptions{IdempotencyKey: key})
					cancel()
					if err == nil {
						break
					}
					if !errors.Is(err, scaler.ErrUnavailable) && !errors.Is(err, scaler.ErrUncertain) && !errors.Is(err, context.DeadlineExceeded) {
						errc <- fmt.Errorf("publish %+v on %s: %w (want scaler.ErrUnavailable or ErrUncertain while MongoDB is down)", m, in.name, err)
						return
					}
					failures.Add(1)
					select {
					case <-retry.C:
					case <-ctx.Done():
						errc <- fmt.Errorf("publish %+v on %s: gave up: %w", m, in.name, err)
						return
					}
				}
				done.Add(1)
				if n == per/3 {
					paused <- struct{}{}
					<-resume
				}
			}
		}()
	}
	for range servers {
		select {
		case <-paused:
		case <-time.After(wait):
			t.Fatalf("publishers not at a third after %v", wait)
		}
	}
	mg.Stop()
	resumeAll()
	testutil.WaitFor(t, wait, func() bool { return failures.Load() >= 2*servers }, "publishes to fail while MongoDB is down")
	mg.Start()
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Fatal(err)
	}
	if _, err := ins[0].srv.Publish(ctx, channel, "end", numbered{P: -1}.raw(), server.PublishOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d failed publish attempts while MongoDB was down", failures.Load())

	var ref []got
	for i, s := range sinks {
		name := fmt.Sprint("server", i, "'s subscriber")
		s.waitUntil(t, wait, name+" to get the last publication", func(g []got) bool { return hasTopic(g, "end") })
		g, _ := s.snapshot()
		if len(g) != total+1 {
			t.Errorf("%s got %d publications, want %d (each once)", name, len(g), total+1)
		}
		seen := map[numbered]bool{}
		next := make([]int, servers)
		for k, x := range g {
			if k > 0 && (x.uid.Epoch != g[0].uid.Epoch || x.uid.Seq != g[k-1].uid.Seq+1) {
				t.Errorf("%s: uid %v after %v", name, x.uid, g[k-1].uid)
				break
			}
			if x.topic == "end" {
				continue
			}
			if seen[x.msg] {
				t.Errorf("%s: %+v twice (at %v): the idempotency key did not hold", name, x.msg, x.uid)
				break
			}
			seen[x.msg] = true
			if x.msg.P < 0 || x.msg.P >= servers || x.msg.N != next[x.msg.P]+1 {
				t.Errorf("%s: %+v at %v out of its publisher's order", name, x.msg, x.uid)
				break
			}
			next[x.msg.P]++
		}
		if ref == nil {
			ref = g
			continue
		}
		for k := range min(len(ref), len(g)) {
			if ref[k] != g[k] {
				t.Errorf("%s: publication %d is %+v at %v; server0's subscriber has %+v at %v", name, k, g[k].msg, g[k].uid, ref[k].msg, ref[k].uid)
				break
			}
		}
	}
}
