package mongoredis

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sss-go/sss/internal/testutil"
	"github.com/sss-go/sss/scaler"
)

// TestRedisCluster runs two instances on a three-node Redis Cluster (via
// Options.Redis): ordered delivery, control plane and presence work with
// keys and channels spread over the nodes.
func TestRedisCluster(t *testing.T) {
	rc := testutil.StartRedisCluster(t)
	mg := testutil.SharedMongo(t)
	env := newEnv(t, "", mg.URI)
	mk := func() *Scaler {
		return env.newScaler(t, func(o *Options) {
			o.RedisURL = ""
			o.Redis = &redis.UniversalOptions{Addrs: rc.Addrs, IsClusterMode: true}
		})
	}
	a, b := mk(), mk()
	ra, rb := startScaler(t, a), startScaler(t, b)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	chans := []string{"c1", "c2", "c3", "c4"}
	from := map[string]uint64{}
	for _, ch := range chans {
		if _, err := a.Subscribe(ctx, ch); err != nil {
			t.Fatal(err)
		}
		pos, err := b.Subscribe(ctx, ch)
		if err != nil {
			t.Fatal(err)
		}
		from[ch] = pos.Seq
	}
	const each = 25
	var wg sync.WaitGroup
	errc := make(chan error, 2*len(chans))
	for i, s := range []*Scaler{a, b} {
		for _, ch := range chans {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for n := range each {
					msg := fmt.Sprintf(`{"proc":"%c","w":0,"n":%d}`, 'a'+i, n)
					if _, err := s.Publish(ctx, ch, "t", json.RawMessage(msg), scaler.PublishOptions{}); err != nil {
						errc <- err
						return
					}
				}
			}()
		}
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Fatal(err)
	}
	for _, ch := range chans {
		streams := map[string][]delivered{}
		for name, r := range map[string]*recorder{"A": ra, "B": rb} {
			r.waitFor(t, 30*time.Second, name+" to receive "+ch, func() bool { return len(r.stream(ch)) >= 2*each })
			streams[name] = toDelivered(t, r.stream(ch))
		}
		checkSameOrder(t, from[ch], 2*each, streams)
	}
	if err := a.Control(ctx, scaler.Control{Kind: scaler.ControlBroadcast, Topic: "x"}); err != nil {
		t.Fatal(err)
	}
	for name, r := range map[string]*recorder{"A": ra, "B": rb} {
		r.waitFor(t, 30*time.Second, name+" to get the broadcast", func() bool {
			r.mu.Lock()
			defer r.mu.Unlock()
			return len(r.ctls) == 1 && r.ctls[0].Origin == a.ID()
		})
	}
	for i, s := range []*Scaler{a, b} {
		if err := s.Join(ctx, "room", scaler.Member{ID: fmt.Sprint("m", i), User: "u"}); err != nil {
			t.Fatal(err)
		}
		if err := s.AddUser(ctx, "u"); err != nil {
			t.Fatal(err)
		}
	}
	if n, err := b.Count(ctx, "room"); err != nil || n != 2 {
		t.Fatalf("Count = %d, %v; want 2", n, err)
	}
	if ids, err := a.UserInstances(ctx, "u"); err != nil || len(ids) != 2 {
		t.Fatalf("UserInstances = %v, %v; want both instances", ids, err)
	}
	testutil.WaitFor(t, 10*time.Second, func() bool { return a.Health(ctx) == nil && b.Health(ctx) == nil }, "both instances healthy")
}
