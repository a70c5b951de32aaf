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

	"github.com/sss-go/sss/internal/backoff"
	"github.com/sss-go/sss/protocol"
	"github.com/sss-go/sss/scaler"
)

// States of a publish request, shared by Publish and the writer.
const (
	reqQueued  int32 = iota // not on the wire: Publish may withdraw it
	reqSending              // in an insert, or in one whose outcome is unknown
	reqGone                 // withdrawn by Publish before it was sent
)

// pubReq is one Publish call waiting for its batch.
type pubReq struct {
	doc   pubDoc
	state atomic.Int32
	// abandoned: Publish returned ErrUncertain; the writer does not send
	// the request again (only an insert already on the wire may store it).
	abandoned atomic.Bool
	// maybeStored: an insert carrying the request had an unknown
	// outcome, so it may be stored. Owned by the writer goroutine.
	maybeStored bool
	once        sync.Once
	done        chan struct{}
	uid         protocol.UID
	err         error
}

func (r *pubReq) finish(uid protocol.UID, err error) {
	r.once.Do(func() {
		r.uid, r.err = uid, err
		close(r.done)
	})
}

// withdraw takes back a request that never left the process; it reports
// false once the request is (or was) on the wire.
func (r *pubReq) withdraw() bool { return r.state.CompareAndSwap(reqQueued, reqGone) }

// keyed reports whether the request has an idempotency key.
func (r *pubReq) keyed() bool { return !strings.HasPrefix(r.doc.Key, "#") }

// renew gives the request a new _id (and, without an idempotency key, a
// new key), so that a copy stored in a dead epoch is never taken for it.
func (r *pubReq) renew() {
	r.doc.ID = bson.NewObjectID()
	if !r.keyed() {
		r.doc.Key = "#" + r.doc.ID.Hex()
	}
}

// writer batches the publications of one channel made by this process:
// at most one insertMany per channel is in flight, and what arrives
// meanwhile goes into the next one. Sequence numbers are assigned by the
// unique (ch, ep, seq) index: the writer keeps the next seq in memory;
// only a seq found taken moves it forward (see writer_conflict.go).
// Every insert is confirmed by reading the channel's epoch afterwards: an
// insert into an epoch that ended meanwhile (history reset, rollback
// noticed, database wiped) is not acknowledged but written again in the
// new one.
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
	// Turns (writer_lock.go): taken until contendedUntil, not before
	// lockOffUntil; the next one not before yieldUntil.
	contendedUntil time.Time
	lockOffUntil   time.Time
	yieldUntil     time.Time

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

