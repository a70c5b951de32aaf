package main

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
)

// The checker reads the channel logs as mongoredis stores them, with a
// plain MongoDB client, not through the scaler:
//
//	<prefix>_channels: {_id: channel, ep: current epoch, floor: highest seq trimmed}
//	<prefix>_pubs:     {ch, ep, seq, tp, m: the message's JSON text, t, ik: "k:"+key}
//
// Retention trims the logs during the run (the test MongoDB scans the
// whole collection for every read, so it must stay small), so the checker
// reads them every few seconds and keeps every publication it has seen:
// publications are never modified, only trimmed.

// storedDoc is one stored publication.
type storedDoc struct {
	Ch  string `bson:"ch"`
	Ep  string `bson:"ep"`
	Seq int64  `bson:"seq"`
	M   string `bson:"m"`

	id int64 // the payload's id, -1 if none
}

// chanLog is one channel's log as the checker saw it: its epoch, its trim
// floor and, in seq order, every publication of that epoch it read.
type chanLog struct {
	epoch      string
	floor      int64
	docs       []storedDoc
	otherEpoch int // documents of other epochs (left over, or a reset)
	badSeq     int // documents with seq <= 0 (ignored by the scaler too)
}

// lastSeq returns the seq of the newest publication of l.
func (l *chanLog) lastSeq() uint64 {
	if l == nil || len(l.docs) == 0 {
		return 0
	}
	return uint64(l.docs[len(l.docs)-1].Seq)
}

// chanSeen accumulates one channel's publications across reads.
type chanSeen struct {
	epoch  string
	floor  int64
	bySeq  map[int64]storedDoc
	other  map[string]bool // "ep.seq" of documents of other epochs
	badSeq map[string]bool
}

// store is a plain MongoDB client on the soak's database, and what it has
// read so far.
type store struct {
	client *mongo.Client
	pubs   *mongo.Collection
	chans  *mongo.Collection

	mu    sync.Mutex
	seen  map[string]*chanSeen
	reads int
	errs  int
}

func openStore(cl *cluster) (*store, error) {
	c, err := mongo.Connect(options.Client().ApplyURI(cl.mongoURI).SetServerSelectionTimeout(10 * time.Second))
	if err != nil {
		return nil, fmt.Errorf("checker's MongoDB client: %w", err)
	}
	db := c.Database(cl.database)
	return &store{client: c, pubs: db.Collection(cl.prefix + "_pubs"), chans: db.Collection(cl.prefix + "_channels"),
		seen: map[string]*chanSeen{}}, nil
}

func (s *store) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = s.client.Disconnect(ctx)
}

// dropDatabase removes the soak's database (external MongoDB only).
func (s *store) dropDatabase(ctx context.Context) error {
	return s.pubs.Database().Drop(ctx)
}

// poll reads both collections once and adds what is new.
func (s *store) poll(ctx context.Context) error {
	rctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	err := s.read(rctx)
	s.mu.Lock()
	s.reads++
	if err != nil {
		s.errs++
	}
	s.mu.Unlock()
	return err
}

// follow polls every interval until ctx ends.
func (s *store) follow(ctx context.Context, every time.Duration) {
	for sleepCtx(ctx, every) {
		_ = s.poll(ctx)
	}
}

// read reads the channel documents first, then the publications (a
// publication of a new epoch read before its channel document would be
// counted as of another epoch).
func (s *store) read(ctx context.Context) error {
	cur, err := s.chans.Find(ctx, bson.D{})
	if err != nil {
		return fmt.Errorf("read channels: %w", err)
	}
	var chans []struct {
		ID    string `bson:"_id"`
		Ep    string `bson:"ep"`
		Floor int64  `bson:"floor"`
	}
	if err := cur.All(ctx, &chans); err != nil {
		return fmt.Errorf("read channels: %w", err)
	}
	cur, err = s.pubs.Find(ctx, bson.D{})
	if err != nil {
		return fmt.Errorf("read publications: %w", err)
	}
	var docs []storedDoc
	if err := cur.All(ctx, &docs); err != nil {
		return fmt.Errorf("read publications: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range chans {
		cs := s.channel(c.ID)
		if cs.epoch == "" {
			cs.epoch = c.Ep
		}
		if c.Ep == cs.epoch {
			cs.floor = max(cs.floor, c.Floor)
		}
	}
	for _, d := range docs {
		cs := s.channel(d.Ch)
		key := fmt.Sprintf("%s.%d", d.Ep, d.Seq)
		switch {
		case cs.epoch == "":
			// Its channel was created after the channel read: next time.
		case d.Ep != cs.epoch:
			cs.other[key] = true
		case d.Seq <= 0:
			cs.badSeq[key] = true
		default:
			if _, ok := cs.bySeq[d.Seq]; !ok {
				d.id = payloadID([]byte(d.M))
				d.M = d.M[:min(len(d.M), 80)] // kept for messages only
				cs.bySeq[d.Seq] = d
			}
		}
	}
	return nil
}

func (s *store) channel(name string) *chanSeen {
	cs := s.seen[name]
	if cs == nil {
		cs = &chanSeen{bySeq: map[int64]storedDoc{}, other: map[string]bool{}, badSeq: map[string]bool{}}
		s.seen[name] = cs
	}
	return cs
}

// logs returns every channel's log as seen so far.
func (s *store) logs() map[string]*chanLog {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]*chanLog, len(s.seen))
	for name, cs := range s.seen {
		l := &chanLog{epoch: cs.epoch, floor: cs.floor, otherEpoch: len(cs.other), badSeq: len(cs.badSeq)}
		for _, d := range cs.bySeq {
			l.docs = append(l.docs, d)
		}
		sort.Slice(l.docs, func(i, j int) bool { return l.docs[i].Seq < l.docs[j].Seq })
		out[name] = l
	}
	return out
}

// stats returns how many reads were made and how many failed.
func (s *store) stats() (reads, errs int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.reads, s.errs
}

// pollRetry polls, retrying for a few minutes (the MongoDB may be busy
// right after the run).
func (s *store) pollRetry(ctx context.Context) error {
	var err error
	for attempt := 0; attempt < 6; attempt++ {
		if err = s.poll(ctx); err == nil || errors.Is(err, context.Canceled) || !sleepCtx(ctx, 5*time.Second) {
			return err
		}
	}
	return err
}
