package mongoredis

import (
	"context"
	"errors"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/sss-go/sss/scaler"
)

// trimLoop is the one trimming path (FerretDB has no TTL indexes): every
// TrimInterval, the instance that wins a Redis lock applies every
// channel's retention by count and age, and removes what older epochs
// left behind.
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
			err = s.trimAll(ctx, round%orphanEvery == 0)
		}
		cancel()
		if err != nil && s.ctx.Err() == nil {
			s.event(scaler.EventBackendError, "", 0, err)
		}
	}
}

// orphanEvery: every orphanEvery rounds the trimmer also removes what
// older epochs left behind (a reset removes its history itself; only a
// writer that raced the reset leaves anything), as that costs one delete
// per channel.
const orphanEvery = 30

func (s *Scaler) trimAll(ctx context.Context, orphans bool) error {
	chans, err := s.mlog.channels(ctx)
	if err != nil {
		return err
	}
	for _, c := range chans {
		if err := s.trimChannel(ctx, c, orphans); err != nil {
			return err
		}
	}
	return nil
}

func (s *Scaler) trimChannel(ctx context.Context, c chanDoc, orphans bool) error {
	var n int64
	if orphans {
		var err error
		if n, err = s.mlog.deleteOtherEpochs(ctx, c.Ch, c.Epoch); err != nil {
			return err
		}
	}
	r := s.opts.retention(c.Ch)
	var upTo uint64
	if r.MaxCount != 0 {
		m, err := s.mlog.maxSeq(ctx, c.Ch, c.Epoch)
		if err != nil {
			return err
		}
		keep := uint64(max(r.MaxCount, 0))
		if m > keep {
			upTo = m - keep
		}
	}
	if r.MaxAge > 0 {
		var d struct {
			Seq int64 `bson:"seq"`
		}
		err := s.mlog.pubs.FindOne(ctx,
			bson.D{{Key: "ch", Value: c.Ch}, {Key: "ep", Value: c.Epoch}, {Key: "t", Value: bson.D{{Key: "$lt", Value: time.Now().Add(-r.MaxAge)}}}},
			options.FindOne().SetSort(bson.D{{Key: "seq", Value: -1}}).SetProjection(bson.D{{Key: "seq", Value: 1}})).Decode(&d)
		switch {
		case errors.Is(err, mongo.ErrNoDocuments):
		case err != nil:
			return unavailable("trim", err)
		case d.Seq > 0:
			upTo = max(upTo, uint64(d.Seq))
		}
	}
	if upTo > uint64(c.Floor) {
		k, err := s.mlog.deleteUpTo(ctx, c.Ch, c.Epoch, upTo)
		if err != nil {
			return err
		}
		n += k
	}
	if n > 0 {
		s.event(scaler.EventTrimmed, c.Ch, int(n), nil)
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