// invalidate forgets the next seq: it is read from the log again.
func (w *writer) invalidate() {
	w.mu.Lock()
	w.next = 0
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

// prepare returns the epoch and next seq to write with: the cached ones,
// else the channel's (created on its first publish) and the log's.
func (w *writer) prepare(ctx context.Context) (string, uint64, error) {
	w.mu.Lock()
	ep, next := w.epoch, w.next
	w.mu.Unlock()
	if ep != "" && next != 0 {
		return ep, next, nil
	}
	if _, err := w.s.mlog.ensureChannel(ctx, w.ch); err != nil {
		return "", 0, err
	}
	_, pos, err := w.s.mlog.tip(ctx, w.ch)
	if err != nil {
		return "", 0, err
	}
	next = pos.Seq + 1
	w.mu.Lock()
	if w.epoch == pos.Epoch {
		next = max(next, w.next)
	}
	w.epoch, w.next, w.checked = pos.Epoch, next, time.Now()
	w.mu.Unlock()
	return pos.Epoch, next, nil
}

// setNext records the next seq to try in epoch ep (it may go back, to a
// seq found free after a duplicate key error).
func (w *writer) setNext(ep string, next uint64) {
	w.mu.Lock()
	if w.epoch == ep {
		w.next = next
	}
	w.mu.Unlock()
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
	ctx, cancel := context.WithTimeout(w.s.ctx, w.s.opts.WriteTimeout)
	defer cancel()
	var (
		lastErr   error
		conflicts int
	)
	for attempt := 0; ; attempt++ {
		reqs = dropGone(reqs)
		if len(reqs) == 0 {
			return
		}
		if ctx.Err() != nil {
			if lastErr == nil {
				lastErr = ctx.Err()
			}
			w.giveUp(reqs, lastErr)
			return
		}
		var wait time.Duration
		var err error
		reqs, wait, err = w.turn(ctx, reqs, attempt, &conflicts)
		if err != nil {
			lastErr = err
		}
		release(reqs)
		if wait > 0 && len(reqs) > 0 {
			backoff.Sleep(ctx, wait)
		}
	}
}

// turn runs one attempt, holding the channel's write lock when the
// writer takes turns with others.
func (w *writer) turn(ctx context.Context, reqs []*pubReq, n int, conflicts *int) ([]*pubReq, time.Duration, error) {
	if !w.contended() {
		return w.attempt(ctx, reqs, n, conflicts)
	}
	w.mu.Lock()
	yield := time.Until(w.yieldUntil)
	w.mu.Unlock()
	if yield > 0 {
		backoff.Sleep(ctx, yield) // another writer waited for the last turn: let it go first
	}
	token, hint := w.lock(ctx)
	if hint != "" {
		w.mu.Lock()
		if h, ok := parseHint(hint, w.epoch); ok && w.next != 0 && h >= w.next {
			w.next = h + 1
		}
		w.mu.Unlock()
	}
	reqs, wait, err := w.attempt(ctx, reqs, n, conflicts)
	if token != "" {
		w.mu.Lock()
		ep, top := w.epoch, w.next
		w.mu.Unlock()
		if top > 0 {
			top--
		}
		if pause := w.unlock(token, ep, top); pause > 0 {
			w.mu.Lock()
			w.yieldUntil = time.Now().Add(pause)
			w.mu.Unlock()
		}
	}
	return reqs, wait, err
}

// dropGone drops the requests Publish withdrew or gave up on.
func dropGone(reqs []*pubReq) []*pubReq {
	live := reqs[:0]
	for _, r := range reqs {
		if r.state.Load() != reqGone && !r.abandoned.Load() {
			live = append(live, r)
		}
	}
	return live
}

// claim marks the requests as being sent, right before their insert,
// dropping those Publish withdrew.
func claim(reqs []*pubReq) []*pubReq {
	live := reqs[:0]
	for _, r := range reqs {
		if r.state.CompareAndSwap(reqQueued, reqSending) || r.state.Load() == reqSending {
			live = append(live, r)
		}
	}
	return live
}

// release lets Publish withdraw the requests that are surely not stored,
// between two attempts.
func release(reqs []*pubReq) {
	for _, r := range reqs {
		if !r.maybeStored {
			r.state.CompareAndSwap(reqSending, reqQueued)
		}
	}
}

// attempt makes one insert of reqs and deals with its outcome. It returns
// the requests still to write, how long to wait before the next attempt,
// and the error that made it fail, if any.
func (w *writer) attempt(ctx context.Context, reqs []*pubReq, n int, conflicts *int) ([]*pubReq, time.Duration, error) {
	ep, next, err := w.prepare(ctx)
	if err != nil {
		w.invalidate()
		return reqs, retryWait(n), err
	}
	if reqs = claim(reqs); len(reqs) == 0 {
		return nil, 0, nil
	}
	docs := make([]any, len(reqs))
	now := time.Now()
	for i, r := range reqs {
		r.doc.Epoch, r.doc.Seq, r.doc.Time = ep, int64(next)+int64(i), now
		docs[i] = &r.doc
	}
	_, err = w.s.mlog.pubs.InsertMany(ctx, docs, options.InsertMany().SetOrdered(true))
	stored, we := insertOutcome(err, len(reqs))
	if stored < 0 {
		// Unknown outcome: any of them may be stored. Their _id tells
		// later attempts whether they were.
		for _, r := range reqs {
			r.maybeStored = true
		}
		w.invalidate()
		return reqs, retryWait(n), err
	}
	if stored > 0 {
		ok, err := w.confirm(ctx, ep, reqs[:stored], nil)
		if err != nil || !ok {
			return reqs, retryWait(n), err
		}
		w.advance(ep, next+uint64(stored))
		reqs = reqs[stored:]
	}
	if we == nil {
		return reqs, 0, nil
	}
	r := reqs[0]
	if !isDuplicate(*we) {
		// Rejected (too large, invalid): stored nowhere.
		r.finish(protocol.UID{}, fmt.Errorf("sss/mongoredis: publish %q: %s", w.ch, we.Message))
		return reqs[1:], 0, nil
	}
	return w.duplicate(ctx, reqs, ep, next+uint64(stored), n, conflicts)
}

// insertOutcome reads an ordered insertMany's error: how many documents
// are surely stored (-1: unknown) and the write error of the first one
// that was not (nil: all stored).
func insertOutcome(err error, n int) (int, *mongo.WriteError) {
	if err == nil {
		return n, nil
	}
	var bwe mongo.BulkWriteException
	if !errors.As(err, &bwe) || len(bwe.WriteErrors) == 0 || bwe.WriteConcernError != nil {
		return -1, nil
	}
	first := bwe.WriteErrors[0]
	for _, we := range bwe.WriteErrors {
		if we.Index < first.Index {
			first = we
		}
	}
	if first.Index < 0 || first.Index >= n {
		return -1, nil
	}
	return first.Index, &first.WriteError
}

// isDuplicate reports whether a write error is a duplicate key error.
func isDuplicate(we mongo.WriteError) bool {
	return we.Code == 11000 || we.Code == 11001 || strings.Contains(we.Message, "E11000")
}

// giveUp fails the requests once WriteTimeout has passed: those that may
// be stored with ErrUncertain, the others with ErrUnavailable.
func (w *writer) giveUp(reqs []*pubReq, err error) {
	w.invalidate()
	for _, r := range reqs {
		if r.maybeStored {
			r.finish(protocol.UID{}, fmt.Errorf("sss/mongoredis: publish %q: %w: %w", w.ch, scaler.ErrUncertain, err))
		} else {
			r.finish(protocol.UID{}, unavailable(fmt.Sprintf("publish %q", w.ch), err))
		}
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

// retryPolicy paces the retries of backend calls: 20 ms doubling to
// 300 ms.
var retryPolicy = backoff.Policy{Base: 20 * time.Millisecond, Cap: 300 * time.Millisecond}

// retryWait is the pause before retry attempt n.
func retryWait(n int) time.Duration { return retryPolicy.Wait(n) }

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
