package mongoredis

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sss-go/sss/internal/testutil"
)

// TestRelaySubscriptions: the instance's Redis subscriptions follow the
// channels it serves, on one pub/sub connection.
func TestRelaySubscriptions(t *testing.T) {
	rd := testutil.StartRedis(t)
	mg := testutil.SharedMongo(t)
	env := newEnv(t, rd.URL, mg.URI)
	s := env.newScaler(t, nil)
	startScaler(t, s)
	probe := redis.NewClient(&redis.Options{Addr: rd.Addr})
	t.Cleanup(func() { _ = probe.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	relayed := func() int {
		chans, err := probe.PubSubChannels(ctx, env.prefix+":c:*").Result()
		if err != nil {
			t.Fatal(err)
		}
		return len(chans)
	}
	const n = 40
	var wg sync.WaitGroup
	errc := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := s.Subscribe(ctx, fmt.Sprint("ch", i)); err != nil {
				errc <- err
			}
		}()
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Fatal(err)
	}
	if got := relayed(); got != n {
		t.Fatalf("%d relay channels subscribed on Redis, want %d", got, n)
	}
	for i := range n / 2 {
		if err := s.Unsubscribe(ctx, fmt.Sprint("ch", i)); err != nil {
			t.Fatal(err)
		}
	}
	testutil.WaitFor(t, 30*time.Second, func() bool { return relayed() == n/2 }, "relay subscriptions to follow Unsubscribe")
	// Subscribing again after Unsubscribe makes the channel live again.
	if _, err := s.Subscribe(ctx, "ch0"); err != nil {
		t.Fatal(err)
	}
	if got := relayed(); got != n/2+1 {
		t.Fatalf("%d relay channels after re-subscribing, want %d", got, n/2+1)
	}
	// One pub/sub connection carries them all (plus the control and
	// probe channels).
	clients, err := probe.ClientList(ctx).Result()
	if err != nil {
		t.Fatal(err)
	}
	if c := countSubConns(clients); c != 1 {
		t.Fatalf("%d pub/sub connections, want 1:\n%s", c, clients)
	}
}

// countSubConns counts connections subscribed to at least one channel in
// a CLIENT LIST reply.
func countSubConns(list string) int {
	n := 0
	for _, line := range strings.Split(list, "\n") {
		for _, f := range strings.Fields(line) {
			if strings.HasPrefix(f, "sub=") && f != "sub=0" {
				n++
			}
		}
	}
	return n
}
