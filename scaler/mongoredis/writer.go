package mongoredis

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/sss-go/sss/protocol"
)

// A writer trusts its cached epoch for epochRecheck while it keeps
// writing, and for idleRecheck after its last write; then it reads the
// channel document again (catches a history reset by another instance or
// a database that lost its data while this process was idle).
const (
	epochRecheck = time.Second
	idleRecheck  = 200 * time.Millisecond
)

// pubReq is one Publish call waiting for its batch.
type pubReq struct {
	doc       pubDoc
	ambiguous bool        // an earlier attempt may have stored it
	gone      atomic.Bool // the caller stopped waiting
	done      chan struct{}
	uid       protocol.UID
	err       error
}

func (r *pubReq) finish(uid protocol.UID, err error) {
	r.uid, r.err = uid, err
	close(r.done)
}

// writer batches the publications of one channel made by this process:
// at most one insertMany per channel is in flight, and what arrives
// meanwhile goes into the next one. Sequence numbers are assigned by the
// unique (ch, ep, seq) index: the writer keeps the next seq in memory,
// moves past conflicts, and re-reads the log's maximum when unsure.
type writer struct {
	s  *Scaler
	ch string

	mu      sync.Mutex
	pending []*pubReq
	running bool
	epoch   string
	next    uint64 // 0: unknown, read from the log before the next write
	checked time.Time
	wrote   time.Time

	// Stored publications waiting to be relayed, in seq order. Relaying
	// runs on its own goroutine so that a slow or absent Redis never
	// holds up writes.
	relayMu      sync.Mutex
	relayQ       []*pubDoc
	relayRunning bool
}

// writerFor returns the channel's writer.
func (s *Scaler) writerFor(ch string) *writer {
	s.writersMu.Lock()
	defer s.writersMu.Unlock()
	w := s.writers[ch]
	if w == nil {
		w = &writer{s: s, ch: ch}
		s.writers[ch] = w
	}
	return w
}

// enqueue adds r and starts the writer goroutine when idle. It reports
// false when the scaler is closing.
func (w *writer) enqueue(r *pubReq) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.pending = append(w.pending, r)
	if w.running {
		return true
	}
	if !w.s.goWorker(w.run) {
		w.pending = w.pending[:len(w.pending)-1]
		return false
	}
	w.running = true
	return true
}

// observe learns from the relay that seq exists in epoch ep.
func (w *writer) observe(ep string, seq uint64) {
	w.mu.Lock()
	if w.next != 0 && ep == w.epoch && seq >= w.next {
		w.next = seq + 1
	}
	w.mu.Unlock()
}

// invalidate forgets the cached epoch and next seq.
func (w *writer) invalidate() {
	w.mu.Lock()
	w.next, w.checked = 0, time.Time{}
	w.mu.Unlock()
}

func (w *writer) run() {
	for {
		w.mu.Lock()
		n := min(len(w.pending), w.s.opts.MaxBatch)
		if n == 0 {
			w.running = false
			w.pending = nil
			w.mu.Unlock()
			return
		}
		batch := make([]*pubReq, n)
		copy(batch, w.pending)
		w.pending = w.pending[n:]
		w.mu.Unlock()
		w.write(batch)
	}
}

// prepare returns the epoch and next seq to write with.
func (w *writer) prepare(ctx context.Context) (string, uint64, error) {
	w.mu.Lock()
	ep, next, checked, wrote := w.epoch, w.next, w.checked, w.wrote
	w.mu.Unlock()
	if ep != "" && next != 0 && time.Since(checked) < epochRecheck && time.Since(wrote) < idleRecheck {
		return ep, next, nil
	}
	d, _, err := w.s.mlog.channel(ctx, w.ch, true)
	if err != nil {
		return "", 0, err
	}
	if d.Epoch != ep {
		next = 0
	}
	if next == 0 {
		m, err := w.s.mlog.maxSeq(ctx, w.ch, d.Epoch)
		if err != nil {
			return "", 0, err
		}
		next = max(m, uint64(d.Floor)) + 1
	}
	w.mu.Lock()
	if w.epoch == d.Epoch {
		next = max(next, w.next)
	}
	w.epoch, w.next, w.checked = d.Epoch, next, time.Now()
	w.mu.Unlock()
	return d.Epoch, next, nil
}

