package mongoredis

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
	"go.mongodb.org/mongo-driver/v2/mongo"

	"github.com/sss-go/sss/internal/backoff"
	"github.com/sss-go/sss/protocol"
	"github.com/sss-go/sss/scaler"
)

// writers holds the channels' writers of this process and what they
// share: the log they insert into, the relay they publish on, and Redis
// for the channels' write turns (writer_lock.go).
type writers struct {
	mlog     *mlog
	relay    *relay
	rdb      redis.UniversalClient
	run      *group
	out      *sink
	prefix   string
	maxBatch int
	timeout  time.Duration // WriteTimeout

	mu sync.Mutex // m
	m  map[string]*writer
}

func newWriters(l *mlog, r *relay, rdb redis.UniversalClient, run *group, out *sink, o *Options) *writers {
	return &writers{
		mlog: l, relay: r, rdb: rdb, run: run, out: out,
		prefix: o.Prefix, maxBatch: o.MaxBatch, timeout: o.WriteTimeout,
		m: make(map[string]*writer),
	}
}

// get returns the channel's writer, creating it.
func (ws *writers) get(ch string) *writer {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	w := ws.m[ch]
	if w == nil {
		w = &writer{ws: ws, ch: ch}
		ws.m[ch] = w
	}
	return w
}

// find returns the channel's writer, nil when there is none.
func (ws *writers) find(ch string) *writer {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	return ws.m[ch]
}

// observe tells the channel's writer (if any) that seq exists in ep.
func (ws *writers) observe(ch, ep string, seq uint64) {
	if w := ws.find(ch); w != nil {
		w.observe(ep, seq)
	}
}

// invalidate makes the channel's writer (if any) read its next seq from
// the log again.
func (ws *writers) invalidate(ch string) {
	if w := ws.find(ch); w != nil {
		w.invalidate()
	}
}

// writerIdle is how long a channel's writer stays cached after its last
// write.
const writerIdle = time.Minute

// sweep forgets writers idle for writerIdle, so that a process
// publishing to many channels over time does not keep one per channel.
func (ws *writers) sweep() {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	for ch, w := range ws.m {
		if w.idle() {
			delete(ws.m, ch)
		}
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
	ws *writers
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

// idle reports whether the writer has nothing to do and has not written
// or checked its epoch for writerIdle.
func (w *writer) idle() bool {
	w.mu.Lock()
	idle := !w.running && len(w.pending) == 0 && time.Since(w.wrote) > writerIdle && time.Since(w.checked) > writerIdle
	w.mu.Unlock()
	w.relayMu.Lock()
	defer w.relayMu.Unlock()
	return idle && !w.relayRunning && len(w.relayQ) == 0
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
	if !w.ws.run.spawn(w.run) {
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
		n := min(len(w.pending), w.ws.maxBatch)
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
	if _, err := w.ws.mlog.ensureChannel(ctx, w.ch); err != nil {
		return "", 0, err
	}
	_, pos, err := w.ws.mlog.tip(ctx, w.ch)
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
	ctx, cancel := context.WithTimeout(w.ws.run.ctx, w.ws.timeout)
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
	docs := make([]*pubDoc, len(reqs))
	now := time.Now()
	for i, r := range reqs {
		r.doc.Epoch, r.doc.Seq, r.doc.Time = ep, int64(next)+int64(i), now
		docs[i] = &r.doc
	}
	err = w.ws.mlog.insert(ctx, docs)
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
		r.finish(protocol.UID{}, fmt.Errorf("rejected by MongoDB: %s", we.Message))
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
			r.finish(protocol.UID{}, fmt.Errorf("%w: %w", scaler.ErrUncertain, err))
		} else {
			r.finish(protocol.UID{}, unavailable("insert", err))
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
	if !w.relayRunning && w.ws.run.spawn(w.relayRun) {
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
		w.relayPubs(docs)
	}
}

// relayPubs publishes stored publications on the relay, in order, and
// raises the channel's seq hint (writer_lock.go) to the last of them. A
// failure is reported, not returned: the publications are durable and
// every subscriber fills them from the log.
func (w *writer) relayPubs(docs []*pubDoc) {
	ws := w.ws
	ctx, cancel := context.WithTimeout(ws.run.ctx, relayTimeout)
	defer cancel()
	pipe := ws.rdb.Pipeline()
	ws.relay.queuePubs(ctx, pipe, w.ch, docs)
	top := docs[0]
	for _, d := range docs {
		if d.Epoch == top.Epoch && d.Seq > top.Seq {
			top = d
		}
	}
	raiseHint.Eval(ctx, pipe, []string{ws.hintKey(w.ch)}, top.Epoch, top.Seq, hintTTL.Milliseconds())
	_, err := pipe.Exec(ctx)
	if err != nil && ws.run.ctx.Err() == nil {
		ws.out.event(scaler.EventBackendError, w.ch, len(docs), opError(fmt.Sprintf("relay %q", w.ch), err))
	}
}

// retryPolicy paces the retries of backend calls: 20 ms doubling to
// 300 ms.
var retryPolicy = backoff.Policy{Base: 20 * time.Millisecond, Cap: 300 * time.Millisecond}

// retryWait is the pause before retry attempt n.
func retryWait(n int) time.Duration { return retryPolicy.Wait(n) }
