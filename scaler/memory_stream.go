package scaler

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/sss-go/sss/protocol"
)

// run is the instance's delivery goroutine: it drains the relay queue in
// order, runs the periodic position check and age trimmer, and renews the
// lease. It calls the Handler with no lock held.
func (m *Memory) run(h Handler) {
	defer close(m.done)
	opts := m.b.opts
	check := time.NewTicker(opts.CheckInterval)
	defer check.Stop()
	renew := time.NewTicker(opts.LeaseTTL / 3)
	defer renew.Stop()
	for {
		select {
		case <-m.stop:
			return
		case <-m.wake:
			m.drain(h)
		case <-check.C:
			m.checkPositions(h)
			m.trimAged(h)
		case <-renew.C:
			m.renew(h)
		case <-m.renewNow:
			m.renew(h)
		}
	}
}

// drain delivers everything queued so far.
func (m *Memory) drain(h Handler) {
	for {
		m.qmu.Lock()
		q := m.queue
		m.queue = nil
		m.qmu.Unlock()
		if len(q) == 0 {
			return
		}
		for i := range q {
			select {
			case <-m.stop:
				return
			default:
			}
			it := &q[i]
			switch {
			case it.control != nil:
				if h.Control != nil {
					h.Control(*it.control)
				}
			case it.event != nil:
				if h.Event != nil {
					h.Event(*it.event)
				}
			case it.sub != nil:
				m.relayed(h, it.sub, it.pub)
				it.sub.pending.Add(-1)
			}
			q[i] = memItem{}
		}
	}
}

// relayed handles one relayed publication: in sequence it is delivered,
// a duplicate is dropped, after a gap the gap is filled from the log first.
func (m *Memory) relayed(h Handler, s *memSub, p Publication) {
	if s.dead.Load() {
		return
	}
	if p.UID.Epoch != s.epoch {
		// Either a stale publication of an old epoch or the first sign
		// of a history reset: the log says which.
		m.advance(h, s, 0)
		return
	}
	switch {
	case p.UID.Seq <= s.last:
		return // duplicate (already filled from the log)
	case p.UID.Seq == s.last+1:
		s.last = p.UID.Seq
		if h.Publication != nil {
			h.Publication(p)
		}
	default:
		// Hold p back, fill the gap from the log, then deliver p
		// (unless the log moved the stream past it).
		if m.log.Enabled(context.Background(), slog.LevelDebug) {
			m.log.Debug("relay gap", "channel", s.channel, "uid", p.UID.String(), "missing", p.UID.Seq-s.last-1)
		}
		m.advance(h, s, p.UID.Seq-1)
		if s.epoch == p.UID.Epoch && s.last+1 == p.UID.Seq && !s.dead.Load() {
			s.last = p.UID.Seq
			if h.Publication != nil {
				h.Publication(p)
			}
		}
	}
}

// advance brings s's stream up to seq upto (0: the channel's position)
// from the log, reporting a Reset when the log can no longer fill it.
func (m *Memory) advance(h Handler, s *memSub, upto uint64) {
	filled := 0
	for range 16 {
		if s.dead.Load() {
			return
		}
		v := m.b.view(s.channel, s.epoch, s.last, upto)
		target := v.last
		if upto != 0 && upto < target {
			target = upto
		}
		switch {
		case v.epoch != s.epoch:
			s.epoch, s.last, s.seen, upto = v.epoch, 0, 0, 0
			m.reset(h, s, fmt.Errorf("sss/scaler: stream %q: %w", s.channel, ErrEpochChanged))
			continue
		case v.last < s.last:
			// The log is behind the stream: it lost data without a new
			// epoch. Resume from the log's position.
			s.last, s.seen = v.last, v.last
			m.reset(h, s, fmt.Errorf("sss/scaler: stream %q: %w", s.channel, ErrFuture))
			continue
		case s.last < target && s.last+1 < v.first:
			// Publications up to first-1 are gone: skip them, but not
			// past target (a held-back relay may follow).
			s.last = min(v.first-1, target)
			m.reset(h, s, fmt.Errorf("sss/scaler: stream %q: %w", s.channel, ErrTrimmed))
			continue
		}
		for _, p := range v.pubs {
			if p.UID.Seq != s.last+1 {
				continue
			}
			s.last = p.UID.Seq
			filled++
			if h.Publication != nil {
				h.Publication(p)
			}
		}
		break
	}
	if filled > 0 {
		m.log.Warn("relay gap filled from the log", "channel", s.channel, "count", filled)
		if h.Event != nil {
			h.Event(Event{Kind: EventGapFilled, Channel: s.channel, Count: filled, Time: time.Now()})
		}
	}
}

// reset reports that s's stream continues after its current position
// with a hole.
func (m *Memory) reset(h Handler, s *memSub, err error) {
	pos := protocol.UID{Epoch: s.epoch, Seq: s.last}
	m.log.Warn("stream reset", "channel", s.channel, "uid", pos.String(), "err", err)
	if h.Reset != nil {
		h.Reset(s.channel, pos, err)
	}
	if h.Event != nil {
		h.Event(Event{Kind: EventGapLost, Channel: s.channel, Err: err, Time: time.Now()})
	}
}

// checkPositions compares every stream with its channel's position: a
// publication already visible at the previous check and still not
// delivered was lost by the relay (typically the last one, which no later
// publication reveals), so it is read from the log. A stream with relayed
// publications still queued is behind, not missing anything: it is left
// alone (a hole in what is queued shows as a seq gap).
func (m *Memory) checkPositions(h Handler) {
	m.mu.Lock()
	subs := make([]*memSub, 0, len(m.subs))
	for _, s := range m.subs {
		subs = append(subs, s)
	}
	m.mu.Unlock()
	for _, s := range subs {
		if s.dead.Load() {
			continue
		}
		v := m.b.view(s.channel, "", 0, 0) // position only
		if s.pending.Load() > 0 {
			s.seen = v.last
			continue
		}
		if v.epoch != s.epoch || s.last < s.seen {
			m.advance(h, s, 0)
		}
		s.seen = v.last
		if v.epoch != s.epoch {
			s.seen = 0
		}
	}
}

// trimAged applies retention to every channel (age limits need time, not
// publications, to pass) and forgets the channels MemoryOptions says it
// may.
func (m *Memory) trimAged(h Handler) {
	b := m.b
	now := time.Now()
	var evs []Event
	b.mu.Lock()
	for name, c := range b.channels {
		trimLocked(c, now)
		if c.trimmed > 0 {
			evs = append(evs, Event{Kind: EventTrimmed, Channel: name, Count: c.trimmed, Time: now})
			c.trimmed = 0
		}
		b.expireIdemLocked(c, now)
		idle := len(c.log) == 0 && len(c.subs) == 0 && len(c.idem) == 0 && !c.usedDflt &&
			c.ret.MaxAge > 0 && now.Sub(c.touched) > c.ret.MaxAge
		if idle || c.droppable() {
			delete(b.channels, name)
		}
	}
	b.mu.Unlock()
	if h.Event != nil {
		for _, e := range evs {
			h.Event(e)
		}
	}
}
