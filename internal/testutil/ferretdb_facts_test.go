package testutil

// Facts about FerretDB (the test MongoDB) that scaler/mongoredis relies on
// or must work around; see internal/ferretdb and the test MongoDB section of scaler/mongoredis/README.md. Each test
// states what it found, so a change of FerretDB shows up here first.

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
)

func factsColl(t *testing.T) (context.Context, *mongo.Collection) {
	t.Helper()
	m := SharedMongo(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	db := m.Client(t).Database(DBName(t))
	t.Cleanup(func() {
		dctx, dcancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer dcancel()
		_ = db.Drop(dctx)
	})
	return ctx, db.Collection("log")
}

func uniqueChannelSeq(ctx context.Context, t *testing.T, c *mongo.Collection) {
	t.Helper()
	_, err := c.Indexes().CreateOne(ctx, mongo.IndexModel{
		Keys:    bson.D{{Key: "channel", Value: 1}, {Key: "seq", Value: 1}},
		Options: options.Index().SetUnique(true),
	})
	if err != nil {
		t.Fatalf("create unique index: %v", err)
	}
}

// Fact 1: a unique compound index on (channel, seq) is enforced, and the
// driver recognises the violation as a duplicate key error.
func TestFerretUniqueIndexRejectsDuplicate(t *testing.T) {
	CheckLeaks(t)
	ctx, c := factsColl(t)
	uniqueChannelSeq(ctx, t, c)
	tests := []struct {
		name    string
		channel string
		seq     int64
		wantDup bool
	}{
		{"first", "a", 1, false},
		{"same seq other channel", "b", 1, false},
		{"next seq", "a", 2, false},
		{"duplicate", "a", 1, true},
		{"duplicate other channel", "b", 1, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := c.InsertOne(ctx, bson.D{{Key: "channel", Value: tc.channel}, {Key: "seq", Value: tc.seq}})
			if got := mongo.IsDuplicateKeyError(err); got != tc.wantDup {
				t.Fatalf("insert (%s, %d): err = %v, IsDuplicateKeyError = %v, want %v", tc.channel, tc.seq, err, got, tc.wantDup)
			}
			if !tc.wantDup && err != nil {
				t.Fatalf("insert: %v", err)
			}
		})
	}
	n, err := c.CountDocuments(ctx, bson.D{})
	if err != nil || n != 3 {
		t.Fatalf("count = %d, %v; want 3 (duplicates must not be stored)", n, err)
	}
}

