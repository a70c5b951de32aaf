package mongoredis

import (
	"context"
	"fmt"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"

	"github.com/sss-go/sss/scaler"
)

// faultRelay applies DropNextRelay and DelayNextRelay; it reports whether
// the publication was taken.
func (s *Scaler) faultRelay(ch string, p scaler.Publication, id bson.ObjectID) bool {
	s.faultMu.Lock()
	drop := s.drop[ch]
	d, delay := s.delay[ch]
	delete(s.drop, ch)
	if !drop {
		delete(s.delay, ch)
	}
	s.faultMu.Unlock()
	switch {
	case drop:
		return true
	case delay:
		s.afterFunc(d, func() { s.onRelay(p, id) })
		return true
	}
	return false
}

// DropNextRelay makes this instance miss the next relayed publication of
// channel; it stays durable and is filled from the log.
func (s *Scaler) DropNextRelay(channel string) {
	s.faultMu.Lock()
	s.drop[channel] = true
	s.faultMu.Unlock()
}

// DelayNextRelay makes the next relayed publication of channel reach this
// instance after d.
func (s *Scaler) DelayNextRelay(channel string, d time.Duration) {
	s.faultMu.Lock()
	s.delay[channel] = d
	s.faultMu.Unlock()
}

// PauseLease stops renewing the lease.
func (s *Scaler) PauseLease() { s.paused.Store(true) }

// ResumeLease resumes renewing it, at once.
func (s *Scaler) ResumeLease() {
	s.paused.Store(false)
	select {
	case s.resume <- struct{}{}:
	default:
	}
}

// ResetHistory discards channel's history and starts a new epoch; every
// instance is told over the control channel. No publish is acknowledged
// into the old epoch once ResetHistory has returned, on any instance, even
// one the control message does not reach: every writer confirms the
// channel's epoch after each insert and writes again, in the new epoch,
// what it inserted into one that ended.
func (s *Scaler) ResetHistory(ctx context.Context, channel string) error {
	if s.isClosed() {
		return scaler.ErrClosed
	}
	ep, err := s.mlog.reset(ctx, channel)
	if err != nil {
		return fmt.Errorf("sss/mongoredis: reset %q: %w", channel, err)
	}
	if st := s.stream(channel); st != nil {
		st.push(item{kind: itemCheck})
	}
	return s.epochMoved(ctx, channel, ep)
}

// Trim removes every stored publication of channel up to and including
// seq in the current epoch.
func (s *Scaler) Trim(ctx context.Context, channel string, seq uint64) error {
	if s.isClosed() {
		return scaler.ErrClosed
	}
	info, err := s.mlog.lookup(ctx, channel)
	if err != nil || !info.found {
		return err
	}
	n, err := s.mlog.deleteUpTo(ctx, channel, info.doc.Epoch, seq)
	if err != nil {
		return fmt.Errorf("sss/mongoredis: trim %q: %w", channel, err)
	}
	s.event(scaler.EventTrimmed, channel, int(n), nil)
	return nil
}
