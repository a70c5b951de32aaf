package mongoredis

import (
	"context"
	"fmt"

	"github.com/sss-go/sss/scaler"
)

// A log behind its streams.
//
// On a replica set, writes acknowledged with less than a majority can be
// rolled back by a failover, and a database can lose its newest entries
// in other ways. The seqs of the lost publications are then taken again
// by new ones, so an instance that delivered the lost ones would drop the
// new ones as duplicates, and a client whose last uid names lost content
// would recover someone else's publications under it. Two signs show it:
// a relayed publication whose uid this stream delivered already, as
// another document (its _id differs), and a log whose position is below
// the last seq the stream delivered (found by verify, which the periodic
// checks trigger when the stream's last publication is missing from the
// log). The instance that sees either moves the channel to a new epoch,
// only if the channel is still in the stream's epoch, and derived from
// that epoch, so instances noticing at once agree. Every stream of the
// channel is then reset (their subscribers are told "not recoverable"),
// and uids of the old epoch, lost content included, are not recoverable.

// verify checks that the log still holds everything the stream
// delivered, and moves the channel to a new epoch when it does not.
func (st *stream) verify() {
	ctx, cancel := st.ctx()
	defer cancel()
	info, pos, err := st.set.mlog.tip(ctx, st.ch)
	if err != nil {
		st.retry(itemVerify, err)
		return
	}
	switch {
	case info.doc.Epoch != st.epoch:
		st.resetEpoch(info.doc.Epoch, nil)
		st.push(item{kind: itemCheck})
	case st.proven:
		st.rollback(ctx, "a second publication claimed a delivered seq")
	case pos.Seq < st.last:
		st.rollback(ctx, fmt.Sprintf("the log ends at seq %d", pos.Seq))
	case pos.Seq > st.last:
		st.push(item{kind: itemCheck})
	}
}

// rollback moves the channel out of the stream's epoch, whose log lost
// publications the stream delivered (why says how that showed).
func (st *stream) rollback(ctx context.Context, why string) {
	old := st.epoch
	info, ok := st.lookup(ctx, itemVerify)
	if !ok {
		return
	}
	d, moved := info.doc, false
	var err error
	if d.Epoch == old {
		d, err = st.set.mlog.moveEpoch(ctx, st.ch, old, rollbackEpoch(info.secret, st.ch, old))
		if err == nil && d.Epoch == old {
			err = fmt.Errorf("epoch %s did not move", old)
		}
		if err != nil {
			st.retry(itemVerify, err)
			return
		}
		moved = true
	}
	err = fmt.Errorf("sss/mongoredis: channel %q: the log lost publications delivered up to seq %d of epoch %s (%s; a rollback?): %w",
		st.ch, st.last, old, why, scaler.ErrEpochChanged)
	st.set.out.logger.Error("sss/mongoredis: channel log behind its stream: new epoch", "channel", st.ch, "epoch", d.Epoch, "err", err)
	st.resetEpoch(d.Epoch, err)
	if moved {
		if err := st.set.moved(ctx, st.ch, d.Epoch); err != nil {
			st.set.out.event(scaler.EventBackendError, st.ch, 0, err)
		}
	}
	st.push(item{kind: itemCheck})
}