// Fact 2: findOneAndUpdate with $inc and upsert, called concurrently, is
// NOT atomic on FerretDB: increments are lost (several calls return the
// same value, and a stale write can even move the counter backwards), and
// racing upserts may fail with a duplicate key error. On MongoDB it is
// atomic. How much a run loses depends on scheduling, so the test asserts
// only what holds either way (no other errors; values and the final counter
// within [1, calls made]) and logs the measured loss. mongoredis must not
// rely on $inc counters.
func TestFerretIncUpsertNotAtomic(t *testing.T) {
	CheckLeaks(t)
	ctx, c := factsColl(t)
	const goroutines, calls = 8, 100
	var (
		mu     sync.Mutex
		values = map[int64]int{}
		dups   atomic.Int64
		others []error
		wg     sync.WaitGroup
	)
	opts := options.FindOneAndUpdate().SetUpsert(true).SetReturnDocument(options.After)
	for g := 0; g < goroutines; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < calls; i++ {
				var doc struct {
					N int64 `bson:"n"`
				}
				err := c.FindOneAndUpdate(ctx, bson.D{{Key: "_id", Value: "counter"}},
					bson.D{{Key: "$inc", Value: bson.D{{Key: "n", Value: int64(1)}}}}, opts).Decode(&doc)
				mu.Lock()
				switch {
				case err == nil:
					values[doc.N]++
				case mongo.IsDuplicateKeyError(err):
					dups.Add(1)
				default:
					others = append(others, err)
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if len(others) > 0 {
		t.Fatalf("%d unexpected errors, first: %v", len(others), others[0])
	}
	var doc struct {
		N int64 `bson:"n"`
	}
	if err := c.FindOne(ctx, bson.D{{Key: "_id", Value: "counter"}}).Decode(&doc); err != nil {
		t.Fatalf("read counter: %v", err)
	}
	ok := int64(goroutines*calls) - dups.Load()
	repeated := 0
	for v, n := range values {
		// Not "v <= final": a stale read-modify-write can even move the
		// counter back below a value already returned (seen: 119, final 116).
		if v < 1 || v > goroutines*calls {
			t.Fatalf("a call returned %d, outside [1, %d calls]", v, goroutines*calls)
		}
		repeated += n - 1
	}
	if doc.N < 1 || doc.N > goroutines*calls {
		t.Fatalf("final counter %d outside [1, %d calls]", doc.N, goroutines*calls)
	}
	t.Logf("FerretDB $inc upsert, %d goroutines x %d: %d ok, %d duplicate-key errors, %d distinct values, %d repeated, final %d, lost %d",
		goroutines, calls, ok, dups.Load(), len(values), repeated, doc.N, ok-doc.N)
	if doc.N == ok {
		t.Logf("no increment lost on this run; FerretDB still gives no atomicity guarantee")
	}
}

// Fact 3: inserts under the unique (channel, seq) index from several
// goroutines while another trims old seqs with deleteMany: no errors, every
// seq at or above the trim point is present exactly once, none below it.
func TestFerretInsertWhileTrimming(t *testing.T) {
	CheckLeaks(t)
	ctx, c := factsColl(t)
	uniqueChannelSeq(ctx, t, c)
	const writers, perWriter, keep = 8, 50, 100
	const total = writers * perWriter

	var (
		inserted atomic.Int64 // completed inserts
		cutoff   atomic.Int64 // seqs below it are trimmed
		errMu    sync.Mutex
		errs     []error
		wg       sync.WaitGroup
	)
	fail := func(err error) {
		errMu.Lock()
		errs = append(errs, err)
		errMu.Unlock()
	}
	trim := func(below int64) {
		if _, err := c.DeleteMany(ctx, bson.D{{Key: "channel", Value: "ch"}, {Key: "seq", Value: bson.D{{Key: "$lt", Value: below}}}}); err != nil {
			fail(fmt.Errorf("deleteMany seq < %d: %w", below, err))
		}
	}
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < perWriter; i++ {
				seq := int64(i*writers + w + 1) // writers interleave over 1..total
				if _, err := c.InsertOne(ctx, bson.D{{Key: "channel", Value: "ch"}, {Key: "seq", Value: seq}}); err != nil {
					fail(fmt.Errorf("insert seq %d: %w", seq, err))
					return
				}
				inserted.Add(1)
			}
		}()
	}
	writersDone := make(chan struct{})
	go func() { wg.Wait(); close(writersDone) }()
	trims := 0
	for done := false; !done; {
		select {
		case <-writersDone:
			done = true
		default:
		}
		if n := inserted.Load() - keep; n > cutoff.Load() {
			cutoff.Store(n)
			trim(n)
			trims++
		}
		if !done {
			select {
			case <-writersDone:
			case <-time.After(5 * time.Millisecond): // trimming pace, not a sync
			}
		}
	}
	final := int64(total - keep + 1)
	trim(final) // seqs below final inserted after the last trim go too
	if len(errs) > 0 {
		t.Fatalf("%d errors, first: %v", len(errs), errs[0])
	}

	cur, err := c.Find(ctx, bson.D{{Key: "channel", Value: "ch"}})
	if err != nil {
		t.Fatalf("find: %v", err)
	}
	var docs []struct {
		Seq int64 `bson:"seq"`
	}
	if err := cur.All(ctx, &docs); err != nil {
		t.Fatalf("read: %v", err)
	}
	seqs := make([]int64, len(docs))
	for i, d := range docs {
		seqs[i] = d.Seq
	}
	sort.Slice(seqs, func(i, j int) bool { return seqs[i] < seqs[j] })
	if len(seqs) != keep {
		t.Fatalf("%d docs left, want %d (seqs %d..%d): %v", len(seqs), keep, final, total, seqs)
	}
	for i, s := range seqs {
		if want := final + int64(i); s != want {
			t.Fatalf("seq #%d = %d, want %d: %v", i, s, want, seqs)
		}
	}
	if trims == 0 {
		t.Errorf("no trim ran while writing; the test proved nothing about concurrency")
	}
	t.Logf("%d inserts by %d writers, %d trims while writing", total, writers, trims)
}
