package mongoredis

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.mongodb.org/mongo-driver/v2/mongo"
	mopts "go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/sss-go/sss/internal/testutil"
	"github.com/sss-go/sss/scaler"
)

// TestPrefixesShareBackends: two applications with different prefixes on
// one Redis and one database, through clients the caller owns, do not see
// each other's publications, and Close leaves the caller's clients open.
func TestPrefixesShareBackends(t *testing.T) {
	rd := testutil.StartRedis(t)
	mg := testutil.SharedMongo(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rc := redis.NewClient(&redis.Options{Addr: rd.Addr})
	t.Cleanup(func() { _ = rc.Close() })
	mc, err := mongo.Connect(mopts.Client().ApplyURI(mg.URI))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = mc.Disconnect(context.Background()) })
	db := testutil.DBName(t)
	mk := func(prefix string) (*Scaler, *recorder) {
		env := &testEnv{db: db, prefix: prefix}
		s := env.newScaler(t, func(o *Options) {
			o.MongoURI, o.RedisURL = "", ""
			o.MongoClient, o.RedisClient = mc, rc
		})
		return s, startScaler(t, s)
	}
	a, ra := mk("appa")
	b, rb := mk("appb")
	for _, s := range []*Scaler{a, b} {
		if _, err := s.Subscribe(ctx, "same"); err != nil {
			t.Fatal(err)
		}
	}
	ua, err := a.Publish(ctx, "same", "t", json.RawMessage(`"a"`), scaler.PublishOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ub, err := b.Publish(ctx, "same", "t", json.RawMessage(`"b"`), scaler.PublishOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if ua.Seq != 1 || ub.Seq != 1 || ua.Epoch == ub.Epoch {
		t.Fatalf("uids %v and %v: the two applications share a log", ua, ub)
	}
	ra.waitFor(t, 10*time.Second, "A's publication", func() bool { return len(ra.stream("same")) == 1 })
	rb.waitFor(t, 10*time.Second, "B's publication", func() bool { return len(rb.stream("same")) == 1 })
	fenceAll(t, a, "same", ra)
	fenceAll(t, b, "same", rb)
	for name, r := range map[string]*recorder{"A": ra, "B": rb} {
		for _, p := range r.stream("same") {
			if want := map[string]string{"A": ua.Epoch, "B": ub.Epoch}[name]; p.UID.Epoch != want {
				t.Fatalf("%s received %v from the other application", name, p.UID)
			}
		}
	}
	if err := a.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if err := rc.Ping(ctx).Err(); err != nil {
		t.Fatalf("the caller's Redis client after Close: %v", err)
	}
	if err := mc.Ping(ctx, nil); err != nil {
		t.Fatalf("the caller's MongoDB client after Close: %v", err)
	}
}
