package mongoredis

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"

	"github.com/sss-go/sss/internal/testutil"
	"github.com/sss-go/sss/scaler"
)

type trimTag struct{}

// countTagged counts the commands sent under a context tagged by tag.
func (l *commandLog) countTagged(tag string) (int, map[string]int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	n, byName := 0, map[string]int{}
	for _, c := range l.cmds {
		if v, _ := c.ctx.Value(trimTag{}).(string); v == tag {
			n++
			byName[c.name]++
		}
	}
	return n, byName
}

// TestTrimRound: after 10,000 junk subscriptions (subscribe and
// unsubscribe of fresh names) no channel document exists, and a trim
// round applies retention to the channels that hold data with at most
// two MongoDB commands per channel plus a constant.
func TestTrimRound(t *testing.T) {
	rd := testutil.StartRedis(t)
	mg := testutil.SharedMongo(t)
	mc, cl := monitoredClient(t, mg)
	env := newEnv(t, rd.URL, mg.URI)
	s := env.newScaler(t, func(o *Options) {
		o.MongoURI, o.MongoClient = "", mc
		o.TrimInterval = time.Hour // rounds are run by the test
		o.Retention = func(string) scaler.Retention { return scaler.Retention{MaxCount: 10} }
	})
	startScaler(t, s)
	ctx := tctx(t)
	const junk, workers = 10_000, 8
	start := time.Now()
	var wg sync.WaitGroup
	errc := make(chan error, workers)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < junk; i += workers {
				ch := fmt.Sprintf("junk-%d", i)
				if _, err := s.Subscribe(ctx, ch); err != nil {
					errc <- err
					return
				}
				if err := s.Unsubscribe(ctx, ch); err != nil {
					errc <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Fatal(err)
	}
	t.Logf("%d junk subscriptions in %v", junk, time.Since(start).Round(time.Millisecond))
	data := []string{"d1", "d2", "d3", "d4", "d5"}
	for _, ch := range data {
		for i := range 15 {
			if _, err := s.Publish(ctx, ch, "t", json.RawMessage(fmt.Sprint(i)), scaler.PublishOptions{}); err != nil {
				t.Fatal(err)
			}
		}
	}
	_, chans := env.collections(t, mg)
	if n, err := chans.CountDocuments(ctx, bson.D{{Key: "_id", Value: bson.D{{Key: "$ne", Value: ""}}}}); err != nil || n != int64(len(data)) {
		t.Fatalf("%d channel documents (%v), want %d: one per channel with publications", n, err, len(data))
	}
	rctx := context.WithValue(ctx, trimTag{}, "round")
	if err := runTrimRound(rctx, s); err != nil {
		t.Fatal(err)
	}
	n, byName := cl.countTagged("round")
	t.Logf("one trim round over %d channels with data: %d commands %v", len(data), n, byName)
	if limit := 2*len(data) + 4; n > limit {
		t.Errorf("a trim round sent %d commands for %d channels with data, want at most %d", n, len(data), limit)
	}
	pubs, _ := env.collections(t, mg)
	for _, ch := range data {
		if n, err := pubs.CountDocuments(ctx, bson.D{{Key: "ch", Value: ch}, {Key: "seq", Value: bson.D{{Key: "$lte", Value: 5}}}}); err != nil || n != 0 {
			t.Fatalf("%q keeps %d publications up to seq 5 after a trim round (%v), want none", ch, n, err)
		}
		if h, err := s.History(ctx, ch, 0); err != nil || len(h) != 10 || h[0].UID.Seq != 6 {
			t.Fatalf("History(%q) after a trim round = %d publications, %v; want 6..15", ch, len(h), err)
		}
	}
}

func runTrimRound(ctx context.Context, s *Scaler) error { return s.trimRound(ctx, time.Minute, false) }

// TestTrimRoundResumes: a round cut short by its time budget resumes at
// the next channel in the next round, so every channel gets its turn.
func TestTrimRoundResumes(t *testing.T) {
	rd := testutil.StartRedis(t)
	mg := testutil.SharedMongo(t)
	env := newEnv(t, rd.URL, mg.URI)
	s := env.newScaler(t, func(o *Options) {
		o.TrimInterval = time.Hour // rounds are run by the test
		o.Retention = func(string) scaler.Retention { return scaler.Retention{MaxCount: 2} }
	})
	closeAtEnd(t, s)
	ctx := tctx(t)
	chans := []string{"c1", "c2", "c3", "c4"}
	for _, ch := range chans {
		for i := range 4 {
			if _, err := s.Publish(ctx, ch, "t", json.RawMessage(fmt.Sprint(i)), scaler.PublishOptions{}); err != nil {
				t.Fatal(err)
			}
		}
	}
	pubs, _ := env.collections(t, mg)
	kept := func() []int {
		var n []int
		for _, ch := range chans {
			c, err := pubs.CountDocuments(ctx, bson.D{{Key: "ch", Value: ch}})
			if err != nil {
				t.Fatal(err)
			}
			n = append(n, int(c))
		}
		return n
	}
	for round := 1; round <= len(chans)+1; round++ {
		// A zero budget ends the round after its first channel.
		if err := s.trimRound(ctx, 0, false); err != nil {
			t.Fatal(err)
		}
		got := kept()
		for i, n := range got {
			want := 4
			if i < round {
				want = 2
			}
			if n != want {
				t.Fatalf("after round %d, channels keep %v publications: want the first %d trimmed to 2", round, got, min(round, len(chans)))
			}
		}
	}
}
