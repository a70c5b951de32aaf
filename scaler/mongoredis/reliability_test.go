package mongoredis

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"

	"github.com/sss-go/sss/internal/testutil"
	"github.com/sss-go/sss/protocol"
	"github.com/sss-go/sss/scaler"
)

// collections returns direct handles on the scaler's collections, for
// tests that act on the database behind the scaler's back.
func (e *testEnv) collections(t testing.TB, mg *testutil.Mongo) (pubs, chans *mongo.Collection) {
	db := mg.Client(t).Database(e.db)
	return db.Collection(e.prefix + "_pubs"), db.Collection(e.prefix + "_channels")
}

// closeAtEnd closes an instance that is not started when the test ends.
func closeAtEnd(t testing.TB, s *Scaler) {
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := s.Close(ctx); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
}

func tctx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// TestKeyedPublishOverOlderEpochKey: a keyed publish whose key is still
// held by a document of an older epoch (left over by a reset that raced a
// writer) takes seq 1 of the current epoch: the duplicate key error came
// from the key, not from the seq, so no free seq is skipped.
func TestKeyedPublishOverOlderEpochKey(t *testing.T) {
	rd := testutil.StartRedis(t)
	mg := testutil.SharedMongo(t)
	env := newEnv(t, rd.URL, mg.URI)
	s := env.newScaler(t, nil)
	closeAtEnd(t, s)
	ctx := tctx(t)
	const ch = "older-epoch-key"
	pos, err := s.Position(ctx, ch)
	if err != nil {
		t.Fatal(err)
	}
	pubs, _ := env.collections(t, mg)
	old := otherEpochThan(pos.Epoch)
	if _, err := pubs.InsertOne(ctx, pubDoc{ID: bson.NewObjectID(), Ch: ch, Epoch: old, Seq: 1, Topic: "t", Msg: `"old"`, Time: time.Now(), Key: "k:key1"}); err != nil {
		t.Fatal(err)
	}
	u, err := s.Publish(ctx, ch, "t", json.RawMessage(`"new"`), scaler.PublishOptions{IdempotencyKey: "key1"})
	if err != nil {
		t.Fatal(err)
	}
	if want := (protocol.UID{Epoch: pos.Epoch, Seq: 1}); u != want {
		t.Fatalf("keyed publish over an older epoch's key = %v, want %v (a free seq was skipped)", u, want)
	}
	got, err := s.Since(ctx, ch, pos, 0)
	if err != nil || len(got) != 1 || string(got[0].Msg) != `"new"` {
		t.Fatalf("Since(%v) = %v, %v; want the one new publication", pos, got, err)
	}
}

func otherEpochThan(e string) string {
	if e == "olderEpoch1" {
		return "olderEpoch2"
	}
	return "olderEpoch1"
}

// TestJunkSubscriptionsLeaveNoDocuments: subscribing to and unsubscribing
// from 1,000 fresh channels leaves no channel document, and the empty
// position a client was given (<epoch>.0) stays recoverable on another
// instance.
func TestJunkSubscriptionsLeaveNoDocuments(t *testing.T) {
	rd := testutil.StartRedis(t)
	mg := testutil.SharedMongo(t)
	env := newEnv(t, rd.URL, mg.URI)
	a, b := env.newScaler(t, nil), env.newScaler(t, nil)
	startScaler(t, a)
	closeAtEnd(t, b)
	ctx := tctx(t)
	_, chans := env.collections(t, mg)
	start := time.Now()
	positions := map[string]protocol.UID{}
	for i := range 1000 {
		ch := fmt.Sprintf("junk-%d", i)
		pos, err := a.Subscribe(ctx, ch)
		if err != nil {
			t.Fatal(err)
		}
		if i%100 == 0 {
			positions[ch] = pos
		}
		if err := a.Unsubscribe(ctx, ch); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("1,000 subscribe/unsubscribe pairs took %v", time.Since(start).Round(time.Millisecond))
	n, err := chans.CountDocuments(ctx, bson.D{{Key: "_id", Value: bson.D{{Key: "$ne", Value: ""}}}})
	if err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Fatalf("%d channel documents after 1,000 subscribe/unsubscribe pairs of fresh names, want 0", n)
	}
	for ch, pos := range positions {
		if got, err := b.Since(ctx, ch, pos, 0); err != nil || len(got) != 0 {
			t.Fatalf("Since(%v) of a never-published channel on another instance = %v, %v; want none, recoverable", pos, got, err)
		}
		if p, err := b.Position(ctx, ch); err != nil || p != pos {
			t.Fatalf("Position on another instance = %v, %v; want %v", p, err, pos)
		}
	}
	// The first publication creates the channel in the epoch promised.
	for ch, pos := range positions {
		u, err := b.Publish(ctx, ch, "t", json.RawMessage(`1`), scaler.PublishOptions{})
		if err != nil || u != pos.Next() {
			t.Fatalf("first publish on %q = %v, %v; want %v", ch, u, err, pos.Next())
		}
		if got, err := a.Since(ctx, ch, pos, 0); err != nil || len(got) != 1 || got[0].UID != u {
			t.Fatalf("Since(%v) after the first publish = %v, %v; want %v", pos, got, err, u)
		}
		break
	}
}

