package clustertest

import (
	"fmt"
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

// TestThreeServersInProcess: three servers, each on its own mongoredis
// scaler of one cluster, two Go-client subscribers on each, one publisher
// per server publishing concurrently. Every subscriber receives every
// publication once, uids 1..N with no gap, in one order (the same uid ->
// message everywhere, matching the uids Publish returned), each
// publisher's messages in the order it published them. The same holds
// when one instance misses a relayed publication (filled from MongoDB)
// and another gets one late, and when Redis is down for a while
// mid-stream (publishing goes on into MongoDB) and comes back empty.
func TestThreeServersInProcess(t *testing.T) {
	for _, tc := range []struct {
		name  string
		fault fault
	}{
		{"clean relay", noFault},
		{"relay drops and delays", relayFaults},
		{"redis down mid-stream", redisDown},
	} {
		t.Run(tc.name, func(t *testing.T) {
			testutil.CheckLeaks(t)
			cl := newCluster(t)
			if tc.fault == redisDown && !cl.redis.CanRestart() {
				t.Skip("SSS_TEST_REDIS_URL: the shared Redis cannot be restarted")
			}
			testThreeServers(t, cl, tc.fault)
		})
	}
}

// fault is what goes wrong while the publishers publish.
type fault int

const (
	noFault     fault = iota
	relayFaults       // one instance misses a relayed publication, another gets one late
	redisDown         // Redis stops mid-stream, publishing goes on, then it starts again, empty
)

func testThreeServers(t *testing.T, cl *cluster, faults fault) {
	const (
		servers   = 3
		perServer = 2 // subscribers
		per       = 100
		total     = servers * per
		channel   = "room"
	)
	var ins []*instance
	gapsFilled := make([]atomic.Int64, servers)
	for i := range servers {
		opts := server.Options{ShutdownSpread: -1, OnEvent: func(e server.Event) {
			if e.Kind == server.EventScaler && e.Scaler != nil && e.Scaler.Kind == scaler.EventGapFilled && e.Scaler.Channel == channel {
				gapsFilled[i].Add(int64(e.Scaler.Count))
			}
		}}
		ins = append(ins, cl.startInstance(t, fmt.Sprint("server", i), opts, nil))
	}
	ctx := ctxFor(t)

	type subscriber struct {
		name  string
		c     *client.Client
		sink  *sink
		start protocol.UID
	}
	var subs []subscriber
	for i, in := range ins {
		for j := range perServer {
			c := dialClient(t, in.url, client.Options{})
			sub, err := c.Subscribe(ctx, channel, nil)
			if err != nil {
				t.Fatalf("subscribe on %s: %v", in.name, err)
			}
			start, err := protocol.ParseUID(sub.LastUID())
			if err != nil {
				t.Fatalf("subscribe on %s: position %q: %v", in.name, sub.LastUID(), err)
			}
			s := newSink()
			sub.On("num", s.handler("num"))
			sub.On("end", s.handler("end"))
			subs = append(subs, subscriber{name: fmt.Sprintf("server%d/sub%d", i, j), c: c, sink: s, start: start})
		}
	}
	for _, s := range subs {
		if s.start.Seq != 0 || s.start.Epoch != subs[0].start.Epoch {
			t.Fatalf("%s subscribed at %v, want %s.0 (a new channel, one epoch)", s.name, s.start, subs[0].start.Epoch)
		}
	}

	// One publisher per server, all released at once.
	published := make([]map[numbered]protocol.UID, servers)
	errc := make(chan error, servers)
	release := make(chan struct{})
	paused := make(chan struct{}, servers) // redisDown: one per publisher
	resume := make(chan struct{})
	var resumeOnce sync.Once
	resumeAll := func() { resumeOnce.Do(func() { close(resume) }) }
	defer resumeAll()     // never leave a publisher waiting
	var done atomic.Int64 // publications Publish returned for
	var wg sync.WaitGroup
	for p, in := range ins {
		published[p] = make(map[numbered]protocol.UID, per)
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-release
			for n := 1; n <= per; n++ {
				m := numbered{P: p, N: n}
				uid, err := in.srv.Publish(ctx, channel, "num", m.raw(), server.PublishOptions{})
				if err != nil {
					errc <- fmt.Errorf("publish %+v on %s: %w", m, in.name, err)
					return
				}
				published[p][m] = uid
				done.Add(1)
				if faults == redisDown && n == per/3 {
					paused <- struct{}{}
					<-resume
				}
			}
		}()
	}
	if faults == relayFaults {
		// server1 misses the first relayed publication (it must read it
		// from MongoDB before delivering the next); server2 gets it late
		// (it must hold the later ones back meanwhile).
		injectorOf(t, ins[1].sc).DropNextRelay(channel)
		injectorOf(t, ins[2].sc).DelayNextRelay(channel, 300*time.Millisecond)
	}
	close(release)
	if faults == redisDown {
		// Each publisher stops at a third; Redis stops; they go on
		// until another third is durable; Redis starts again, empty.
		for range servers {
			select {
			case <-paused:
			case <-time.After(wait):
				t.Fatalf("publishers not at a third after %v", wait)
			}
		}
		cl.redis.Stop()
		resumeAll()
		testutil.WaitFor(t, wait, func() bool { return done.Load() >= 2*total/3 }, "two thirds published while Redis is down")
		cl.redis.Start()
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Fatal(err)
	}
	// A last publication after all the others: once a subscriber has it,
	// anything it got twice would show in its count.
	endUID, err := ins[0].srv.Publish(ctx, channel, "end", numbered{P: -1, N: 0}.raw(), server.PublishOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if endUID.Seq != total+1 {
		t.Errorf("last publication got uid %v, want seq %d (after %d gap-free)", endUID, total+1, total)
	}

	// The uid -> message map the publishers were given.
	want := make(map[uint64]numbered, total)
	for p := range published {
		for m, uid := range published[p] {
			if uid.Epoch != subs[0].start.Epoch {
				t.Errorf("publish %+v: uid %v of another epoch than %s", m, uid, subs[0].start.Epoch)
			}
			if old, dup := want[uid.Seq]; dup {
				t.Errorf("uid %v returned for both %+v and %+v", uid, old, m)
			}
			want[uid.Seq] = m
		}
	}
	if len(want) != total {
		t.Fatalf("publishers got %d distinct uids, want %d", len(want), total)
	}

	for _, s := range subs {
		s.sink.waitUntil(t, wait, s.name+" to receive the last publication", func(g []got) bool { return hasTopic(g, "end") })
		g, _ := s.sink.snapshot()
		if len(g) != total+1 {
			t.Errorf("%s received %d publications, want %d", s.name, len(g), total+1)
		}
		next := make([]int, servers) // next n expected per publisher
		for i := range next {
			next[i] = 1
		}
		for i, x := range g {
			if x.uid.Epoch != s.start.Epoch || x.uid.Seq != uint64(i+1) {
				t.Errorf("%s: publication %d has uid %v, want %s.%d", s.name, i, x.uid, s.start.Epoch, i+1)
				break
			}
			if x.topic == "end" {
				continue
			}
			if w := want[x.uid.Seq]; w != x.msg {
				t.Errorf("%s: uid %v carries %+v, the publisher was given it for %+v", s.name, x.uid, x.msg, w)
				break
			}
			if p := x.msg.P; p < 0 || p >= servers || x.msg.N != next[p] {
				t.Errorf("%s: publication %+v at %v out of its publisher's order (want n=%d)", s.name, x.msg, x.uid, next[max(0, min(p, servers-1))])
				break
			}
			next[x.msg.P]++
		}
		st := s.c.Stats()
		if st.Duplicates != 0 || st.Reconnects != 0 || st.NotRecoverable != 0 || st.Feeds != total+1 {
			t.Errorf("%s: client stats %+v, want %d feeds and no duplicate, reconnection or loss", s.name, st, total+1)
		}
	}
	if faults == relayFaults && gapsFilled[1].Load() < 1 {
		t.Errorf("server1 reported no gap filled from the log after a dropped relay message")
	}
}
