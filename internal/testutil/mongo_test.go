package testutil

import (
	"context"
	"regexp"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
)

func TestMongoStopStartWipe(t *testing.T) {
	CheckLeaks(t)
	m := StartMongo(t)
	if !m.CanRestart() {
		t.Skip("SSS_TEST_MONGO_URI set: cannot restart")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c := m.Client(t)
	db := DBName(t)
	coll := c.Database(db).Collection("c")
	if _, err := coll.InsertOne(ctx, bson.D{{Key: "_id", Value: 1}, {Key: "x", Value: "kept"}}); err != nil {
		t.Fatalf("insert: %v", err)
	}
	uri := m.URI

	m.Stop()
	m.Start()
	if m.URI != uri {
		t.Fatalf("Start moved the server from %s to %s", uri, m.URI)
	}
	var got bson.M
	if err := coll.FindOne(ctx, bson.D{{Key: "_id", Value: 1}}).Decode(&got); err != nil {
		t.Fatalf("find after Stop/Start: %v (data lost?)", err)
	}
	if got["x"] != "kept" {
		t.Fatalf("after Stop/Start got %v", got)
	}

	m.Wipe()
	n, err := coll.CountDocuments(ctx, bson.D{})
	if err != nil {
		t.Fatalf("count after Wipe: %v", err)
	}
	if n != 0 {
		t.Fatalf("count after Wipe = %d, want 0", n)
	}
}

func TestSharedMongo(t *testing.T) {
	CheckLeaks(t)
	a := SharedMongo(t)
	b := SharedMongo(t)
	if a.URI != b.URI {
		t.Fatalf("two SharedMongo servers: %s and %s", a.URI, b.URI)
	}
	if a.CanRestart() {
		t.Fatal("SharedMongo CanRestart = true")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := a.Client(t).Ping(ctx, nil); err != nil {
		t.Fatalf("ping: %v", err)
	}
}

func TestDBName(t *testing.T) {
	valid := regexp.MustCompile(`^[a-z0-9_]{1,63}$`)
	names := []string{"Simple", "with/slash and space", "Ünïcode-and.dots", "very_long_" + string(make([]byte, 100))}
	seen := map[string]bool{}
	for _, n := range names {
		t.Run(n, func(t *testing.T) {
			for i := 0; i < 2; i++ {
				d := DBName(t)
				if !valid.MatchString(d) {
					t.Fatalf("DBName = %q: not a valid database name", d)
				}
				if seen[d] {
					t.Fatalf("DBName %q returned twice", d)
				}
				seen[d] = true
			}
		})
	}
}
