package mongoredis

import (
	"context"
	"errors"
	"time"

	"github.com/redis/go-redis/v9"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/sss-go/sss/scaler"
)

// Retention.
//
// One trimming path always runs (FerretDB has no TTL indexes): every
// TrimInterval, the instance that wins a Redis lock runs a trim round.
// A round walks the channel documents (only channels that had a
// publication have one) in name order from where the previous round
// stopped (a cursor kept in Redis next to the lock), a page at a time.
// For each channel it reads at most two things, the seq that retention
// by count keeps last and the newest seq older than retention by age;
// then, for the whole page, one bulk update raises the trim floors and
// one bulk delete removes what is past them (and, every orphanEvery
// rounds, what older epochs left behind). A round stops when its time
// budget (half the interval) is spent, after at least one channel, and
// the next round resumes at the next channel; so however many channels
// there are, each is trimmed in turn.

// Trim rounds.
const (
	// trimPage is how many channel documents one listing reads.
	trimPage = 100
	// orphanEvery: every orphanEvery rounds the trimmer also removes what
	// older epochs left behind (a reset removes its history itself; only
	// writers that raced it, or a rollback, leave anything).
	orphanEvery = 30
	// cursorTTL bounds how long an idle trim cursor stays in Redis.
	cursorTTL = 24 * time.Hour
)

// trimLoop runs a trim round every TrimInterval on the instance that holds
// the trim lock.
func (s *Scaler) trimLoop() {
	t := time.NewTicker(s.opts.TrimInterval)
	defer t.Stop()
	for round := 0; ; round++ {
		select {
		case <-s.ctx.Done():
			return
		case <-t.C:
		}
		s.sweepWriters()
		ctx, cancel := context.WithTimeout(s.ctx, s.opts.TrimInterval)
		ok, err := s.rdb.SetNX(ctx, s.opts.Prefix+":trimlock", s.id, s.opts.TrimInterval*9/10).Result()
		if err == nil && ok {
			err = s.trimRound(ctx, s.opts.TrimInterval/2, round%orphanEvery == 0)
		}
		cancel()
		if err != nil && s.ctx.Err() == nil {
			s.event(scaler.EventBackendError, "", 0, err)
		}
	}
}

// trimPlan is what a round does to one channel.
type trimPlan struct {
	c    chanDoc
	upTo uint64 // trim every seq up to it (0: nothing)
}

// trimRound applies retention from the saved cursor on, until the last
// channel or until budget is spent (after one channel at least).
func (s *Scaler) trimRound(ctx context.Context, budget time.Duration, orphans bool) error {
	deadline := time.Now().Add(budget)
	key := s.opts.Prefix + ":trimcursor"
	cursor, err := s.rdb.Get(ctx, key).Result()
	if err != nil && !errors.Is(err, redis.Nil) {
		cursor = "" // start over: trimming twice is harmless
	}
	save := func(c string) { _ = s.rdb.Set(ctx, key, c, cursorTTL).Err() }
	first := true
	for {
		page, err := s.mlog.channelPage(ctx, cursor, trimPage)
		if err != nil {
			return err
		}
		plans := make([]trimPlan, 0, len(page))
		for _, c := range page {
			if !first && time.Now().After(deadline) {
				break
			}
			first = false
			p, err := s.planTrim(ctx, c)
			if err != nil {
				return errors.Join(err, s.applyTrim(ctx, plans, orphans))
			}
			plans = append(plans, p)
		}
		if err := s.applyTrim(ctx, plans, orphans); err != nil {
			return err
		}
		if len(plans) > 0 {
			cursor = plans[len(plans)-1].c.Ch
		}
		switch {
		case len(plans) < len(page): // out of time: resume here
			save(cursor)
			return nil
		case len(page) < trimPage: // every channel seen: start over next time
			save("")
			return nil
		}
	}
}

