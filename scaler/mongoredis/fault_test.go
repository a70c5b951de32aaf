package mongoredis

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/sss-go/sss/internal/backoff"
	"github.com/sss-go/sss/internal/testutil"
	"github.com/sss-go/sss/protocol"
	"github.com/sss-go/sss/scaler"
)

// flow publishes continuously on one channel from several goroutines
// spread over some instances, recording what was acknowledged and what
// failed.
type flow struct {
	mu       sync.Mutex
	acked    []protocol.UID
	failures []flowFailure
	stop     chan struct{}
	wg       sync.WaitGroup
}

type flowFailure struct {
	err  error
	took time.Duration
}

func startFlow(t *testing.T, ch string, timeout time.Duration, publishers int, on ...*Scaler) *flow {
	f := &flow{stop: make(chan struct{})}
	for p := range publishers {
		s := on[p%len(on)]
		f.wg.Add(1)
		go func() {
			defer f.wg.Done()
			for n := 0; ; n++ {
				select {
				case <-f.stop:
					return
				default:
				}
				ctx, cancel := context.WithTimeout(context.Background(), timeout)
				start := time.Now()
				uid, err := s.Publish(ctx, ch, "t", json.RawMessage(fmt.Sprintf(`{"p":%d,"n":%d}`, p, n)), scaler.PublishOptions{})
				took := time.Since(start)
				cancel()
				f.mu.Lock()
				if err != nil {
					f.failures = append(f.failures, flowFailure{err, took})
				} else {
					f.acked = append(f.acked, uid)
				}
				f.mu.Unlock()
				if err != nil {
					// Do not spin on a dead backend.
					backoff.Sleep(context.Background(), 20*time.Millisecond)
				}
			}
		}()
	}
	t.Cleanup(f.halt)
	return f
}

func (f *flow) halt() {
	select {
	case <-f.stop:
	default:
		close(f.stop)
	}
	f.wg.Wait()
}

func (f *flow) counts() (acked, failed int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.acked), len(f.failures)
}

// checkStreamHas verifies that a stream is gap-free and duplicate-free
// from after+1 to its end at last, and holds every uid in want.
func checkStreamHas(t *testing.T, who string, ps []scaler.Publication, after, last protocol.UID, want []protocol.UID) {
	t.Helper()
	cur := after
	for i, p := range ps {
		if p.UID != cur.Next() {
			t.Fatalf("%s: entry %d is %v, want %v (gap, duplicate or disorder)", who, i, p.UID, cur.Next())
		}
		cur = p.UID
	}
	if cur != last {
		t.Fatalf("%s: stream ends at %v, want %v", who, cur, last)
	}
	for _, u := range want {
		if c, ok := u.Compare(last); !ok || c > 0 || u.Seq <= after.Seq {
			t.Fatalf("%s: acknowledged %v is not in the stream (%v, %v]", who, u, after, last)
		}
	}
}

// fence publishes one more message and waits until every recorder has it.
func fenceAll(t *testing.T, s *Scaler, ch string, recs ...*recorder) protocol.UID {
	t.Helper()
	var uid protocol.UID
	testutil.WaitFor(t, 30*time.Second, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		var err error
		uid, err = s.Publish(ctx, ch, "fence", json.RawMessage(`{}`), scaler.PublishOptions{})
		return err == nil
	}, "a fence publication to succeed")
	for i, r := range recs {
		r.waitFor(t, 30*time.Second, fmt.Sprintf("instance %d to receive the fence %v", i, uid), func() bool {
			ps := r.stream(ch)
			return len(ps) > 0 && ps[len(ps)-1].UID == uid
		})
	}
	return uid
}

// TestRedisRestart: redis-server restarted while publications flow; every
// subscriber still gets every publication once, in order, the missed ones
// filled from MongoDB.
func TestRedisRestart(t *testing.T) {
	rd := testutil.StartRedis(t)
	if !rd.CanRestart() {
		t.Skip("Redis from SSS_TEST_REDIS_URL cannot be restarted")
	}
	mg := testutil.SharedMongo(t)
	env := newEnv(t, rd.URL, mg.URI)
	const ch = "redis-restart"
	scs := make([]*Scaler, 3)
	recs := make([]*recorder, 3)
	var pos protocol.UID
	for i := range scs {
		scs[i] = env.newScaler(t, nil)
		recs[i] = startScaler(t, scs[i])
		p, err := scs[i].Subscribe(context.Background(), ch)
		if err != nil {
			t.Fatal(err)
		}
		pos = p
	}
	f := startFlow(t, ch, 5*time.Second, 8, scs[0], scs[1])
	testutil.WaitFor(t, 30*time.Second, func() bool { n, _ := f.counts(); return n >= 50 }, "50 publications before the fault")
	rd.Stop()
	stopped := time.Now()
	before, _ := f.counts()
	// Down for longer than a relay publish retries (relayTimeout), so
	// that the first publications of the outage are surely never relayed:
	// the instances must fill them from the log.
	testutil.WaitFor(t, 30*time.Second, func() bool {
		n, _ := f.counts()
		return n >= before+100 && time.Since(stopped) > relayTimeout+500*time.Millisecond
	}, "100 publications while Redis is down, for longer than a relay publish retries")
	rd.Start()
	for i, r := range recs {
		r.waitFor(t, 30*time.Second, fmt.Sprintf("instance %d to report the relay back", i), func() bool {
			return r.count(scaler.EventRelayReconnected) > 0
		})
	}
	after, _ := f.counts()
	testutil.WaitFor(t, 30*time.Second, func() bool { n, _ := f.counts(); return n >= after+50 }, "50 publications after the fault")
	f.halt()
	last := fenceAll(t, scs[2], ch, recs...)
	for i, r := range recs {
		checkStreamHas(t, fmt.Sprintf("instance %d", i), r.stream(ch), pos, last, f.acked)
		if r.count(scaler.EventGapFilled) == 0 {
			t.Errorf("instance %d never filled a gap from the log", i)
		}
	}
	if _, failed := f.counts(); failed > 0 {
		t.Errorf("%d publishes failed while only Redis was down: %v", failed, f.failures[0].err)
	}
}

