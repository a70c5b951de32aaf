package mongoredis

import (
	"context"
	"fmt"
	"time"

	"github.com/sss-go/sss/scaler"
)

// Fault injection, for tests only: the methods are unexported, so that no
// user of the package calls them by accident. This package's tests wrap
// the Scaler with faultInjector; tests elsewhere in this module receive
// it through internal/testhook.

// faultInjector makes a Scaler a scaler.FaultInjector.
type faultInjector struct{ s *Scaler }

var _ scaler.FaultInjector = faultInjector{}

func (f faultInjector) DropNextRelay(channel string) { f.s.dropNextRelay(channel) }

func (f faultInjector) DelayNextRelay(channel string, d time.Duration) {
	f.s.delayNextRelay(channel, d)
}

func (f faultInjector) PauseLease() { f.s.leases.pause() }

func (f faultInjector) ResumeLease() { f.s.leases.unpause() }

func (f faultInjector) ResetHistory(ctx context.Context, channel string) error {
	return f.s.resetHistory(ctx, channel)
}

func (f faultInjector) Trim(ctx context.Context, channel string, seq uint64) error {
	return f.s.trim(ctx, channel, seq)
}

// dropNextRelay makes this instance miss the next relayed publication of
// channel; it stays durable and is filled from the log.
func (s *Scaler) dropNextRelay(channel string) {
	f := &s.relay.faults
	f.mu.Lock()
	f.drop[channel] = true
	f.mu.Unlock()
}

// delayNextRelay makes the next relayed publication of channel reach this
// instance after d.
func (s *Scaler) delayNextRelay(channel string, d time.Duration) {
	f := &s.relay.faults
	f.mu.Lock()
	f.delay[channel] = d
	f.mu.Unlock()
}

// resetHistory discards channel's history and starts a new epoch; every
// instance is told over the control channel. No publish is acknowledged
// into the old epoch once resetHistory has returned, on any instance, even
// one the control message does not reach: every writer confirms the
// channel's epoch after each insert and writes again, in the new epoch,
// what it inserted into one that ended.
func (s *Scaler) resetHistory(ctx context.Context, channel string) error {
	op := fmt.Sprintf("reset history of %q", channel)
	if s.isClosed() {
		return closedError(op)
	}
	ep, err := s.mlog.reset(ctx, channel)
	if err != nil {
		return opError(op, err)
	}
	s.streams.push(channel, item{kind: itemCheck})
	return s.epochMoved(ctx, channel, ep)
}

// trim removes every stored publication of channel up to and including
// seq in the current epoch.
func (s *Scaler) trim(ctx context.Context, channel string, seq uint64) error {
	op := fmt.Sprintf("trim %q", channel)
	if s.isClosed() {
		return closedError(op)
	}
	info, err := s.mlog.lookup(ctx, channel)
	if err != nil {
		return opError(op, err)
	}
	if !info.found {
		return nil
	}
	n, err := s.mlog.deleteUpTo(ctx, channel, info.doc.Epoch, seq)
	if err != nil {
		return opError(op, err)
	}
	s.out.event(scaler.EventTrimmed, channel, int(n), nil)
	return nil
}
