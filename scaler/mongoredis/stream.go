package mongoredis

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"

	"github.com/sss-go/sss/protocol"
	"github.com/sss-go/sss/scaler"
)

// streams holds this instance's streams, one per channel it serves, and
// what they share: the log they fill from, the handler they deliver to,
// and their timings.
type streams struct {
	mlog      *mlog
	run       *group
	out       *sink
	gapWait   time.Duration // GapWait
	timeout   time.Duration // WriteTimeout: bounds each log read
	checkEach time.Duration // CheckInterval
	// moved tells the channel's writer and every instance that the
	// channel moved to a new epoch (see Scaler.epochMoved).
	moved func(ctx context.Context, ch, ep string) error

	mu sync.Mutex // m
	m  map[string]*stream
}

func newStreams(l *mlog, run *group, out *sink, o *Options, moved func(context.Context, string, string) error) *streams {
	return &streams{
		mlog: l, run: run, out: out,
		gapWait: o.GapWait, timeout: o.WriteTimeout, checkEach: o.CheckInterval,
		moved: moved,
		m:     make(map[string]*stream),
	}
}

// get returns the channel's stream, nil when it is not served.
func (ss *streams) get(ch string) *stream {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	return ss.m[ch]
}

// open returns the channel's stream, creating it (created true) when the
// channel was not served.
func (ss *streams) open(ch string) (st *stream, created bool) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if st := ss.m[ch]; st != nil {
		return st, false
	}
	st = &stream{set: ss, ch: ch, ready: make(chan struct{})}
	ss.m[ch] = st
	return st, true
}

// remove stops the channel's stream (only st when not nil) and runs also
// under the lock (so that a Subscribe racing with it sees both done).
func (ss *streams) remove(ch string, st *stream, also func()) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	cur := ss.m[ch]
	if cur == nil || st != nil && cur != st {
		return
	}
	delete(ss.m, ch)
	cur.removed.Store(true)
	also()
}

// push hands an item to the channel's stream, if it is served.
func (ss *streams) push(ch string, it item) {
	if st := ss.get(ch); st != nil {
		st.push(it)
	}
}

// A stream is this instance's ordered delivery of one channel. Relayed
// publications, checks and fill requests go into its inbox; one worker
// goroutine (started on demand, gone when the inbox is empty) processes
// them in order, so deliveries of a channel never overlap.
type stream struct {
	set   *streams
	ch    string
	ready chan struct{} // closed once the start position is known
	err   error         // set before ready is closed when Subscribe failed

	removed atomic.Bool
	// Copies of epoch and last for the batched checks (read without
	// stopping the worker; a torn pair only causes an extra check).
	seenEpoch atomic.Pointer[string]
	seenLast  atomic.Uint64

	mu       sync.Mutex
	inbox    []item
	running  bool
	started  bool
	lastRecv time.Time

	// Owned by the worker (set by start before the first worker runs).
	epoch   string
	last    uint64
	held    map[uint64]item
	armed   bool
	retries int
	// The _ids of the newest publications delivered (ring by seq): a
	// publication relayed again with the same uid but another _id proves
	// that the log lost what was delivered (see rollback.go). Once it is
	// proven, nothing more of the epoch is delivered.
	ids    [idRing]seqID
	proven bool
}

// idRing is how many of the newest delivered publications a stream
// remembers the _id of.
const idRing = 16

type seqID struct {
	seq uint64
	id  bson.ObjectID
}

// maxHeld bounds the publications a stream holds back while a gap is
// filled.
const maxHeld = 4096

type itemKind uint8

const (
	itemPub    itemKind = iota + 1 // a relayed publication
	itemFill                       // fill the gap before the held publications
	itemCheck                      // compare with the log, fill what is missing
	itemVerify                     // check that the log still holds what was delivered
)

type item struct {
	kind itemKind
	pub  scaler.Publication
	id   bson.ObjectID // the publication's document, zero when unknown
}

// mark publishes epoch and last for the batched checks.
func (st *stream) mark() {
	ep := st.epoch
	st.seenEpoch.Store(&ep)
	st.seenLast.Store(st.last)
}

