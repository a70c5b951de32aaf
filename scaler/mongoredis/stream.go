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

// A stream is this instance's ordered delivery of one channel. Relayed
// publications, checks and fill requests go into its inbox; one worker
// goroutine (started on demand, gone when the inbox is empty) processes
// them in order, so deliveries of a channel never overlap.
type stream struct {
	s     *Scaler
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

func (s *Scaler) stream(ch string) *stream {
	s.streamsMu.Lock()
	defer s.streamsMu.Unlock()
	return s.streams[ch]
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
	if st.s.goWorker(st.run) {
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
		st.arm(st.s.opts.GapWait)
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
	st.s.afterFunc(d, func() { st.push(item{kind: itemFill}) })
}

func (st *stream) deliver(p scaler.Publication, id bson.ObjectID) {
	st.last = p.UID.Seq
	st.ids[p.UID.Seq%idRing] = seqID{p.UID.Seq, id}
	st.seenLast.Store(st.last)
	if h := st.s.handler().Publication; h != nil && !st.removed.Load() {
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
	return context.WithTimeout(st.s.ctx, st.s.opts.WriteTimeout)
}

// retry schedules another attempt after a failed log read.
func (st *stream) retry(kind itemKind, err error) {
	st.retries++
	st.s.event(scaler.EventBackendError, st.ch, 0, err)
	d := min(st.s.opts.GapWait<<min(st.retries, 6), 2*time.Second)
	if kind == itemFill {
		st.arm(d)
		return
	}
	st.s.afterFunc(d, func() { st.push(item{kind: kind}) })
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
		st.arm(st.s.opts.GapWait)
	}
}

// fill delivers the stored publications after st.last (and before
// `before` when not 0). A hole in the log (trimmed, or history reset) is
// reported with Handler.Reset and skipped. It reports false when the log
// could not be read (a retry is scheduled).
func (st *stream) fill(before uint64) bool {
	ctx, cancel := st.ctx()
	defer cancel()
	docs, err := st.s.mlog.readRange(ctx, st.ch, st.epoch, st.last, before, 0)
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
		st.s.log.Warn("sss/mongoredis: relay gap filled from the log", "channel", st.ch, "count", filled)
		st.s.event(scaler.EventGapFilled, st.ch, filled, nil)
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
	info, err := st.s.mlog.lookup(ctx, st.ch)
	if err == nil && info.doc.Epoch != st.epoch {
		st.resetEpoch(info.doc.Epoch, nil)
		st.push(item{kind: itemCheck})
		return false
	}
	err = fmt.Errorf("sss/mongoredis: channel %q: %w", st.ch, scaler.ErrTrimmed)
	pos := protocol.UID{Epoch: st.epoch, Seq: upTo}
	st.s.log.Warn("sss/mongoredis: publications lost", "channel", st.ch, "uid", pos.String(), "err", err)
	st.s.event(scaler.EventGapLost, st.ch, int(upTo-st.last), err)
	st.last = upTo
	st.mark()
	if h := st.s.handler().Reset; h != nil && !st.removed.Load() {
		h(st.ch, pos, err)
	}
	return true
}

// resetEpoch moves the stream to a new epoch and reports it (with err,
// or a plain ErrEpochChanged when nil).
func (st *stream) resetEpoch(ep string, err error) {
	if err == nil {
		err = fmt.Errorf("sss/mongoredis: channel %q: %w", st.ch, scaler.ErrEpochChanged)
	}
	pos := protocol.UID{Epoch: ep}
	st.s.log.Warn("sss/mongoredis: channel history reset", "channel", st.ch, "uid", pos.String(), "err", err)
	st.s.event(scaler.EventGapLost, st.ch, 0, err)
	st.epoch, st.last = ep, 0
	st.mark()
	clear(st.held)
	st.ids = [idRing]seqID{}
	st.proven = false
	if h := st.s.handler().Reset; h != nil && !st.removed.Load() {
		h(st.ch, pos, err)
	}
}

// epochMismatch handles a publication of another epoch than the stream's.
func (st *stream) epochMismatch(it item) {
	ctx, cancel := st.ctx()
	defer cancel()
	info, err := st.s.mlog.lookup(ctx, st.ch)
	if err != nil {
		st.retry(itemCheck, err)
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
	info, err := st.s.mlog.lookup(ctx, st.ch)
	if err != nil {
		st.retry(itemCheck, err)
		return
	}
	d := info.doc
	if d.Epoch != st.epoch {
		st.resetEpoch(d.Epoch, nil)
	}
	if uint64(d.Floor) > st.last {
		docs, err := st.s.mlog.readRange(ctx, st.ch, st.epoch, st.last, 0, 1)
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

// checkAll makes every served channel check the log (after a relay
// reconnect), batched, off the caller's goroutine.
func (s *Scaler) checkAll() {
	list := s.startedStreams(time.Time{})
	s.goWorker(func() {
		if err := s.checkStreams(list); err != nil {
			// Let each channel find out on its own.
			for _, st := range list {
				st.push(item{kind: itemCheck})
			}
		}
	})
}

// startedStreams lists the started streams that received nothing since
// quietSince (every started stream when zero).
func (s *Scaler) startedStreams(quietSince time.Time) []*stream {
	s.streamsMu.Lock()
	defer s.streamsMu.Unlock()
	list := make([]*stream, 0, len(s.streams))
	for _, st := range s.streams {
		st.mu.Lock()
		if st.started && (quietSince.IsZero() || !st.running && st.lastRecv.Before(quietSince)) {
			list = append(list, st)
		}
		st.mu.Unlock()
	}
	return list
}

// checkBatch is how many channels one batched check query covers.
const checkBatch = 256

// checkStreams compares many streams with the log in two queries per
// checkBatch channels (the channel documents, then the publications from
// each stream's last seq on), and makes those that are behind, or whose
// epoch or floor moved, run their own check, and those whose last
// publication is missing from the log verify it (see rollback.go).
func (s *Scaler) checkStreams(list []*stream) error {
	ctx, cancel := context.WithTimeout(s.ctx, s.opts.WriteTimeout)
	defer cancel()
	for len(list) > 0 {
		chunk := list[:min(len(list), checkBatch)]
		list = list[len(chunk):]
		if err := s.checkChunk(ctx, chunk); err != nil {
			return err
		}
	}
	return nil
}

func (s *Scaler) checkChunk(ctx context.Context, chunk []*stream) error {
	names := make([]string, len(chunk))
	byName := make(map[string]*stream, len(chunk))
	for i, st := range chunk {
		names[i] = st.ch
		byName[st.ch] = st
	}
	docs, secret, err := s.mlog.lookupMany(ctx, names)
	if err != nil {
		return err
	}
	need := make(map[*stream]itemKind)
	lasts := make(map[string]uint64) // streams whose last seq must be in the log
	var or bson.A
	for _, st := range chunk {
		ep, last := st.seenEpoch.Load(), st.seenLast.Load()
		d, ok := docs[st.ch]
		if !ok {
			d = chanDoc{Ch: st.ch, Epoch: defaultEpoch(secret, st.ch)}
		}
		switch {
		case ep == nil || d.Epoch != *ep || uint64(d.Floor) > last:
			need[st] = itemCheck
		case !ok && last > 0:
			need[st] = itemVerify // delivered publications of a channel without a document
		case !ok:
			// Never published: nothing to compare.
		case last > uint64(d.Floor):
			lasts[st.ch] = last
			or = append(or, bson.D{{Key: "ch", Value: st.ch}, {Key: "ep", Value: d.Epoch}, {Key: "seq", Value: bson.D{{Key: "$gte", Value: int64(last)}}}})
		default:
			or = append(or, bson.D{{Key: "ch", Value: st.ch}, {Key: "ep", Value: d.Epoch}, {Key: "seq", Value: bson.D{{Key: "$gt", Value: int64(last)}}}})
		}
	}
	if len(or) > 0 {
		found, err := s.mlog.seqsWith(ctx, bson.D{{Key: "$or", Value: or}})
		if err != nil {
			return err
		}
		present := make(map[string]bool)
		for _, f := range found {
			st := byName[f.Ch]
			switch {
			case st == nil:
			case uint64(f.Seq) == lasts[f.Ch]:
				present[f.Ch] = true
			case uint64(f.Seq) > st.seenLast.Load():
				need[st] = itemCheck
			}
		}
		for ch := range lasts {
			if st := byName[ch]; !present[ch] && need[st] == 0 {
				need[st] = itemVerify
			}
		}
	}
	for st, kind := range need {
		st.push(item{kind: kind})
	}
	return nil
}

// checkLoop checks channels that received nothing for CheckInterval: a
// lost last publication has no later one to reveal it.
func (s *Scaler) checkLoop() {
	t := time.NewTicker(s.opts.CheckInterval)
	defer t.Stop()
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-t.C:
		}
		quiet := s.startedStreams(time.Now().Add(-s.opts.CheckInterval))
		if err := s.checkStreams(quiet); err != nil && s.ctx.Err() == nil {
			s.event(scaler.EventBackendError, "", 0, err)
		}
	}
}
