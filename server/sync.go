package server

import (
	"errors"

	"github.com/sss-go/sss/protocol"
	"github.com/sss-go/sss/scaler"
)

// syncRelease is what a SYNC reply releases after it is queued.
type syncRelease struct {
	channel   string
	pos       protocol.UID
	updateSub bool
	skipTo    bool // the client is ahead of this instance's stream: pos is its lastUid
}

// syncState is one SYNC being answered.
type syncState struct {
	results  []protocol.SyncResult
	records  [][]byte
	rels     []syncRelease
	count    int // the socket's subscriptions
	budget   int // bytes the records may take
	recBytes int
}

// handleSync answers SYNC (docs/protocol.md, "7. Recovery (SYNC)"). Each accepted channel
// is held (its live frames parked) from before the socket joins it until
// the reply is queued; then an UPDATESUB is queued for the channels not
// recovered and the parked frames after the position are released. When
// the backend cannot answer, the socket is closed with 1013 and nothing of
// the channels of this SYNC is sent.
func (s *Socket) handleSync(msg *protocol.Message) {
	n := len(msg.Subscriptions)
	st := &syncState{
		results: make([]protocol.SyncResult, 0, n),
		rels:    make([]syncRelease, 0, n),
		count:   s.numSubs(),
		// The reply carries the records in one frame: keep it within
		// half the send queue's byte bound, so it and what follows fit;
		// a channel whose records would not fit is not recoverable.
		budget: s.srv.opts.SendQueueBytes / 2,
	}
	seen := make(map[string]struct{}, n)
	for _, e := range msg.Subscriptions {
		if _, dup := seen[e.Channel]; dup {
			continue
		}
		seen[e.Channel] = struct{}{}
		if !s.syncEntry(st, e) {
			// Close first, so that releasing the holds queues nothing.
			s.mu.Lock()
			s.closeLocked(protocol.CloseTryAgainLater, "backend unavailable")
			for _, r := range st.rels {
				s.releaseLocked(r.channel, nil)
			}
			s.mu.Unlock()
			return
		}
	}
	records := st.records
	if records == nil {
		records = [][]byte{}
	}
	reply := protocol.AppendSyncReply(nil, msg.ID, st.results, records)
	s.mu.Lock()
	s.enqueueLocked(outItem{data: reply, op: opText})
	for _, r := range st.rels {
		if r.updateSub {
			s.enqueueLocked(outItem{data: protocol.AppendUpdateSub(nil, r.channel, r.pos), op: opText})
		}
		pos := r.pos
		if r.skipTo {
			if s.skipTo == nil {
				s.skipTo = make(map[string]protocol.UID)
			}
			s.skipTo[r.channel] = pos
			s.updateSlowLocked()
		}
		s.releaseLocked(r.channel, &pos)
	}
	s.mu.Unlock()
}

// syncJoin is what joining a channel for a SYNC entry found, under the
// channel's lock.
type syncJoin struct {
	pos     protocol.UID // the channel's position here
	from    protocol.UID // records start after this uid
	fromWin []*pubFrame
	winOK   bool
}