// push queues it and starts the worker when needed.
func (st *stream) push(it item) {
	if st.removed.Load() {
		return
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	st.inbox = append(st.inbox, it)
	if it.kind == itemPub {
		st.lastRecv = time.Now()
	}
	st.kick()
}

// kick starts the worker; st.mu is held.
func (st *stream) kick() {
	if !st.started || st.running || len(st.inbox) == 0 {
		return
	}
	if st.set.run.spawn(st.run) {
		st.running = true
	}
}

// start sets the position the stream begins after and releases what was
// buffered meanwhile.
func (st *stream) start(pos protocol.UID) {
	st.mu.Lock()
	st.epoch, st.last = pos.Epoch, pos.Seq
	st.mark()
	st.held = make(map[uint64]item)
	st.started = true
	st.lastRecv = time.Now()
	st.kick()
	st.mu.Unlock()
	close(st.ready)
}

func (st *stream) run() {
	for {
		st.mu.Lock()
		items := st.inbox
		st.inbox = nil
		if len(items) == 0 || st.removed.Load() {
			st.running = false
			st.mu.Unlock()
			return
		}
		st.mu.Unlock()
		for _, it := range items {
			if st.removed.Load() {
				break
			}
			switch it.kind {
			case itemPub:
				st.onPub(it)
			case itemFill:
				st.armed = false
				st.fillHeld()
			case itemCheck:
				st.check()
			case itemVerify:
				st.verify()
			}
		}
	}
}

func (st *stream) onPub(it item) {
	p := it.pub
	if p.UID.Epoch != st.epoch {
		st.epochMismatch(it)
		return
	}
	switch {
	case st.proven:
		// The epoch's log is known to have lost what was delivered: its
		// publications wait for the move to a new epoch (retried).
	case p.UID.Seq <= st.last:
		// A duplicate, or before the start position; unless it is
		// another publication than the one delivered with that uid.
		if st.otherThanDelivered(p.UID.Seq, it.id) {
			st.proven = true
			ctx, cancel := st.ctx()
			defer cancel()
			st.rollback(ctx, fmt.Sprintf("a second publication claims seq %d", p.UID.Seq))
		}
	case p.UID.Seq == st.last+1:
		st.deliver(p, it.id)
		st.drainHeld()
	default:
		// Beyond maxHeld, publications are left to the log: the fill
		// (or the next check) reads them.
		if len(st.held) < maxHeld {
			st.held[p.UID.Seq] = it
		}
		st.arm(st.set.gapWait)
	}
}

// otherThanDelivered reports whether the stream delivered seq as another
// document than id (both known).
func (st *stream) otherThanDelivered(seq uint64, id bson.ObjectID) bool {
	r := st.ids[seq%idRing]
	return r.seq == seq && !r.id.IsZero() && !id.IsZero() && r.id != id
}

// arm schedules a fill of the held publications after d.
func (st *stream) arm(d time.Duration) {
	if st.armed {
		return
	}
	st.armed = true
	st.set.run.after(d, func() { st.push(item{kind: itemFill}) })
}

func (st *stream) deliver(p scaler.Publication, id bson.ObjectID) {
	st.last = p.UID.Seq
	st.ids[p.UID.Seq%idRing] = seqID{p.UID.Seq, id}
	st.seenLast.Store(st.last)
	if h := st.set.out.handler().Publication; h != nil && !st.removed.Load() {
		h(p)
	}
}

// drainHeld delivers held publications that became next in line.
func (st *stream) drainHeld() {
	for {
		it, ok := st.held[st.last+1]
		if !ok {
			break
		}
		delete(st.held, st.last+1)
		st.deliver(it.pub, it.id)
	}
	for seq := range st.held {
		if seq <= st.last {
			delete(st.held, seq)
		}
	}
}

func (st *stream) lowestHeld() uint64 {
	var low uint64
	for seq := range st.held {
		if low == 0 || seq < low {
			low = seq
		}
	}
	return low
}

func (st *stream) ctx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(st.set.run.ctx, st.set.timeout)
}

// retry schedules another attempt after a failed log read.
func (st *stream) retry(kind itemKind, err error) {
	st.retries++
	st.set.out.event(scaler.EventBackendError, st.ch, 0, opError(fmt.Sprintf("stream %q", st.ch), err))
	d := min(st.set.gapWait<<min(st.retries, 6), 2*time.Second)
	if kind == itemFill {
		st.arm(d)
		return
	}
	st.set.run.after(d, func() { st.push(item{kind: kind}) })
}

// fillHeld reads from the log what is missing before the lowest held
// publication, then delivers in order.
func (st *stream) fillHeld() {
	if st.proven {
		return
	}
	low := st.lowestHeld()
	if low == 0 {
		return
	}
	if low == st.last+1 {
		st.drainHeld()
		return
	}
	if !st.fill(low) {
		return
	}
	st.drainHeld()
	if len(st.held) > 0 {
		st.arm(st.set.gapWait)
	}
}

