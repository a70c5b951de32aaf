package mongoredis

import (
	"context"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"

	"github.com/sss-go/sss/internal/backoff"
	"github.com/sss-go/sss/protocol"
)

// Duplicate key errors and contention.
//
// An insert at (channel, epoch, seq) can fail with a duplicate key error
// for three reasons: the seq is taken, the request's idempotency key is
// held by another document, or the request's own _id is stored already
// (an earlier attempt whose answer was lost). FerretDB's error does not
// name the index, so for a request with a key, or one that may be stored,
// the writer reads back the documents that can collide with it (one
// query) and decides from what it finds. Only a seq found taken moves the
// writer forward; a seq found free is tried again.
//
// Under contention (several instances writing one channel) a taken seq
// means another writer is ahead. The writer then jumps to the highest seq
// it knows to be taken: from the relay (when it serves the channel), from
// a hint in Redis that every writer raises after each acknowledged batch
// ("<epoch>:<seq>", see writer_lock.go), and after repeated conflicts from
// the log itself, with a jittered pause; and it takes turns with the
// other writers for a while (writer_lock.go). A hint is only ever raised
// to a seq below which every seq is stored or trimmed, so a jump never
// leaves a hole.

// hintTTL is how long a channel's seq hint lives after its last raise.
const hintTTL = time.Hour

// confirm checks, after an insert into epoch ep, that ep is still the
// channel's epoch, and then acknowledges reqs (as stored when given). An
// insert into an epoch that ended meanwhile is not acknowledged: its
// documents are removed (best effort), the requests get new ids and are
// written again. On a read error the requests count as maybe stored.
func (w *writer) confirm(ctx context.Context, ep string, reqs []*pubReq, stored *pubDoc) (bool, error) {
	info, err := w.ws.mlog.lookup(ctx, w.ch)
	if err != nil {
		for _, r := range reqs {
			r.maybeStored = true
		}
		w.invalidate()
		return false, err
	}
	if info.doc.Epoch == ep {
		w.mu.Lock()
		w.checked = time.Now()
		w.mu.Unlock()
		w.ack(reqs, stored)
		return true, nil
	}
	ids := make([]bson.ObjectID, 0, len(reqs))
	for _, r := range reqs {
		ids = append(ids, r.doc.ID)
		if stored != nil {
			ids = append(ids, stored.ID)
		}
	}
	_ = w.ws.mlog.deleteIDs(ctx, ids...)
	for _, r := range reqs {
		r.renew()
		r.maybeStored = false
	}
	w.mu.Lock()
	w.epoch, w.next = info.doc.Epoch, 0
	w.mu.Unlock()
	return false, nil
}

// testHookDuplicate, when set by a test, runs between a duplicate key
// error and the reading back.
var testHookDuplicate func()