// advance records that seqs below next are taken.
func (w *writer) advance(ep string, next uint64) {
	w.mu.Lock()
	if w.epoch == ep && next > w.next {
		w.next = next
	}
	w.wrote = time.Now()
	w.mu.Unlock()
}

// write stores a batch, retrying within WriteTimeout, then acknowledges
// and relays what was stored.
func (w *writer) write(reqs []*pubReq) {
	s := w.s
	ctx, cancel := context.WithTimeout(s.ctx, s.opts.WriteTimeout)
	defer cancel()
	conflicts := 0
	var lastErr error
	for attempt := 0; ; attempt++ {
		live := reqs[:0]
		for _, r := range reqs {
			if r.gone.Load() {
				r.finish(protocol.UID{}, context.Canceled)
				continue
			}
			live = append(live, r)
		}
		reqs = live
		if len(reqs) == 0 {
			return
		}
		if ctx.Err() != nil {
			if lastErr == nil {
				lastErr = ctx.Err()
			}
			w.failAll(reqs, unavailable("publish "+fmt.Sprintf("%q", w.ch), lastErr))
			return
		}
		ep, next, err := w.prepare(ctx)
		if err != nil {
			lastErr = err
			w.invalidate()
			sleepCtx(ctx, backoff(attempt))
			continue
		}
		docs := make([]any, len(reqs))
		now := time.Now()
		for i, r := range reqs {
			r.doc.Epoch, r.doc.Seq, r.doc.Time = ep, int64(next)+int64(i), now
			docs[i] = &r.doc
		}
		_, err = s.mlog.pubs.InsertMany(ctx, docs, options.InsertMany().SetOrdered(true))
		if err == nil {
			w.advance(ep, next+uint64(len(reqs)))
			w.ack(reqs, nil)
			return
		}
		var bwe mongo.BulkWriteException
		if !errors.As(err, &bwe) || len(bwe.WriteErrors) == 0 || bwe.WriteConcernError != nil {
			// Unknown outcome: any of them may be stored. Their _id
			// tells later attempts whether they were.
			lastErr = err
			for _, r := range reqs {
				r.ambiguous = true
			}
			w.invalidate()
			sleepCtx(ctx, backoff(attempt))
			continue
		}
		first := bwe.WriteErrors[0]
		for _, we := range bwe.WriteErrors {
			if we.Index < first.Index {
				first = we
			}
		}
		i := first.Index
		if i < 0 || i >= len(reqs) {
			lastErr = err
			w.invalidate()
			sleepCtx(ctx, backoff(attempt))
			continue
		}
		// Ordered insert: everything before i is stored.
		w.advance(ep, next+uint64(i))
		w.ack(reqs[:i], nil)
		reqs = reqs[i:]
		if !isDuplicate(first.WriteError) {
			w.failAll(reqs, fmt.Errorf("sss/mongoredis: publish %q: %s", w.ch, first.Message))
			return
		}
		r := reqs[0]
		resolved, err := w.resolveDuplicate(ctx, r, ep, first.Message)
		if err != nil {
			lastErr = err
			sleepCtx(ctx, backoff(attempt))
			continue
		}
		if resolved {
			reqs = reqs[1:]
			continue
		}
		// Another process took seq next+i: move past it. Reading the
		// log's maximum is a collection scan on FerretDB, so it is only
		// done after a long run of conflicts (relay hints usually move
		// next ahead first).
		conflicts++
		if conflicts%32 == 0 {
			w.invalidate()
		} else {
			w.advance(ep, next+uint64(i)+1)
		}
	}
}

