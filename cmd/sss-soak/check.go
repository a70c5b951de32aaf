package main

import (
	"fmt"
	"io"
	"time"
)

// result is what the checker found.
type result struct {
	published, acked, stored, delivered      int
	lost, duplicated, outOfOrder, notRecover int
	maxRecovery                              time.Duration

	// Further anomalies; each fails the run too.
	unexpected    int // deliveries that do not match the stored log at their seq, or precede the subscription
	holes         int // seqs missing in a stored log (or trimmed before the checker read them)
	ackMismatch   int // acknowledged uid differs from where the publication is stored
	unknownStored int // stored publications the soak never published
	epochChanged  int // subscriptions whose channel changed epoch
	subsFailed    int // subscriptions that ended (refused, ...) before the end
	unrecovered   int // clients not live at the end
	badDocs       int // stored documents without a payload id, or seq <= 0
	otherEpoch    int // stored documents of another epoch

	// Informational.
	pending         int    // publishes never acknowledged (retried until the end)
	pendingStored   int    // of which stored anyway
	gaveUp          int    // publishes abandoned on an error neither uncertain nor unavailable
	failedAttempts  [3]int // uncertain, unavailable, other
	clientDupsDrops uint64 // publications clients dropped as already applied
	reconnects      uint64
	subChanges      int64 // subscription status changes

	anomalies []string
}

// maxAnomalies bounds the anomalies kept for printing without -v.
const maxAnomalies = 20

func (r *result) anomaly(format string, args ...any) {
	r.anomalies = append(r.anomalies, fmt.Sprintf(format, args...))
}

// check compares the stored logs with the acknowledged publishes and with
// what every subscription delivered.
func check(logs map[string]*chanLog, led *ledger, f *fleet) *result {
	r := &result{}
	byID := map[string]map[int64][]storedDoc{}
	for ch, l := range logs {
		byID[ch] = r.checkLog(ch, l)
	}
	r.checkLedger(led, byID)
	for ch, subs := range f.subs {
		for _, s := range subs {
			r.checkSub(s, logs[ch])
		}
	}
	for _, cr := range f.clients {
		d, down := cr.recovery()
		r.maxRecovery = max(r.maxRecovery, d)
		if down {
			r.unrecovered++
			r.anomaly("client %d not live at the end (down %v)", cr.idx, d.Round(time.Millisecond))
		}
		if cr.c != nil {
			st := cr.c.Stats()
			r.clientDupsDrops += st.Duplicates
			r.reconnects += st.Reconnects
		}
	}
	return r
}

// checkLog checks one channel's stored log: seqs gap-free from the floor,
// each payload id once. It returns the documents by payload id.
func (r *result) checkLog(ch string, l *chanLog) map[int64][]storedDoc {
	ids := map[int64][]storedDoc{}
	r.otherEpoch += l.otherEpoch
	r.badDocs += l.badSeq
	if l.otherEpoch > 0 {
		r.anomaly("channel %s: %d stored documents of an epoch other than %s", ch, l.otherEpoch, l.epoch)
	}
	var prev int64
	for _, d := range l.docs {
		if d.Seq != prev+1 {
			r.holes += int(d.Seq - prev - 1)
			if d.Seq-1 <= l.floor {
				r.anomaly("channel %s: seqs %d..%d were trimmed before the checker read them (floor %d)", ch, prev+1, d.Seq-1, l.floor)
			} else {
				r.anomaly("channel %s: seqs %d..%d missing from the stored log", ch, prev+1, d.Seq-1)
			}
		}
		prev = d.Seq
		if d.id < 0 {
			r.badDocs++
			r.anomaly("channel %s: stored seq %d has no payload id: %.80q", ch, d.Seq, d.M)
			continue
		}
		r.stored++
		ids[d.id] = append(ids[d.id], d)
		if n := len(ids[d.id]); n > 1 {
			r.duplicated++
			r.anomaly("channel %s: payload id %d stored again at seq %d (first at seq %d)", ch, d.id, d.Seq, ids[d.id][0].Seq)
		}
	}
	return ids
}

// checkLedger checks that every acknowledged publish is stored, once, at
// its uid, and that nothing stored was never published.
func (r *result) checkLedger(led *ledger, byID map[string]map[int64][]storedDoc) {
	recs := led.all()
	led.mu.Lock()
	r.failedAttempts = [3]int{led.uncertain, led.unavailable, led.other}
	led.mu.Unlock()
	r.published = len(recs)
	known := map[int64]string{}
	for _, p := range recs {
		known[p.id] = p.channel
		docs := byID[p.channel][p.id]
		switch p.state {
		case pubAcked:
			r.acked++
			if len(docs) == 0 {
				r.lost++
				r.anomaly("acknowledged publication %d on %s (uid %s) is not stored", p.id, p.channel, p.uid)
			} else if d := docs[0]; d.Ep != p.uid.Epoch || uint64(d.Seq) != p.uid.Seq {
				r.ackMismatch++
				r.anomaly("publication %d on %s acknowledged as %s but stored at %s.%d", p.id, p.channel, p.uid, d.Ep, d.Seq)
			}
		case pubGaveUp:
			r.gaveUp++
			fallthrough
		default:
			r.pending++
			if len(docs) > 0 {
				r.pendingStored++
			}
		}
	}
	for ch, ids := range byID {
		for id, docs := range ids {
			if known[id] != ch {
				r.unknownStored++
				r.anomaly("channel %s: stored payload id %d at seq %d was never published there", ch, id, docs[0].Seq)
			}
		}
	}
}