// syncEntry handles one SYNC entry; false when the backend cannot answer
// (the channel's hold, if any, is then in st.rels).
func (s *Socket) syncEntry(st *syncState, e protocol.SyncEntry) bool {
	channel := e.Channel
	co, already, perr := s.checkChannel(s.ctx, channel, e.Query, st.count, true)
	if perr != nil {
		st.results = append(st.results, protocol.SyncResult{Channel: channel, Err: perr})
		return true
	}
	var last protocol.UID
	recoverable := e.HasUID
	if recoverable {
		var err error
		if last, err = protocol.ParseUID(e.LastUID); err != nil {
			recoverable = false
		}
	}
	maxRec := uint64(s.srv.opts.MaxRecovery)
	var j syncJoin
	s.hold(channel)
	err := s.srv.subscribeSocket(s, channel, co, func(ch *hubChannel, p protocol.UID, added bool) {
		j.pos, j.from = p, last
		if !added && recoverable && last.Epoch == p.Epoch && last.Seq <= p.Seq {
			// The socket holds the channel: what it was already sent is
			// on its way to the client (which has no de-duplication):
			// recover only what comes after.
			if sent := s.sentToLocked(channel, p); sent.Seq > j.from.Seq {
				j.from = sent
			}
		}
		if recoverable && j.from.Epoch == p.Epoch && j.from.Seq <= p.Seq && p.Seq-j.from.Seq <= maxRec {
			if j.from.Seq == p.Seq {
				j.winOK = true
			} else {
				j.fromWin, j.winOK = ch.win.since(j.from)
			}
		}
	})
	if err != nil {
		s.release(channel, nil)
		jerr, unavailable := joinError(err)
		if unavailable {
			s.srv.log.Warn("sss: sync subscribe failed", "socket", s.id, "channel", channel, "err", err)
			return false
		}
		st.results = append(st.results, protocol.SyncResult{Channel: channel, Err: jerr})
		return true
	}
	if !already {
		st.count++
	}
	rel := syncRelease{channel: channel, pos: j.pos}
	ok, avail := s.syncRecover(st, channel, recoverable, last, &j, &rel)
	st.rels = append(st.rels, rel)
	if !avail {
		return false
	}
	if ok {
		st.results = append(st.results, protocol.SyncResult{Channel: channel, OK: true})
		return true
	}
	s.srv.log.Debug("sss: sync entry not recoverable", "socket", s.id, "channel", channel,
		"uid", e.LastUID, "position", j.pos.String())
	st.rels[len(st.rels)-1].updateSub = true
	st.results = append(st.results, protocol.SyncResult{Channel: channel,
		Err: protocol.NewNotRecoverableError("missed publications cannot be recovered")})
	return true
}

// syncRecover adds the records of one joined SYNC entry: ok when the
// entry is recovered, avail false when the backend cannot answer.
func (s *Socket) syncRecover(st *syncState, channel string, recoverable bool, last protocol.UID, j *syncJoin, rel *syncRelease) (ok, avail bool) {
	pos, from := j.pos, j.from
	maxRec := uint64(s.srv.opts.MaxRecovery)
	switch {
	case recoverable && last.Epoch == pos.Epoch && last.Seq > pos.Seq:
		// The client saw publications this instance's stream has not
		// delivered yet (a late relay): recovered if they exist, and the
		// stream's copies up to lastUid are not sent again.
		ctx, cancel := s.backend()
		cur, err := s.srv.sc.Position(ctx, channel)
		cancel()
		if err != nil {
			s.srv.log.Warn("sss: sync position read failed", "socket", s.id, "channel", channel, "err", err)
			return false, false
		}
		if cur.Epoch == last.Epoch && last.Seq <= cur.Seq {
			rel.pos, rel.skipTo = last, true
			return true, true
		}
	case j.winOK:
		var recs [][]byte
		for _, pf := range j.fromWin {
			if pf.uid.Seq <= pos.Seq {
				recs = append(recs, pf.data)
			}
		}
		st.records, st.recBytes, ok = addRecords(st.records, recs, st.recBytes, st.budget)
		return ok, true
	case recoverable && from.Epoch == pos.Epoch && from.Seq < pos.Seq && pos.Seq-from.Seq <= maxRec:
		want := pos.Seq - from.Seq
		ctx, cancel := s.backend()
		pubs, err := s.srv.sc.Since(ctx, channel, from, int(want))
		cancel()
		if err != nil && !errors.Is(err, scaler.ErrNotRecoverable) {
			s.srv.log.Warn("sss: sync history read failed", "socket", s.id, "channel", channel, "err", err)
			return false, false
		}
		if err == nil && contiguous(pubs, from, want) {
			recs := make([][]byte, 0, want)
			for _, p := range pubs[:want] {
				recs = append(recs, newPubFrame(p).data)
			}
			st.records, st.recBytes, ok = addRecords(st.records, recs, st.recBytes, st.budget)
			return ok, true
		}
	}
	return false, true
}

// addRecords appends one channel's records when they fit the budget.
func addRecords(records, recs [][]byte, used, budget int) ([][]byte, int, bool) {
	n := 0
	for _, r := range recs {
		n += len(r) + 1
	}
	if used+n > budget {
		return records, used, false
	}
	return append(records, recs...), used + n, true
}

// contiguous reports whether pubs start right after `after` and hold at
// least want publications with consecutive seqs.
func contiguous(pubs []scaler.Publication, after protocol.UID, want uint64) bool {
	if uint64(len(pubs)) < want {
		return false
	}
	for i := uint64(0); i < want; i++ {
		u := pubs[i].UID
		if u.Epoch != after.Epoch || u.Seq != after.Seq+1+i {
			return false
		}
	}
	return true
}