// isDuplicate reports whether a write error is a duplicate key error.
func isDuplicate(we mongo.WriteError) bool {
	return we.Code == 11000 || we.Code == 11001 || strings.Contains(we.Message, "E11000")
}

// resolveDuplicate handles a duplicate key error on r: r itself stored by an
// earlier attempt (same _id), or an idempotent retry (same key). It reports
// whether r is finished; false means a sequence conflict.
func (w *writer) resolveDuplicate(ctx context.Context, r *pubReq, ep, msg string) (bool, error) {
	// MongoDB names the index in the message; FerretDB does not.
	bySeq := strings.Contains(msg, indexSeq)
	keyed := !strings.HasPrefix(r.doc.Key, "#")
	if r.ambiguous {
		d, found, err := w.s.mlog.findOne(ctx, bson.D{{Key: "_id", Value: r.doc.ID}})
		if err != nil {
			return false, err
		}
		if found {
			w.ack([]*pubReq{r}, &d)
			return true, nil
		}
	}
	if keyed && !bySeq {
		d, found, err := w.s.mlog.findOne(ctx, bson.D{{Key: "ch", Value: w.ch}, {Key: "ik", Value: r.doc.Key}})
		if err != nil {
			return false, err
		}
		if found {
			if d.Epoch != ep {
				// Left over from an older epoch: it no longer counts.
				if _, err := w.s.mlog.pubs.DeleteOne(ctx, bson.D{{Key: "_id", Value: d.ID}}); err != nil {
					return false, unavailable("publish", err)
				}
				return false, nil
			}
			r.finish(protocol.UID{Epoch: d.Epoch, Seq: uint64(d.Seq)}, nil)
			return true, nil
		}
	}
	return false, nil
}

func (w *writer) failAll(reqs []*pubReq, err error) {
	w.invalidate()
	for _, r := range reqs {
		r.finish(protocol.UID{}, err)
	}
}

// ack finishes stored requests (as stored doc when given) and relays them.
func (w *writer) ack(reqs []*pubReq, stored *pubDoc) {
	if len(reqs) == 0 {
		return
	}
	docs := make([]*pubDoc, len(reqs))
	for i, r := range reqs {
		d := &r.doc
		if stored != nil {
			d = stored
		}
		docs[i] = d
		r.finish(protocol.UID{Epoch: d.Epoch, Seq: uint64(d.Seq)}, nil)
	}
	w.relayMu.Lock()
	defer w.relayMu.Unlock()
	w.relayQ = append(w.relayQ, docs...)
	if !w.relayRunning && w.s.goWorker(w.relayRun) {
		w.relayRunning = true
	}
}

// relayRun relays what ack queued, in order, in pipelined batches.
func (w *writer) relayRun() {
	for {
		w.relayMu.Lock()
		docs := w.relayQ
		w.relayQ = nil
		if len(docs) == 0 {
			w.relayRunning = false
			w.relayMu.Unlock()
			return
		}
		w.relayMu.Unlock()
		w.s.relayPubs(w.ch, docs)
	}
}

// backoff is the pause before retry attempt n.
func backoff(n int) time.Duration {
	d := 20 * time.Millisecond << min(n, 4)
	return min(d, 300*time.Millisecond)
}

// sleepCtx sleeps d or until ctx ends; it reports whether it slept fully.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// newPubReq builds the document of one Publish call.
func newPubReq(ch, topic string, msg json.RawMessage, key string) *pubReq {
	id := bson.NewObjectID()
	if key == "" {
		key = "#" + id.Hex()
	} else {
		key = "k:" + key
	}
	if len(msg) == 0 {
		msg = json.RawMessage("null")
	}
	return &pubReq{
		doc:  pubDoc{ID: id, Ch: ch, Topic: topic, Msg: string(msg), Key: key},
		done: make(chan struct{}),
	}
}
