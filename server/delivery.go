package server

import (
	"github.com/sss-go/sss/protocol"
)

// Delivery to one socket: the hub hands every publication of a channel to
// each subscriber in uid order (Socket.deliver). Most go straight to the
// send queue; a socket takes the slow path only while one of its channels
// is held (a SYNC or SUBSCRIBE reply of that channel is being made, or a
// Publish excluding the socket is in flight), has exclusions pending
// (publications that reach it as UPDATESUB instead of FEED), or skips
// publications a SYNC reply already gave the client.

// deliver hands a publication of a channel the socket is subscribed to.
// Called by the hub under the channel's lock, in uid order.
func (s *Socket) deliver(pf *pubFrame) {
	if s.slow.Load() == 0 {
		s.enqueue(outItem{pf: pf, op: opText})
		return
	}
	s.mu.Lock()
	if h := s.holds[pf.channel]; h != nil {
		if !s.closing {
			if len(s.q)+s.heldN >= s.srv.opts.SendQueueMessages {
				s.overflowLocked()
			} else {
				h.buf = append(h.buf, pf)
				s.heldN++
			}
		}
	} else {
		s.deliverExclLocked(pf)
	}
	s.mu.Unlock()
}

// deliverExclLocked queues pf, or an UPDATESUB in its place when the
// socket published it excluding itself.
func (s *Socket) deliverExclLocked(pf *pubFrame) {
	if to, ok := s.skipTo[pf.channel]; ok {
		if to.Epoch == pf.uid.Epoch && pf.uid.Seq <= to.Seq {
			if pf.uid.Seq == to.Seq {
				delete(s.skipTo, pf.channel)
				s.updateSlowLocked()
			}
			return // the client has it already
		}
		delete(s.skipTo, pf.channel)
		s.updateSlowLocked()
	}
	if ex := s.excl[pf.channel]; len(ex) > 0 {
		hit := false
		kept := ex[:0]
		for _, u := range ex {
			switch {
			case u == pf.uid:
				hit = true
			case u.Epoch == pf.uid.Epoch && u.Seq > pf.uid.Seq:
				kept = append(kept, u) // still to come
			}
		}
		if len(kept) == 0 {
			delete(s.excl, pf.channel)
			s.updateSlowLocked()
		} else {
			s.excl[pf.channel] = kept
		}
		if hit {
			s.enqueueLocked(outItem{data: protocol.AppendUpdateSub(nil, pf.channel, pf.uid), op: opText})
			return
		}
	}
	s.enqueueLocked(outItem{pf: pf, op: opText})
}

func (s *Socket) updateSlowLocked() {
	s.slow.Store(int32(len(s.holds) + len(s.excl) + len(s.skipTo)))
}

// hold parks a channel's deliveries while a reply of that channel, or a
// publish excluding this socket, is in progress.
type hold struct {
	count   int
	buf     []*pubFrame
	drop    protocol.UID // parked publications up to drop are not queued
	hasDrop bool
}

// holdLocked parks channel's deliveries until releaseLocked.
func (s *Socket) holdLocked(channel string) {
	if s.holds == nil {
		s.holds = make(map[string]*hold)
	}
	h := s.holds[channel]
	if h == nil {
		h = &hold{}
		s.holds[channel] = h
	}
	h.count++
	s.updateSlowLocked()
}

func (s *Socket) hold(channel string) {
	s.mu.Lock()
	s.holdLocked(channel)
	s.mu.Unlock()
}

// releaseLocked undoes one holdLocked; the last release queues the parked
// publications in order, dropping those at or before dropTo (when set) or
// the dropTo of an earlier release of the same hold (the client has them
// from a SYNC reply).
func (s *Socket) releaseLocked(channel string, dropTo *protocol.UID) {
	h := s.holds[channel]
	if h == nil {
		return
	}
	if dropTo != nil && (!h.hasDrop || h.drop.Epoch != dropTo.Epoch || h.drop.Seq < dropTo.Seq) {
		h.drop, h.hasDrop = *dropTo, true
	}
	h.count--
	if h.count > 0 {
		return
	}
	delete(s.holds, channel)
	s.updateSlowLocked()
	s.heldN -= len(h.buf)
	for _, pf := range h.buf {
		if h.hasDrop && pf.uid.Epoch == h.drop.Epoch && pf.uid.Seq <= h.drop.Seq {
			continue
		}
		s.deliverExclLocked(pf)
	}
}

func (s *Socket) release(channel string, dropTo *protocol.UID) {
	s.mu.Lock()
	s.releaseLocked(channel, dropTo)
	s.mu.Unlock()
}

// sentToLocked returns the last uid of channel, at or before pos, that
// the socket was handed: pos, unless some are still parked by a hold of
// the channel. The caller holds s.mu and a hold of channel.
func (s *Socket) sentToLocked(channel string, pos protocol.UID) protocol.UID {
	if h := s.holds[channel]; h != nil && len(h.buf) > 0 {
		if first := h.buf[0].uid; first.Epoch == pos.Epoch && first.Seq <= pos.Seq {
			return protocol.UID{Epoch: pos.Epoch, Seq: first.Seq - 1}
		}
	}
	return pos
}

// beginExclusion starts a Publish that excludes s from channel: the
// channel's deliveries to s are parked until endExclusion, so that the
// publication, whose uid is not known yet, reaches s as UPDATESUB in its
// place in the stream. It returns s, or nil (on which endExclusion does
// nothing) when s is nil or not subscribed to channel.
func (s *Socket) beginExclusion(channel string) *Socket {
	if s == nil {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.subs[channel]; !ok {
		return nil
	}
	s.holdLocked(channel)
	return s
}

// endExclusion ends beginExclusion once the Publish returned: a stored
// publication (err nil) of a channel s still holds is recorded to reach s
// as UPDATESUB (deliverExclLocked), and the parked deliveries go out.
func (s *Socket) endExclusion(channel string, uid protocol.UID, err error) {
	if s == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, still := s.subs[channel]; err == nil && still {
		if s.excl == nil {
			s.excl = make(map[string][]protocol.UID)
		}
		s.excl[channel] = append(s.excl[channel], uid)
		s.updateSlowLocked()
	}
	s.releaseLocked(channel, nil)
}