// TestRollbackDetected: the newest log entries vanish (as a replica set
// rollback of w:1 writes does). "republished": another instance
// publishes again over the same seqs; "quiet": nothing more is published
// and only the periodic check can tell. Streams that delivered the lost
// entries are reset into a new epoch; no stream delivers new content under
// the old seqs; the old uids are not recoverable.
func TestRollbackDetected(t *testing.T) {
	rd := testutil.StartRedis(t)
	mg := testutil.SharedMongo(t)
	for _, mode := range []string{"republished", "quiet"} {
		t.Run(mode, func(t *testing.T) { testRollback(t, rd, mg, mode) })
	}
}

func testRollback(t *testing.T, rd *testutil.Redis, mg *testutil.Mongo, mode string) {
	env := newEnv(t, rd.URL, mg.URI)
	a, b, c := env.newScaler(t, nil), env.newScaler(t, nil), env.newScaler(t, nil)
	ra, rb := startScaler(t, a), startScaler(t, b)
	closeAtEnd(t, c)
	ctx := tctx(t)
	ch := "rollback-" + mode
	pos, err := a.Subscribe(ctx, ch)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Subscribe(ctx, ch); err != nil {
		t.Fatal(err)
	}
	var old []protocol.UID
	for i := 1; i <= 5; i++ {
		u, err := a.Publish(ctx, ch, "t", json.RawMessage(fmt.Sprintf(`"old-%d"`, i)), scaler.PublishOptions{})
		if err != nil {
			t.Fatal(err)
		}
		old = append(old, u)
	}
	recs := map[string]*recorder{"A": ra, "B": rb}
	for name, r := range recs {
		r.waitFor(t, 10*time.Second, name+" to deliver 1..5", func() bool { return len(r.stream(ch)) == 5 })
	}
	pubs, _ := env.collections(t, mg)
	if res, err := pubs.DeleteMany(ctx, bson.D{{Key: "ch", Value: ch}, {Key: "seq", Value: bson.D{{Key: "$gte", Value: 4}}}}); err != nil || res.DeletedCount != 2 {
		t.Fatalf("deleting seqs 4 and 5: %v, %v", res, err)
	}
	if mode == "republished" {
		for i := 1; i <= 3; i++ {
			u, err := c.Publish(ctx, ch, "t", json.RawMessage(fmt.Sprintf(`"new-%d"`, i)), scaler.PublishOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if i == 1 && u != old[3] {
				t.Fatalf("C's first publish = %v, want %v (the rolled-back seq reused)", u, old[3])
			}
		}
	}
	for name, r := range recs {
		r.waitFor(t, 15*time.Second, name+"'s stream to be reset", func() bool {
			r.mu.Lock()
			defer r.mu.Unlock()
			return len(r.resets) > 0
		})
	}
	last := fenceAll(t, c, ch, ra, rb)
	if last.Epoch == pos.Epoch {
		t.Fatalf("publications after the rollback was noticed are in the old epoch (%v)", last)
	}
	for name, r := range recs {
		for _, p := range r.stream(ch) {
			if p.UID.Epoch == pos.Epoch && strings.Contains(string(p.Msg), "new") {
				t.Errorf("%s delivered %v %s: new content under an old uid", name, p.UID, p.Msg)
			}
		}
		r.mu.Lock()
		resets := append([]resetCall(nil), r.resets...)
		r.mu.Unlock()
		if !errors.Is(resets[0].err, scaler.ErrNotRecoverable) {
			t.Errorf("%s: reset %+v, want an error satisfying ErrNotRecoverable", name, resets[0])
		}
	}
	for _, u := range []protocol.UID{old[3], old[4], old[2]} {
		if got, err := b.Since(ctx, ch, u, 0); !errors.Is(err, scaler.ErrNotRecoverable) {
			t.Errorf("Since(%v) after the rollback = %v, %v; want not recoverable", u, got, err)
		}
	}
}

// TestResetHistoryDeadEpoch: a writer that cached the channel's epoch
// moments before another instance reset the history never acknowledges
// a publication into the dead epoch.
func TestResetHistoryDeadEpoch(t *testing.T) {
	rd := testutil.StartRedis(t)
	mg := testutil.SharedMongo(t)
	env := newEnv(t, rd.URL, mg.URI)
	a, b := env.newScaler(t, nil), env.newScaler(t, nil)
	closeAtEnd(t, a)
	startScaler(t, b)
	ctx := tctx(t)
	const ch = "dead-epoch"
	u1, err := a.Publish(ctx, ch, "t", json.RawMessage(`1`), scaler.PublishOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.resetHistory(ctx, ch); err != nil {
		t.Fatal(err)
	}
	u2, err := a.Publish(ctx, ch, "t", json.RawMessage(`2`), scaler.PublishOptions{})
	if err != nil {
		t.Fatal(err)
	}
	pos, err := b.Position(ctx, ch)
	if err != nil {
		t.Fatal(err)
	}
	if u2.Epoch == u1.Epoch || u2 != (protocol.UID{Epoch: pos.Epoch, Seq: 1}) {
		t.Fatalf("publish after the reset = %v (before: %v, position now %v): acknowledged into the dead epoch", u2, u1, pos)
	}
}

// TestKeyedPublishKeyTrimmedMeanwhile: a retried keyed publish meets a
// duplicate key error from its first copy, which retention removes
// before the writer reads back: the seq it tried is free and is used; the
// writer does not skip it (which would leave a hole).
func TestKeyedPublishKeyTrimmedMeanwhile(t *testing.T) {
	rd := testutil.StartRedis(t)
	mg := testutil.SharedMongo(t)
	env := newEnv(t, rd.URL, mg.URI)
	s := env.newScaler(t, nil)
	closeAtEnd(t, s)
	ctx := tctx(t)
	const ch = "key-trimmed"
	first, err := s.Publish(ctx, ch, "t", json.RawMessage(`"keyed"`), scaler.PublishOptions{IdempotencyKey: "k"})
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if _, err := s.Publish(ctx, ch, "t", json.RawMessage(`"plain"`), scaler.PublishOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	var once sync.Once
	testHookDuplicate = func() {
		once.Do(func() {
			if err := s.trim(ctx, ch, first.Seq); err != nil {
				t.Error(err)
			}
		})
	}
	t.Cleanup(func() { testHookDuplicate = nil })
	u, err := s.Publish(ctx, ch, "t", json.RawMessage(`"keyed again"`), scaler.PublishOptions{IdempotencyKey: "k"})
	if err != nil {
		t.Fatal(err)
	}
	if want := (protocol.UID{Epoch: first.Epoch, Seq: 4}); u != want {
		t.Fatalf("the retry after its first copy was trimmed = %v, want %v (the free seq)", u, want)
	}
	got, err := s.Since(ctx, ch, protocol.UID{Epoch: first.Epoch, Seq: 3}, 0)
	if err != nil || len(got) != 1 || got[0].UID != u {
		t.Fatalf("Since(.3) = %v, %v; want %v (no hole)", got, err, u)
	}
}