// TestMongoStop: the MongoDB (FerretDB) process stopped while publications
// flow: publishes fail within their deadline, with ErrUnavailable (not
// stored) or ErrUncertain (the insert was on the wire), succeed again once
// it is back, and nothing acknowledged is lost.
func TestMongoStop(t *testing.T) {
	mg := testutil.StartMongo(t)
	if !mg.CanRestart() {
		t.Skip("MongoDB from SSS_TEST_MONGO_URI cannot be stopped")
	}
	rd := testutil.StartRedis(t)
	env := newEnv(t, rd.URL, mg.URI)
	const ch = "mongo-stop"
	const deadline = 500 * time.Millisecond
	scs := make([]*Scaler, 2)
	recs := make([]*recorder, 2)
	var pos protocol.UID
	for i := range scs {
		scs[i] = env.newScaler(t, func(o *Options) { o.DefaultRetention.MaxCount = 100_000 })
		recs[i] = startScaler(t, scs[i])
		p, err := scs[i].Subscribe(context.Background(), ch)
		if err != nil {
			t.Fatal(err)
		}
		pos = p
	}
	f := startFlow(t, ch, deadline, 16, scs...)
	testutil.WaitFor(t, 30*time.Second, func() bool { n, _ := f.counts(); return n >= 50 }, "50 publications before the fault")
	mg.Stop()
	testutil.WaitFor(t, 60*time.Second, func() bool { _, n := f.counts(); return n >= 100 }, "100 failed publishes while MongoDB is down")
	mg.Start()
	after, _ := f.counts()
	testutil.WaitFor(t, 60*time.Second, func() bool { n, _ := f.counts(); return n >= after+50 }, "50 publications after MongoDB is back")
	f.halt()
	for i, fl := range f.failures {
		if !errors.Is(fl.err, scaler.ErrUnavailable) && !errors.Is(fl.err, scaler.ErrUncertain) {
			t.Fatalf("failure %d: %v wraps neither ErrUnavailable nor ErrUncertain", i, fl.err)
		}
		if fl.took > deadline+2*time.Second {
			t.Fatalf("failure %d took %v with a %v deadline", i, fl.took, deadline)
		}
	}
	last := fenceAll(t, scs[0], ch, recs...)
	for i, r := range recs {
		checkStreamHas(t, fmt.Sprintf("instance %d", i), r.stream(ch), pos, last, f.acked)
	}
	// Nothing reached a subscriber that is not stored: the log holds
	// exactly what the streams delivered.
	stored, err := scs[1].Since(context.Background(), ch, pos, 0)
	if err != nil {
		t.Fatal(err)
	}
	delivered := recs[0].stream(ch)
	if len(stored) != len(delivered) {
		describeLog(t, env, mg, ch)
		t.Fatalf("the log holds %d publications after %v, the stream delivered %d", len(stored), pos, len(delivered))
	}
	for i := range stored {
		if stored[i].UID != delivered[i].UID || string(stored[i].Msg) != string(delivered[i].Msg) {
			t.Fatalf("log and stream differ at %d: %v %s vs %v %s", i, stored[i].UID, stored[i].Msg, delivered[i].UID, delivered[i].Msg)
		}
	}
	filled := recs[0].count(scaler.EventGapFilled) + recs[1].count(scaler.EventGapFilled)
	t.Logf("%d acknowledged, %d failed, gap fills: %d", len(f.acked), len(f.failures), filled)
}