// planTrim finds how far retention trims channel c, with at most two
// reads.
func (s *Scaler) planTrim(ctx context.Context, c chanDoc) (trimPlan, error) {
	p := trimPlan{c: c}
	r := s.opts.retention(c.Ch)
	base := bson.D{{Key: "ch", Value: c.Ch}, {Key: "ep", Value: c.Epoch}}
	newestFirst := bson.D{{Key: "seq", Value: -1}}
	onlySeq := bson.D{{Key: "seq", Value: 1}}
	if r.MaxCount != 0 {
		// The newest seq beyond the MaxCount newest ones.
		seq, err := s.mlog.firstSeq(ctx, base, options.FindOne().SetSort(newestFirst).SetProjection(onlySeq).SetSkip(int64(max(r.MaxCount, 0))))
		if err != nil {
			return p, err
		}
		p.upTo = seq
	}
	if r.MaxAge > 0 {
		aged := bson.D{base[0], base[1], {Key: "t", Value: bson.D{{Key: "$lt", Value: time.Now().Add(-r.MaxAge)}}}}
		seq, err := s.mlog.firstSeq(ctx, aged, options.FindOne().SetSort(newestFirst).SetProjection(onlySeq))
		if err != nil {
			return p, err
		}
		p.upTo = max(p.upTo, seq)
	}
	return p, nil
}

// applyTrim raises the floors of the planned channels in one bulk update,
// then deletes what is below them in one bulk delete, and reports the
// trimmed counts.
func (s *Scaler) applyTrim(ctx context.Context, plans []trimPlan, orphans bool) error {
	var floors, dels []mongo.WriteModel
	for _, p := range plans {
		c := p.c
		if p.upTo > uint64(c.Floor) {
			floors = append(floors, mongo.NewUpdateOneModel().
				SetFilter(bson.D{{Key: "_id", Value: c.Ch}, {Key: "ep", Value: c.Epoch}}).
				SetUpdate(bson.D{{Key: "$max", Value: bson.D{{Key: "floor", Value: int64(p.upTo)}}}}))
			dels = append(dels, mongo.NewDeleteManyModel().SetFilter(bson.D{{Key: "ch", Value: c.Ch}, {Key: "ep", Value: c.Epoch},
				{Key: "seq", Value: bson.D{{Key: "$lte", Value: int64(p.upTo)}}}}))
		}
		if orphans {
			dels = append(dels, mongo.NewDeleteManyModel().SetFilter(bson.D{{Key: "ch", Value: c.Ch},
				{Key: "ep", Value: bson.D{{Key: "$ne", Value: c.Epoch}}}}))
		}
	}
	// Floors first: a reader that misses a deleted seq finds it covered.
	if len(floors) > 0 {
		if _, err := s.mlog.chans.BulkWrite(ctx, floors, options.BulkWrite().SetOrdered(false)); err != nil {
			return unavailable("trim", err)
		}
	}
	if len(dels) > 0 {
		if _, err := s.mlog.pubs.BulkWrite(ctx, dels, options.BulkWrite().SetOrdered(false)); err != nil {
			return unavailable("trim", err)
		}
	}
	for _, p := range plans {
		if n := int64(p.upTo) - p.c.Floor; n > 0 {
			s.event(scaler.EventTrimmed, p.c.Ch, int(n), nil)
		}
	}
	return nil
}

// writerIdle is how long a channel's writer stays cached after its last
// write.
const writerIdle = time.Minute

// sweepWriters forgets writers idle for writerIdle, so that a process
// publishing to many channels over time does not keep one per channel.
func (s *Scaler) sweepWriters() {
	s.writersMu.Lock()
	defer s.writersMu.Unlock()
	for ch, w := range s.writers {
		w.mu.Lock()
		idle := !w.running && len(w.pending) == 0 && time.Since(w.wrote) > writerIdle && time.Since(w.checked) > writerIdle
		w.mu.Unlock()
		w.relayMu.Lock()
		idle = idle && !w.relayRunning && len(w.relayQ) == 0
		w.relayMu.Unlock()
		if idle {
			delete(s.writers, ch)
		}
	}
}
