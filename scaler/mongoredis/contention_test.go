package mongoredis

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/sss-go/sss/internal/testutil"
	"github.com/sss-go/sss/scaler"
)

// TestContention: three instances (each with its own clients) times
// eight goroutines publish on one channel with the default WriteTimeout:
// no publish fails, the log is gap-free and every instance delivers the
// same order. It logs the throughput (FerretDB-backed: says nothing
// about MongoDB). In the "publishers" case the instances are not
// subscribed (as a server.Publisher), so no relayed publication tells a
// writer which seqs the others took.
func TestContention(t *testing.T) {
	for _, subscribed := range []bool{true, false} {
		name := "subscribed"
		if !subscribed {
			name = "publishers"
		}
		t.Run(name, func(t *testing.T) { testContention(t, subscribed) })
	}
}

// describeLog reports holes and duplicates in a channel's log.
func describeLog(t *testing.T, env *testEnv, mg *testutil.Mongo, ch string) {
	pubs, _ := env.collections(t, mg)
	cur, err := pubs.Find(context.Background(), bson.D{{Key: "ch", Value: ch}}, options.Find().SetSort(bson.D{{Key: "seq", Value: 1}}))
	if err != nil {
		t.Fatal(err)
	}
	var docs []pubDoc
	if err := cur.All(context.Background(), &docs); err != nil {
		t.Fatal(err)
	}
	t.Logf("the log of %q holds %d documents", ch, len(docs))
	for i := 1; i < len(docs); i++ {
		if a, b := docs[i-1], docs[i]; a.Epoch != b.Epoch || b.Seq != a.Seq+1 {
			t.Logf("after %s.%d (%s) comes %s.%d (%s)", a.Epoch, a.Seq, a.ID.Hex(), b.Epoch, b.Seq, b.ID.Hex())
		}
	}
}

func testContention(t *testing.T, subscribed bool) {
	rd := testutil.StartRedis(t)
	mg := testutil.SharedMongo(t)
	env := newEnv(t, rd.URL, mg.URI)
	const (
		ch         = "contention"
		instances  = 3
		publishers = 8
		each       = 100
		total      = instances * publishers * each
	)
	names := []string{"a", "b", "c"}
	scs := make([]*Scaler, instances)
	recs := make([]*recorder, instances)
	for i := range scs {
		scs[i] = env.newScaler(t, func(o *Options) { o.WriteTimeout, o.DefaultRetention.MaxCount = 0, 100_000 })
		if subscribed {
			recs[i] = startScaler(t, scs[i])
		} else {
			closeAtEnd(t, scs[i])
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	from, err := scs[0].Position(ctx, ch)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range scs {
		if !subscribed {
			break
		}
		if pos, err := s.Subscribe(ctx, ch); err != nil || pos != from {
			t.Fatalf("Subscribe = %v, %v; want %v", pos, err, from)
		}
	}
	var (
		wg     sync.WaitGroup
		mu     sync.Mutex
		errs   []error
		maxLat time.Duration
	)
	start := time.Now()
	for i, s := range scs {
		for w := range publishers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for n := range each {
					msg := fmt.Sprintf(`{"proc":%q,"w":%d,"n":%d}`, names[i], w, n)
					t0 := time.Now()
					_, err := s.Publish(ctx, ch, "t", json.RawMessage(msg), scaler.PublishOptions{})
					lat := time.Since(t0)
					mu.Lock()
					maxLat = max(maxLat, lat)
					if err != nil {
						errs = append(errs, err)
					}
					mu.Unlock()
					if err != nil {
						return
					}
				}
			}()
		}
	}
	wg.Wait()
	took := time.Since(start)
	t.Logf("%d publishes from %d instances x %d goroutines in %v: %.0f publishes/s (FerretDB), slowest %v",
		total, instances, publishers, took.Round(time.Millisecond), float64(total)/took.Seconds(), maxLat.Round(time.Millisecond))
	if len(errs) > 0 {
		t.Fatalf("%d publishes failed while MongoDB was healthy; first: %v", len(errs), errs[0])
	}
	logged, err := scs[0].Since(ctx, ch, from, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(logged) != total {
		describeLog(t, env, mg, ch)
	}
	streams := map[string][]delivered{"log": toDelivered(t, logged)}
	for i, r := range recs {
		if r == nil {
			continue
		}
		r.waitFor(t, 30*time.Second, names[i]+" to receive everything", func() bool { return len(r.stream(ch)) >= total })
		streams[names[i]] = toDelivered(t, r.stream(ch))
	}
	checkSameOrder(t, from.Seq, total, streams)
}
