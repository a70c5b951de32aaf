package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/sss-go/sss/protocol"
	"github.com/sss-go/sss/scaler"
	"github.com/sss-go/sss/scaler/mongoredis"
	"github.com/sss-go/sss/server"
)

// pubState is where a publish stands.
type pubState int

const (
	pubPending pubState = iota // attempted, not acknowledged (yet)
	pubAcked                   // acknowledged with a uid
	pubGaveUp                  // an error that is neither uncertain nor unavailable
)

// pubRec is one publication the soak attempted.
type pubRec struct {
	id       int64
	channel  string
	state    pubState
	uid      protocol.UID
	attempts int
	lastErr  string
}

// ledger records every publish attempted and its outcome.
type ledger struct {
	mu          sync.Mutex
	recs        []*pubRec // by id-1
	acked       int
	uncertain   int // failed attempts wrapping scaler.ErrUncertain
	unavailable int // failed attempts wrapping scaler.ErrUnavailable
	other       int // failed attempts with another error
}

func (l *ledger) add(channel string) *pubRec {
	l.mu.Lock()
	defer l.mu.Unlock()
	r := &pubRec{id: int64(len(l.recs) + 1), channel: channel}
	l.recs = append(l.recs, r)
	return r
}

// attempt records the result of one Publish call and reports whether it
// may be retried with the same key.
func (l *ledger) attempt(r *pubRec, uid protocol.UID, err error) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	r.attempts++
	switch {
	case err == nil:
		r.state, r.uid = pubAcked, uid
		l.acked++
		return false
	case errors.Is(err, scaler.ErrUncertain):
		l.uncertain++
	case errors.Is(err, scaler.ErrUnavailable):
		l.unavailable++
	default:
		l.other++
		r.state, r.lastErr = pubGaveUp, err.Error()
		return false
	}
	r.lastErr = err.Error()
	return true
}

// counts returns how many were published (attempted) and acknowledged.
func (l *ledger) counts() (published, acked int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.recs), l.acked
}

// all returns every record (to read after the publishers stopped).
func (l *ledger) all() []*pubRec {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]*pubRec(nil), l.recs...)
}

// payload is the message of publication id: the id the checker matches
// and some text.
func payload(id int64) json.RawMessage {
	return json.RawMessage(`{"id":` + strconv.FormatInt(id, 10) + `,"text":"soak message ` + strconv.FormatInt(id, 10) + `"}`)
}

// publishers publish at a steady rate through a server.Publisher on a
// mongoredis scaler of their own (direct connections, no proxies).
type publishers struct {
	cfg   config
	sc    *mongoredis.Scaler
	pub   *server.Publisher
	led   *ledger
	runID string
	wg    sync.WaitGroup

	closeMongo func()
	once       sync.Once
}

func newPublishers(ctx context.Context, cfg config, cl *cluster) (*publishers, error) {
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError})).With("soak", "publisher")
	mc, closeMongo, err := mongoClient(cl.mongoURI, cfg.mongoPool)
	if err != nil {
		return nil, err
	}
	nctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	sc, err := mongoredis.New(nctx, mongoredis.Options{
		MongoClient:      mc,
		RedisURL:         cl.redisURL,
		Database:         cl.database,
		Prefix:           cl.prefix,
		DefaultRetention: soakRetention(cfg.retentionCount()),
		TrimInterval:     trimInterval,
		LeaseTTL:         cfg.leaseTTL,
		Logger:           log,
	})
	if err != nil {
		closeMongo()
		return nil, fmt.Errorf("publisher scaler: %w", err)
	}
	pub, err := server.NewPublisher(sc, server.PublisherOptions{Logger: log})
	if err != nil {
		_ = sc.Close(context.Background())
		closeMongo()
		return nil, err
	}
	return &publishers{cfg: cfg, sc: sc, pub: pub, closeMongo: closeMongo, led: &ledger{}, runID: cl.database}, nil
}

// start starts one publishing goroutine per channel. New publications
// start until stop ends; an unacknowledged one is retried (same key) until
// hard ends.
func (p *publishers) start(stop, hard context.Context) {
	period := time.Duration(float64(time.Second) * float64(p.cfg.channels) / p.cfg.rate)
	for i := range p.cfg.channels {
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			// Spread the channels' ticks over one period.
			if !sleepCtx(stop, period*time.Duration(i)/time.Duration(p.cfg.channels)) {
				return
			}
			t := time.NewTicker(period)
			defer t.Stop()
			for {
				p.publishOne(hard, channelName(i))
				select {
				case <-stop.Done():
					return
				case <-t.C:
				}
			}
		}()
	}
}

// publishOne publishes one new publication on channel, retrying an
// uncertain or unavailable outcome with the same idempotency key until it
// is acknowledged or hard ends.
func (p *publishers) publishOne(hard context.Context, channel string) {
	r := p.led.add(channel)
	key := p.runID + "-" + strconv.FormatInt(r.id, 10)
	msg := payload(r.id)
	for attempt := 0; hard.Err() == nil; attempt++ {
		actx, cancel := context.WithTimeout(hard, 10*time.Second)
		uid, err := p.pub.Publish(actx, channel, "message", msg, server.PublishOptions{IdempotencyKey: key})
		cancel()
		if !p.led.attempt(r, uid, err) {
			return
		}
		if !sleepCtx(hard, min(50*time.Millisecond<<min(attempt, 5), time.Second)) {
			return
		}
	}
}

// wait waits for the publishing goroutines to end.
func (p *publishers) wait() { p.wg.Wait() }

// close closes the publisher's scaler: nothing of it writes afterwards.
// Idempotent.
func (p *publishers) close() {
	p.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		_ = p.pub.Close(ctx)
		_ = p.sc.Close(ctx)
		p.closeMongo()
	})
}
