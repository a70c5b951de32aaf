package mongoredis

import (
	"context"
	"time"

	"github.com/sss-go/sss/scaler"
)

// Checks: a lost relayed publication is revealed by a later one (a gap,
// stream.go), but a lost last one, or publications missed while the relay
// was down, only by comparing the streams with the log. After a relay
// reconnect every served channel is checked, and every CheckInterval
// those that received nothing for that long, in batches.

// checkAll makes every served channel check the log (after a relay
// reconnect), batched, off the caller's goroutine.
func (ss *streams) checkAll() {
	list := ss.started(time.Time{})
	ss.run.spawn(func() {
		if err := ss.checkMany(list); err != nil {
			// Let each channel find out on its own.
			for _, st := range list {
				st.push(item{kind: itemCheck})
			}
		}
	})
}

// started lists the started streams that received nothing since
// quietSince (every started stream when zero).
func (ss *streams) started(quietSince time.Time) []*stream {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	list := make([]*stream, 0, len(ss.m))
	for _, st := range ss.m {
		st.mu.Lock()
		if st.started && (quietSince.IsZero() || !st.running && st.lastRecv.Before(quietSince)) {
			list = append(list, st)
		}
		st.mu.Unlock()
	}
	return list
}

// checkLoop checks channels that received nothing for CheckInterval: a
// lost last publication has no later one to reveal it.
func (ss *streams) checkLoop() {
	t := time.NewTicker(ss.checkEach)
	defer t.Stop()
	for ss.run.tick(t.C) {
		quiet := ss.started(time.Now().Add(-ss.checkEach))
		if err := ss.checkMany(quiet); err != nil && ss.run.ctx.Err() == nil {
			ss.out.event(scaler.EventBackendError, "", 0, opError("check channels", err))
		}
	}
}

// checkBatch is how many channels one batched check query covers.
const checkBatch = 256

// checkMany compares many streams with the log in two queries per
// checkBatch channels (the channel documents, then the publications from
// each stream's last seq on), and makes those that are behind, or whose
// epoch or floor moved, run their own check, and those whose last
// publication is missing from the log verify it (see rollback.go).
func (ss *streams) checkMany(list []*stream) error {
	ctx, cancel := context.WithTimeout(ss.run.ctx, ss.timeout)
	defer cancel()
	for len(list) > 0 {
		chunk := list[:min(len(list), checkBatch)]
		list = list[len(chunk):]
		if err := ss.checkChunk(ctx, chunk); err != nil {
			return err
		}
	}
	return nil
}

// chunkCheck is the state of one batched check.
type chunkCheck struct {
	byName map[string]*stream
	need   map[*stream]itemKind
	lasts  map[string]uint64 // streams whose last seq must be in the log
	qs     []tipQuery
}

func (ss *streams) checkChunk(ctx context.Context, chunk []*stream) error {
	c := chunkCheck{
		byName: make(map[string]*stream, len(chunk)),
		need:   make(map[*stream]itemKind),
		lasts:  make(map[string]uint64),
	}
	names := make([]string, len(chunk))
	for i, st := range chunk {
		names[i] = st.ch
		c.byName[st.ch] = st
	}
	docs, secret, err := ss.mlog.lookupMany(ctx, names)
	if err != nil {
		return err
	}
	for _, st := range chunk {
		d, ok := docs[st.ch]
		if !ok {
			d = chanDoc{Ch: st.ch, Epoch: defaultEpoch(secret, st.ch)}
		}
		c.compare(st, d, ok)
	}
	if len(c.qs) > 0 {
		found, err := ss.mlog.tips(ctx, c.qs)
		if err != nil {
			return err
		}
		c.found(found)
	}
	for st, kind := range c.need {
		st.push(item{kind: kind})
	}
	return nil
}

// compare decides from st's channel document d (found: stored, not
// derived) whether st must check or verify, or what to ask the log.
func (c *chunkCheck) compare(st *stream, d chanDoc, found bool) {
	ep, last := st.seenEpoch.Load(), st.seenLast.Load()
	switch {
	case ep == nil || d.Epoch != *ep || uint64(d.Floor) > last:
		c.need[st] = itemCheck
	case !found && last > 0:
		c.need[st] = itemVerify // delivered publications of a channel without a document
	case !found:
		// Never published: nothing to compare.
	case last > uint64(d.Floor):
		c.lasts[st.ch] = last
		c.qs = append(c.qs, tipQuery{ch: st.ch, ep: d.Epoch, from: last, incl: true})
	default:
		c.qs = append(c.qs, tipQuery{ch: st.ch, ep: d.Epoch, from: last})
	}
}

// found reads what the log holds from each stream's last seq on: a later
// seq means the stream must check; a missing last one, that it must
// verify.
func (c *chunkCheck) found(found []chanSeq) {
	present := make(map[string]bool)
	for _, f := range found {
		st := c.byName[f.Ch]
		switch {
		case st == nil:
		case uint64(f.Seq) == c.lasts[f.Ch]:
			present[f.Ch] = true
		case uint64(f.Seq) > st.seenLast.Load():
			c.need[st] = itemCheck
		}
	}
	for ch := range c.lasts {
		if st := c.byName[ch]; !present[ch] && c.need[st] == 0 {
			c.need[st] = itemVerify
		}
	}
}
