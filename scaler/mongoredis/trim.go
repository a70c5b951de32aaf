package mongoredis

import (
	"context"
	"errors"
	"time"

	"github.com/redis/go-redis/v9"

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
// the trim lock, and forgets idle writers.
func (s *Scaler) trimLoop() {
	t := time.NewTicker(s.opts.TrimInterval)
	defer t.Stop()
	for round := 0; s.run.tick(t.C); round++ {
		s.writers.sweep()
		ctx, cancel := context.WithTimeout(s.run.ctx, s.opts.TrimInterval)
		ok, err := s.rdb.SetNX(ctx, s.opts.Prefix+":trimlock", s.id, s.opts.TrimInterval*9/10).Result()
		if err == nil && ok {
			err = s.trimRound(ctx, s.opts.TrimInterval/2, round%orphanEvery == 0)
		}
		cancel()
		if err != nil && s.run.ctx.Err() == nil {
			s.out.event(scaler.EventBackendError, "", 0, opError("trim", err))
		}
	}
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
			p, err := s.mlog.planTrim(ctx, c, s.opts.retention(c.Ch))
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

// applyTrim applies the plans to the log and reports the trimmed counts.
func (s *Scaler) applyTrim(ctx context.Context, plans []trimPlan, orphans bool) error {
	if err := s.mlog.applyTrim(ctx, plans, orphans); err != nil {
		return err
	}
	for _, p := range plans {
		if n := int64(p.upTo) - p.c.Floor; n > 0 {
			s.out.event(scaler.EventTrimmed, p.c.Ch, int(n), nil)
		}
	}
	return nil
}