// duplicate handles a duplicate key error on reqs[0] inserted at seq.
func (w *writer) duplicate(ctx context.Context, reqs []*pubReq, ep string, seq uint64, n int, conflicts *int) ([]*pubReq, time.Duration, error) {
	if testHookDuplicate != nil {
		testHookDuplicate()
	}
	r := reqs[0]
	if !r.keyed() && !r.maybeStored {
		// Its _id and key are its own: only the seq can collide.
		return reqs, w.taken(ctx, ep, seq, conflicts), nil
	}
	docs, err := w.ws.mlog.collisions(ctx, w.ch, r.doc.ID, r.doc.Key, ep, seq)
	if err != nil {
		return reqs, retryWait(n), err
	}
	var mine, byKey, atSeq *pubDoc
	for i := range docs {
		d := &docs[i]
		switch {
		case d.ID == r.doc.ID:
			mine = d
		case d.Ch == w.ch && d.Key == r.doc.Key:
			byKey = d
		case d.Ch == w.ch && d.Epoch == ep && uint64(d.Seq) == seq:
			atSeq = d
		}
	}
	switch {
	case mine != nil && mine.Epoch == ep:
		// Stored by an earlier attempt whose answer was lost.
		ok, err := w.confirm(ctx, ep, reqs[:1], mine)
		if ok {
			return reqs[1:], 0, nil
		}
		return reqs, retryWait(n), err
	case mine != nil || byKey != nil && byKey.Epoch != ep:
		// A copy left in an older epoch holds the _id or the key: it no
		// longer counts. Remove it and try the same seq again.
		old := mine
		if old == nil {
			old = byKey
		}
		if err := w.ws.mlog.deleteIDs(ctx, old.ID); err != nil {
			return reqs, retryWait(n), err
		}
		if mine != nil {
			r.renew()
		}
		w.setNext(ep, seq)
		return reqs, 0, nil
	case byKey != nil:
		return w.idempotent(ctx, reqs, ep, byKey, n)
	case atSeq != nil:
		return reqs, w.taken(ctx, ep, seq, conflicts), nil
	}
	// Nothing collides any more (the colliding document was trimmed):
	// the seq is free unless trimming passed it.
	return reqs, 0, w.retryFree(ctx, ep, seq)
}

// idempotent finishes a retried publish with the uid of the document that
// holds its key, once ep is confirmed to be the channel's epoch.
func (w *writer) idempotent(ctx context.Context, reqs []*pubReq, ep string, d *pubDoc, n int) ([]*pubReq, time.Duration, error) {
	info, err := w.ws.mlog.lookup(ctx, w.ch)
	if err != nil {
		return reqs, retryWait(n), err
	}
	if info.doc.Epoch != ep {
		w.mu.Lock()
		w.epoch, w.next = info.doc.Epoch, 0
		w.mu.Unlock()
		return reqs, 0, nil // the key's document is now in an old epoch
	}
	reqs[0].finish(protocol.UID{Epoch: d.Epoch, Seq: uint64(d.Seq)}, nil)
	return reqs[1:], 0, nil
}

// retryFree makes the next attempt use seq again, unless the channel's
// trim floor or epoch moved past it.
func (w *writer) retryFree(ctx context.Context, ep string, seq uint64) error {
	info, err := w.ws.mlog.lookup(ctx, w.ch)
	if err != nil {
		return err
	}
	if info.doc.Epoch != ep || seq <= uint64(info.doc.Floor) {
		w.invalidate()
		return nil
	}
	w.setNext(ep, seq)
	return nil
}

// taken moves the writer past seq, found taken by another writer, as far
// as it knows the log goes, and returns the pause before the next try.
func (w *writer) taken(ctx context.Context, ep string, seq uint64, conflicts *int) time.Duration {
	*conflicts++
	if *conflicts >= contendedAfter {
		w.sawContention()
	}
	next := seq + 1
	w.mu.Lock()
	if w.epoch == ep {
		next = max(next, w.next) // raised by the relay meanwhile
	}
	w.mu.Unlock()
	if h, ok := w.readHint(ctx, ep); ok {
		next = max(next, h+1)
	}
	if next == seq+1 && *conflicts%4 == 0 {
		// No hint ahead: ask the log (a scan on FerretDB).
		if m, err := w.ws.mlog.maxSeq(ctx, w.ch, ep); err == nil {
			next = max(next, m+1)
		}
	}
	w.advance(ep, next)
	if *conflicts < 2 {
		return 0
	}
	return backoff.Jitter(time.Millisecond * time.Duration(min(*conflicts, 16)))
}

// readHint returns the channel's seq hint in epoch ep.
func (w *writer) readHint(ctx context.Context, ep string) (uint64, bool) {
	ctx, cancel := context.WithTimeout(ctx, lockCallTimeout)
	defer cancel()
	v, err := w.ws.rdb.Get(ctx, w.ws.hintKey(w.ch)).Result()
	if err != nil {
		return 0, false
	}
	return parseHint(v, ep)
}