// TestMongoWipe: the MongoDB data is lost (data dir wiped, server
// restarted): an old uid is not recoverable (ErrEpochChanged), streams are
// Reset into the new epoch and go on.
func TestMongoWipe(t *testing.T) {
	mg := testutil.StartMongo(t)
	if !mg.CanRestart() {
		t.Skip("MongoDB from SSS_TEST_MONGO_URI cannot be wiped")
	}
	rd := testutil.StartRedis(t)
	env := newEnv(t, rd.URL, mg.URI)
	const ch = "mongo-wipe"
	a, b := env.newScaler(t, nil), env.newScaler(t, nil)
	ra, rb := startScaler(t, a), startScaler(t, b)
	ctx := context.Background()
	pos, err := a.Subscribe(ctx, ch)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Subscribe(ctx, ch); err != nil {
		t.Fatal(err)
	}
	var old []protocol.UID
	for i := range 10 {
		u, err := a.Publish(ctx, ch, "t", json.RawMessage(fmt.Sprint(i)), scaler.PublishOptions{})
		if err != nil {
			t.Fatal(err)
		}
		old = append(old, u)
	}
	rb.waitFor(t, 30*time.Second, "B to receive the first 10", func() bool { return len(rb.stream(ch)) == 10 })
	mg.Wipe()
	var first protocol.UID
	testutil.WaitFor(t, 30*time.Second, func() bool {
		c, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		first, err = a.Publish(c, ch, "t", json.RawMessage(`"new"`), scaler.PublishOptions{})
		return err == nil
	}, "a publish to succeed after the wipe")
	if first.Epoch == pos.Epoch || first.Seq != 1 {
		t.Fatalf("first publication after the wipe = %v, want seq 1 of a new epoch (old %s)", first, pos.Epoch)
	}
	got, err := b.Since(ctx, ch, old[4], 0)
	if !errors.Is(err, scaler.ErrEpochChanged) || !errors.Is(err, scaler.ErrNotRecoverable) {
		t.Fatalf("Since(old uid) after the wipe = %d publications, %v; want ErrEpochChanged", len(got), err)
	}
	last := fenceAll(t, b, ch, ra, rb)
	for name, r := range map[string]*recorder{"A": ra, "B": rb} {
		r.mu.Lock()
		resets := append([]resetCall(nil), r.resets...)
		r.mu.Unlock()
		if len(resets) == 0 || !errors.Is(resets[0].err, scaler.ErrEpochChanged) || resets[0].pos != (protocol.UID{Epoch: first.Epoch}).String() {
			t.Fatalf("%s: resets %+v, want one to %s.0 with ErrEpochChanged", name, resets, first.Epoch)
		}
		ps := r.stream(ch)
		checkStreamHas(t, name+" (old epoch)", ps[:10], pos, old[9], old)
		checkStreamHas(t, name+" (new epoch)", ps[10:], protocol.UID{Epoch: first.Epoch}, last, []protocol.UID{first})
	}
}

// TestRelayFaults: B reaches Redis through a fault-injecting proxy. A cut
// connection (go-redis reconnects silently) and a connection stuck open
// but silent (only B's probe can tell) both end with B's stream complete,
// in order, filled from MongoDB.
func TestRelayFaults(t *testing.T) {
	rd := testutil.StartRedis(t)
	mg := testutil.SharedMongo(t)
	for _, tc := range []struct {
		name  string
		fault func(p *testutil.Proxy, r *recorder)
		want  scaler.EventKind
	}{
		{"cut", func(p *testutil.Proxy, r *recorder) { p.CutAll() }, scaler.EventRelayReconnected},
		{"silent", func(p *testutil.Proxy, r *recorder) {
			p.Blackhole(true)
			r.waitFor(t, 30*time.Second, "B's probe to fail", func() bool { return r.count(scaler.EventProbeFailed) > 0 })
			p.Blackhole(false)
		}, scaler.EventProbeFailed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			proxy := testutil.NewProxy(t, rd.Addr)
			env := newEnv(t, rd.URL, mg.URI)
			const ch = "relay-fault"
			a := env.newScaler(t, nil)
			b := env.newScaler(t, func(o *Options) { o.RedisURL = "redis://" + proxy.Addr })
			ra, rb := startScaler(t, a), startScaler(t, b)
			ctx := context.Background()
			pos, err := a.Subscribe(ctx, ch)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := b.Subscribe(ctx, ch); err != nil {
				t.Fatal(err)
			}
			f := startFlow(t, ch, 10*time.Second, 4, a)
			testutil.WaitFor(t, 30*time.Second, func() bool { n, _ := f.counts(); return n >= 50 }, "50 publications before the fault")
			before, _ := f.counts()
			tc.fault(proxy, rb)
			testutil.WaitFor(t, 30*time.Second, func() bool { n, _ := f.counts(); return n >= before+100 }, "100 publications during the fault")
			rb.waitFor(t, 30*time.Second, "B to notice the fault", func() bool { return rb.count(tc.want) > 0 })
			f.halt()
			last := fenceAll(t, a, ch, ra, rb)
			checkStreamHas(t, "A", ra.stream(ch), pos, last, f.acked)
			checkStreamHas(t, "B", rb.stream(ch), pos, last, f.acked)
			if tc.name == "silent" && rb.count(scaler.EventGapFilled) == 0 {
				t.Errorf("B never filled a gap from the log after a silent relay")
			}
		})
	}
}