// fill delivers the stored publications after st.last (and before
// `before` when not 0). A hole in the log (trimmed, or history reset) is
// reported with Handler.Reset and skipped. It reports false when the log
// could not be read (a retry is scheduled).
func (st *stream) fill(before uint64) bool {
	ctx, cancel := st.ctx()
	defer cancel()
	docs, err := st.set.mlog.readRange(ctx, st.ch, st.epoch, st.last, before, 0)
	if err != nil {
		st.retry(itemFill, err)
		return false
	}
	st.retries = 0
	filled := 0
	for i := range docs {
		d := &docs[i]
		seq := uint64(d.Seq)
		if seq <= st.last {
			continue
		}
		if seq != st.last+1 {
			if !st.lost(ctx, seq-1) {
				return true
			}
		}
		st.deliver(d.publication(), d.ID)
		filled++
	}
	if filled > 0 {
		st.set.out.logger.Warn("sss/mongoredis: relay gap filled from the log", "channel", st.ch, "count", filled)
		st.set.out.event(scaler.EventGapFilled, st.ch, filled, nil)
	}
	if before > 0 && st.last+1 < before {
		st.lost(ctx, before-1)
	}
	return true
}

// lost handles publications st.last+1..upTo missing from the log: the
// epoch changed, or they were trimmed. It reports whether the stream
// stays in the same epoch.
func (st *stream) lost(ctx context.Context, upTo uint64) bool {
	info, err := st.set.mlog.lookup(ctx, st.ch)
	if err == nil && info.doc.Epoch != st.epoch {
		st.resetEpoch(info.doc.Epoch, nil)
		st.push(item{kind: itemCheck})
		return false
	}
	err = fmt.Errorf("sss/mongoredis: channel %q: %w", st.ch, scaler.ErrTrimmed)
	pos := protocol.UID{Epoch: st.epoch, Seq: upTo}
	st.set.out.logger.Warn("sss/mongoredis: publications lost", "channel", st.ch, "uid", pos.String(), "err", err)
	st.set.out.event(scaler.EventGapLost, st.ch, int(upTo-st.last), err)
	st.last = upTo
	st.mark()
	st.reset(pos, err)
	return true
}

// resetEpoch moves the stream to a new epoch and reports it (with err,
// or a plain ErrEpochChanged when nil).
func (st *stream) resetEpoch(ep string, err error) {
	if err == nil {
		err = fmt.Errorf("sss/mongoredis: channel %q: %w", st.ch, scaler.ErrEpochChanged)
	}
	pos := protocol.UID{Epoch: ep}
	st.set.out.logger.Warn("sss/mongoredis: channel history reset", "channel", st.ch, "uid", pos.String(), "err", err)
	st.set.out.event(scaler.EventGapLost, st.ch, 0, err)
	st.epoch, st.last = ep, 0
	st.mark()
	clear(st.held)
	st.ids = [idRing]seqID{}
	st.proven = false
	st.reset(pos, err)
}

// reset reports to the handler that the stream goes on after pos with a
// hole (err says why).
func (st *stream) reset(pos protocol.UID, err error) {
	if h := st.set.out.handler().Reset; h != nil && !st.removed.Load() {
		h(st.ch, pos, err)
	}
}

// lookup reads the channel's document; when it cannot, it schedules
// another attempt of kind and reports false.
func (st *stream) lookup(ctx context.Context, kind itemKind) (chanInfo, bool) {
	info, err := st.set.mlog.lookup(ctx, st.ch)
	if err != nil {
		st.retry(kind, err)
		return chanInfo{}, false
	}
	return info, true
}

// epochMismatch handles a publication of another epoch than the stream's.
func (st *stream) epochMismatch(it item) {
	ctx, cancel := st.ctx()
	defer cancel()
	info, ok := st.lookup(ctx, itemCheck)
	if !ok {
		return
	}
	d := info.doc
	if d.Epoch == st.epoch {
		return // a late message of an old epoch
	}
	st.resetEpoch(d.Epoch, nil)
	if it.pub.UID.Epoch == d.Epoch {
		st.onPub(it)
	}
}

// check compares the stream with the log and fills what it missed.
func (st *stream) check() {
	if st.proven {
		st.verify()
		return
	}
	ctx, cancel := st.ctx()
	defer cancel()
	info, ok := st.lookup(ctx, itemCheck)
	if !ok {
		return
	}
	d := info.doc
	if d.Epoch != st.epoch {
		st.resetEpoch(d.Epoch, nil)
	}
	if uint64(d.Floor) > st.last {
		docs, err := st.set.mlog.readRange(ctx, st.ch, st.epoch, st.last, 0, 1)
		if err != nil {
			st.retry(itemCheck, err)
			return
		}
		upTo := uint64(d.Floor)
		if len(docs) > 0 {
			upTo = uint64(docs[0].Seq) - 1
		}
		if upTo > st.last {
			st.lost(ctx, upTo)
		}
	}
	if !st.fill(0) {
		return
	}
	st.drainHeld()
}