// checkSub checks one subscription: from its start, every stored
// publication exactly once, in seq order, and nothing else.
func (r *result) checkSub(s *subRec, l *chanLog) {
	got, bad := s.snapshot()
	r.delivered += len(got)
	r.notRecover += int(s.notRecoverable.Load())
	r.subChanges += s.changes.Load()
	if n := s.failed.Load(); n > 0 {
		r.subsFailed++
		r.anomaly("client %d channel %s: subscription ended before the run did", s.client, s.channel)
	}
	for _, u := range bad {
		r.unexpected++
		r.anomaly("client %d channel %s: delivery with uid %q (subscribed in epoch %s)", s.client, s.channel, u, s.epoch)
	}
	if l == nil {
		l = &chanLog{}
	}
	if s.epoch != "" && s.epoch != l.epoch {
		r.epochChanged++
		r.anomaly("client %d channel %s: subscribed in epoch %s, the channel is now in epoch %q", s.client, s.channel, s.epoch, l.epoch)
		return
	}
	bySeq := make(map[int64]int64, len(l.docs))
	for _, d := range l.docs {
		bySeq[d.Seq] = d.id
	}
	seen := map[int64]int{}
	prev := s.start
	for _, d := range got {
		if !d.ok {
			continue
		}
		id, stored := bySeq[int64(d.seq)]
		switch {
		case !stored || id != d.id:
			r.unexpected++
			r.anomaly("client %d channel %s: delivered payload %d at seq %d, stored there: %d (stored: %v)", s.client, s.channel, d.id, d.seq, id, stored)
			continue
		case d.seq <= s.start:
			r.unexpected++
			r.anomaly("client %d channel %s: delivered seq %d, at or before its subscription at %d", s.client, s.channel, d.seq, s.start)
			continue
		}
		seen[d.id]++
		if seen[d.id] > 1 {
			r.duplicated++
			r.anomaly("client %d channel %s: seq %d (payload %d) delivered again", s.client, s.channel, d.seq, d.id)
			continue
		}
		if d.seq < prev {
			r.outOfOrder++
			r.anomaly("client %d channel %s: seq %d delivered after seq %d", s.client, s.channel, d.seq, prev)
		}
		prev = max(prev, d.seq)
	}
	for _, d := range l.docs {
		if uint64(d.Seq) > s.start && seen[d.id] == 0 {
			r.lost++
			r.anomaly("client %d channel %s: seq %d (payload %d) never delivered", s.client, s.channel, d.Seq, d.id)
		}
	}
}

// passed reports whether the run passed, with the reasons it did not.
func (r *result) passed(minAckRatio float64, short, faultErrs []string) (bool, []string) {
	var why []string
	add := func(n int, what string) {
		if n > 0 {
			why = append(why, fmt.Sprintf("%s=%d", what, n))
		}
	}
	add(r.lost, "lost")
	add(r.duplicated, "duplicated")
	add(r.outOfOrder, "outoforder")
	add(r.notRecover, "notrecoverable")
	add(r.unexpected, "unexpected")
	add(r.holes, "holes")
	add(r.ackMismatch, "ack_mismatch")
	add(r.unknownStored, "unknown_stored")
	add(r.epochChanged, "epoch_changed")
	add(r.subsFailed, "subs_failed")
	add(r.unrecovered, "unrecovered_clients")
	add(r.badDocs, "bad_docs")
	add(r.otherEpoch, "other_epoch_docs")
	if r.published == 0 {
		why = append(why, "nothing was published")
	} else if ratio := float64(r.acked) / float64(r.published); ratio < minAckRatio {
		why = append(why, fmt.Sprintf("acknowledged %.2f%% of publishes, want at least %.0f%%", 100*ratio, 100*minAckRatio))
	}
	why = append(why, short...)
	for _, e := range faultErrs {
		why = append(why, "fault failed: "+e)
	}
	return len(why) == 0, why
}

// print writes the anomalies, a details line and the summary line.
func (r *result) print(w io.Writer, faults string, verbose bool) {
	for i, a := range r.anomalies {
		if i == maxAnomalies && !verbose {
			fmt.Fprintf(w, "anomaly: ... and %d more (-v lists all)\n", len(r.anomalies)-maxAnomalies)
			break
		}
		fmt.Fprintln(w, "anomaly:", a)
	}
	fmt.Fprintf(w, "details: unacknowledged=%d unacknowledged_stored=%d gave_up=%d failed_attempts=uncertain:%d,unavailable:%d,other:%d "+
		"unexpected=%d holes=%d ack_mismatch=%d unknown_stored=%d epoch_changed=%d subs_failed=%d unrecovered_clients=%d "+
		"bad_docs=%d other_epoch_docs=%d reconnects=%d sub_status_changes=%d client_dropped_dups=%d\n",
		r.pending, r.pendingStored, r.gaveUp, r.failedAttempts[0], r.failedAttempts[1], r.failedAttempts[2],
		r.unexpected, r.holes, r.ackMismatch, r.unknownStored, r.epochChanged, r.subsFailed, r.unrecovered,
		r.badDocs, r.otherEpoch, r.reconnects, r.subChanges, r.clientDupsDrops)
	fmt.Fprintf(w, "published=%d acknowledged=%d stored=%d delivered=%d faults=%s lost=%d duplicated=%d outoforder=%d notrecoverable=%d max_recovery_ms=%d\n",
		r.published, r.acked, r.stored, r.delivered, faults, r.lost, r.duplicated, r.outOfOrder, r.notRecover, r.maxRecovery.Milliseconds())
}
