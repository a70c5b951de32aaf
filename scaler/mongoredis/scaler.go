package mongoredis

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/redis/go-redis/v9"
	"go.mongodb.org/mongo-driver/v2/mongo"

	"github.com/sss-go/sss/protocol"
	"github.com/sss-go/sss/scaler"
)

// Scaler is a scaler.Scaler on MongoDB (the durable per-channel log) and
// Redis (relay, control plane, leases, presence). Create it with New.
type Scaler struct {
	opts  Options
	id    string
	log   *slog.Logger
	mlog  *mlog
	mc    *mongo.Client
	rdb   redis.UniversalClient
	ownMC bool
	ownRD bool

	ctx    context.Context // cancelled by Close
	cancel context.CancelFunc

	relayPrefix, ctlName, probeName string

	mu      sync.Mutex // started, closed
	started bool
	closed  bool
	closeCh chan struct{} // closed when Close has finished
	h       atomic.Pointer[scaler.Handler]

	wgMu    sync.Mutex
	closing bool
	wg      sync.WaitGroup
	timers  map[*time.Timer]struct{}

	writersMu sync.Mutex
	writers   map[string]*writer

	streamsMu sync.Mutex
	streams   map[string]*stream

	psMu      sync.Mutex
	ps        *redis.PubSub
	relayMu   sync.Mutex
	want      map[string]bool
	sent      map[string]bool
	live      map[string]bool
	waiters   map[string][]chan struct{}
	subSignal chan struct{}
	connected atomic.Bool
	needCheck atomic.Bool
	probeSent atomic.Int64
	probeSeen atomic.Int64
	probeOK   atomic.Int64 // unix nanos of the last probe back

	stateMu    sync.Mutex
	leaseToken string // the lease is "<id>:<token>", see lease.go
	held       held   // presence and users held under the lease
	leaseOK    atomic.Bool
	paused     atomic.Bool
	resume     chan struct{}

	faultMu sync.Mutex
	drop    map[string]bool
	delay   map[string]time.Duration
}

var (
	_ scaler.Scaler        = (*Scaler)(nil)
	_ scaler.HistoryReader = (*Scaler)(nil)
	_ scaler.ControlPlane  = (*Scaler)(nil)
	_ scaler.PresenceStore = (*Scaler)(nil)
	_ scaler.UserRegistry  = (*Scaler)(nil)
	_ scaler.FaultInjector = (*Scaler)(nil)
)

func newID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// New connects to MongoDB and Redis as opts says, creates the log's
// indexes and starts the trimmer. It gives up after opts.ConnectTimeout
// (or when ctx ends) with an error that names the unreachable address and
// wraps scaler.ErrUnavailable. The instance serves streams, the control
// plane and its lease once Start is called; a process that only publishes
// need not call Start.
func New(ctx context.Context, opts Options) (*Scaler, error) {
	o, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	s := &Scaler{
		opts:       o,
		id:         o.InstanceID,
		log:        o.Logger,
		mc:         o.MongoClient,
		rdb:        o.RedisClient,
		closeCh:    make(chan struct{}),
		timers:     make(map[*time.Timer]struct{}),
		writers:    make(map[string]*writer),
		streams:    make(map[string]*stream),
		want:       make(map[string]bool),
		sent:       make(map[string]bool),
		live:       make(map[string]bool),
		waiters:    make(map[string][]chan struct{}),
		subSignal:  make(chan struct{}, 1),
		leaseToken: newID(),
		held:       newHeld(),
		resume:     make(chan struct{}, 1),
		drop:       make(map[string]bool),
		delay:      make(map[string]time.Duration),
	}
	s.relayPrefix = o.Prefix + ":c:"
	s.ctlName = o.Prefix + ":ctl"
	s.probeName = o.Prefix + ":probe:" + s.id
	if err := s.connect(ctx); err != nil {
		s.closeClients(ctx)
		return nil, err
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.goWorker(s.trimLoop)
	return s, nil
}

func (s *Scaler) closeClients(ctx context.Context) {
	if s.ownRD && s.rdb != nil {
		_ = s.rdb.Close()
	}
	if s.ownMC && s.mc != nil {
		_ = s.mc.Disconnect(ctx)
	}
}

// ID returns this instance's id.
func (s *Scaler) ID() string { return s.id }

// Start attaches h, takes the lease and starts the relay.
func (s *Scaler) Start(ctx context.Context, h scaler.Handler) error {
	s.mu.Lock()
	switch {
	case s.closed:
		s.mu.Unlock()
		return scaler.ErrClosed
	case s.started:
		s.mu.Unlock()
		return scaler.ErrStarted
	}
	s.started = true
	s.h.Store(&h)
	s.mu.Unlock()
	if err := s.register(ctx); err != nil {
		s.mu.Lock()
		s.started = false
		s.mu.Unlock()
		return fmt.Errorf("sss/mongoredis: start: %w", err)
	}
	s.leaseOK.Store(true)
	s.probeOK.Store(time.Now().UnixNano())
	s.newPubSub()
	for _, f := range []func(){s.receiveLoop, s.subLoop, s.probeLoop, s.leaseLoop, s.checkLoop} {
		s.goWorker(f)
	}
	// Live on the control channel before returning, so that a Control
	// sent after Start reaches this instance.
	if err := s.waitLive(ctx, s.ctlName); err != nil {
		return fmt.Errorf("sss/mongoredis: start: %w", err)
	}
	return nil
}

// goWorker runs f on a goroutine Close waits for; false once closing.
func (s *Scaler) goWorker(f func()) bool {
	s.wgMu.Lock()
	defer s.wgMu.Unlock()
	if s.closing {
		return false
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		f()
	}()
	return true
}

// afterFunc runs f after d unless the scaler closes first.
func (s *Scaler) afterFunc(d time.Duration, f func()) {
	s.wgMu.Lock()
	defer s.wgMu.Unlock()
	if s.closing {
		return
	}
	var t *time.Timer
	t = time.AfterFunc(d, func() {
		s.wgMu.Lock()
		_, ok := s.timers[t]
		delete(s.timers, t)
		if ok && !s.closing {
			s.wg.Add(1)
		} else {
			ok = false
		}
		s.wgMu.Unlock()
		if ok {
			defer s.wg.Done()
			f()
		}
	})
	s.timers[t] = struct{}{}
}

func (s *Scaler) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

var noHandler scaler.Handler

// handler returns the Handler given to Start (a zero one before).
func (s *Scaler) handler() *scaler.Handler {
	if h := s.h.Load(); h != nil {
		return h
	}
	return &noHandler
}

// event reports an operational event to the handler.
func (s *Scaler) event(kind scaler.EventKind, ch string, n int, err error) {
	if f := s.handler().Event; f != nil {
		f(scaler.Event{Kind: kind, Channel: ch, Count: n, Err: err, Time: time.Now()})
	}
}

// Subscribe makes this instance live on channel (the Redis subscription
// is confirmed first), then reads the channel's position from the log.
func (s *Scaler) Subscribe(ctx context.Context, channel string) (protocol.UID, error) {
	s.mu.Lock()
	closed, started := s.closed, s.started
	s.mu.Unlock()
	if closed {
		return protocol.UID{}, scaler.ErrClosed
	}
	if !started {
		return protocol.UID{}, fmt.Errorf("sss/mongoredis: subscribe %q: Start was not called", channel)
	}
	s.streamsMu.Lock()
	st := s.streams[channel]
	if st == nil {
		st = &stream{s: s, ch: channel, ready: make(chan struct{})}
		s.streams[channel] = st
		s.streamsMu.Unlock()
		return s.startStream(ctx, st)
	}
	s.streamsMu.Unlock()
	select {
	case <-st.ready:
	case <-ctx.Done():
		return protocol.UID{}, unavailable(fmt.Sprintf("subscribe %q", channel), ctx.Err())
	}
	if st.err != nil {
		return protocol.UID{}, st.err
	}
	// Already live: the stream goes on; report the current position.
	pos, _, err := s.mlog.position(ctx, channel)
	if err != nil {
		return protocol.UID{}, fmt.Errorf("sss/mongoredis: subscribe %q: %w", channel, err)
	}
	return pos, nil
}

func (s *Scaler) startStream(ctx context.Context, st *stream) (protocol.UID, error) {
	err := s.relaySubscribe(ctx, st.ch)
	var pos protocol.UID
	if err == nil {
		pos, _, err = s.mlog.position(ctx, st.ch)
	}
	if err != nil {
		st.err = fmt.Errorf("sss/mongoredis: subscribe %q: %w", st.ch, err)
		st.removed.Store(true)
		s.streamsMu.Lock()
		if s.streams[st.ch] == st {
			delete(s.streams, st.ch)
			s.relayUnsubscribe(st.ch)
		}
		s.streamsMu.Unlock()
		close(st.ready)
		return protocol.UID{}, st.err
	}
	st.start(pos)
	return pos, nil
}

// Unsubscribe stops this instance's stream of channel.
func (s *Scaler) Unsubscribe(ctx context.Context, channel string) error {
	if s.isClosed() {
		return scaler.ErrClosed
	}
	s.streamsMu.Lock()
	st := s.streams[channel]
	if st != nil {
		delete(s.streams, channel)
		st.removed.Store(true)
		s.relayUnsubscribe(channel)
	}
	s.streamsMu.Unlock()
	return nil
}

// Publish stores the publication in MongoDB (batched with concurrent
// publications of the channel from this process), returns its uid once
// MongoDB acknowledged it (with Options.WriteConcern) in the channel's
// current epoch, and relays it over Redis. An idempotency key is honoured
// for as long as the first publication is kept (retention).
//
// msg must be valid UTF-8 JSON text, else the error wraps
// scaler.ErrBadPayload and nothing is stored. An error wrapping
// scaler.ErrUnavailable means the publication surely was not stored. An
// error wrapping scaler.ErrUncertain means it may have been (ctx ended,
// or the connection failed, while its insert was on the wire): it may yet
// appear in the channel, once, if that insert lands (the scaler does not
// send it again). Retry such a publish with the same idempotency key: the
// retry returns the stored uid if the first attempt landed and stores the
// publication once if it did not. Without a key a retry may store it
// twice.
func (s *Scaler) Publish(ctx context.Context, channel, topic string, msg json.RawMessage, opts scaler.PublishOptions) (protocol.UID, error) {
	if s.isClosed() {
		return protocol.UID{}, scaler.ErrClosed
	}
	if channel == "" {
		return protocol.UID{}, errors.New("sss/mongoredis: publish: empty channel")
	}
	if len(msg) > 0 && (!utf8.Valid(msg) || !json.Valid(msg)) {
		return protocol.UID{}, fmt.Errorf("sss/mongoredis: publish %q: %w", channel, scaler.ErrBadPayload)
	}
	if err := ctx.Err(); err != nil {
		return protocol.UID{}, fmt.Errorf("sss/mongoredis: publish %q: %w: %w", channel, scaler.ErrUnavailable, err)
	}
	r := newPubReq(channel, topic, msg, opts.IdempotencyKey)
	if !s.writerFor(channel).enqueue(r) {
		return protocol.UID{}, scaler.ErrClosed
	}
	select {
	case <-r.done:
	case <-ctx.Done():
		select {
		case <-r.done:
		default:
			if r.withdraw() {
				return protocol.UID{}, fmt.Errorf("sss/mongoredis: publish %q: not sent: %w: %w", channel, scaler.ErrUnavailable, ctx.Err())
			}
			r.abandoned.Store(true)
			return protocol.UID{}, fmt.Errorf("sss/mongoredis: publish %q: insert sent, no answer yet: %w: %w", channel, scaler.ErrUncertain, ctx.Err())
		}
	}
	if r.err != nil {
		if s.isClosed() && !errors.Is(r.err, scaler.ErrUncertain) {
			return protocol.UID{}, fmt.Errorf("sss/mongoredis: publish %q: %w", channel, scaler.ErrClosed)
		}
		return protocol.UID{}, r.err
	}
	return r.uid, nil
}

// Position returns the channel's current position.
func (s *Scaler) Position(ctx context.Context, channel string) (protocol.UID, error) {
	if s.isClosed() {
		return protocol.UID{}, scaler.ErrClosed
	}
	pos, _, err := s.mlog.position(ctx, channel)
	if err != nil {
		return protocol.UID{}, fmt.Errorf("sss/mongoredis: position %q: %w", channel, err)
	}
	return pos, nil
}

// Since returns the publications of channel after `after`, read from the
// log.
func (s *Scaler) Since(ctx context.Context, channel string, after protocol.UID, limit int) ([]scaler.Publication, error) {
	if s.isClosed() {
		return nil, scaler.ErrClosed
	}
	wrap := func(err error) error { return fmt.Errorf("sss/mongoredis: since %q %s: %w", channel, after, err) }
	info, err := s.mlog.lookup(ctx, channel)
	if err != nil {
		return nil, wrap(err)
	}
	d := info.doc
	switch {
	case d.Epoch != after.Epoch:
		return nil, wrap(scaler.ErrEpochChanged)
	case !info.found && after.Seq > 0:
		return nil, wrap(scaler.ErrFuture) // never published: position 0
	case !info.found:
		return []scaler.Publication{}, nil
	case after.Seq < uint64(d.Floor):
		return nil, wrap(scaler.ErrTrimmed)
	}
	docs, err := s.mlog.readRange(ctx, channel, d.Epoch, after.Seq, 0, limit)
	if err != nil {
		return nil, wrap(err)
	}
	if len(docs) == 0 {
		m, err := s.mlog.maxSeq(ctx, channel, d.Epoch)
		if err != nil {
			return nil, wrap(err)
		}
		pos := max(m, uint64(d.Floor))
		switch {
		case after.Seq > pos:
			return nil, wrap(scaler.ErrFuture)
		case after.Seq < pos:
			return nil, wrap(scaler.ErrTrimmed)
		}
		return []scaler.Publication{}, nil
	}
	if uint64(docs[0].Seq) != after.Seq+1 {
		return nil, wrap(scaler.ErrTrimmed)
	}
	r := s.opts.retention(channel)
	if r.MaxCount < 0 || r.MaxAge > 0 && time.Since(docs[0].Time) > r.MaxAge {
		return nil, wrap(scaler.ErrTrimmed)
	}
	out := make([]scaler.Publication, 0, len(docs))
	for i := range docs {
		if uint64(docs[i].Seq) != after.Seq+uint64(i)+1 {
			break // never skip: the caller gets a shorter prefix
		}
		out = append(out, docs[i].publication())
	}
	return out, nil
}

// History returns up to limit of the newest kept publications, oldest
// first.
func (s *Scaler) History(ctx context.Context, channel string, limit int) ([]scaler.Publication, error) {
	if s.isClosed() {
		return nil, scaler.ErrClosed
	}
	info, err := s.mlog.lookup(ctx, channel)
	if err != nil {
		return nil, fmt.Errorf("sss/mongoredis: history %q: %w", channel, err)
	}
	d := info.doc
	out := []scaler.Publication{}
	r := s.opts.retention(channel)
	if !info.found || r.MaxCount < 0 {
		return out, nil
	}
	if r.MaxCount > 0 && (limit <= 0 || limit > r.MaxCount) {
		limit = r.MaxCount
	}
	docs, err := s.mlog.newest(ctx, channel, d.Epoch, limit)
	if err != nil {
		return nil, fmt.Errorf("sss/mongoredis: history %q: %w", channel, err)
	}
	n := 0
	for i := range docs {
		if i > 0 && docs[i].Seq != docs[i-1].Seq-1 {
			break
		}
		if r.MaxAge > 0 && time.Since(docs[i].Time) > r.MaxAge {
			break
		}
		n++
	}
	for i := n - 1; i >= 0; i-- {
		out = append(out, docs[i].publication())
	}
	return out, nil
}

// Health reports whether this instance can serve.
func (s *Scaler) Health(ctx context.Context) error {
	s.mu.Lock()
	closed, started := s.closed, s.started
	s.mu.Unlock()
	switch {
	case closed:
		return scaler.ErrClosed
	case !started:
		return fmt.Errorf("sss/mongoredis: health: %w: not started", scaler.ErrUnavailable)
	}
	if err := s.rdb.Ping(ctx).Err(); err != nil {
		return unavailable("health: redis ping", err)
	}
	if !s.connected.Load() {
		return fmt.Errorf("sss/mongoredis: health: %w: relay disconnected", scaler.ErrUnavailable)
	}
	if since := time.Since(time.Unix(0, s.probeOK.Load())); since > s.opts.ProbeInterval+s.opts.ProbeTimeout+time.Second {
		return fmt.Errorf("sss/mongoredis: health: %w: no relay probe back for %v", scaler.ErrUnavailable, since.Round(time.Millisecond))
	}
	if err := s.mc.Ping(ctx, nil); err != nil {
		return unavailable("health: mongodb ping", err)
	}
	if !s.leaseOK.Load() {
		return fmt.Errorf("sss/mongoredis: health: %w: lease not held", scaler.ErrUnavailable)
	}
	return nil
}

// Close stops the streams and background work, drops the lease with the
// presence and user entries held under it, and closes the clients New
// created. Idempotent.
func (s *Scaler) Close(ctx context.Context) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		select {
		case <-s.closeCh:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	s.closed = true
	started := s.started
	s.mu.Unlock()
	defer close(s.closeCh)

	s.wgMu.Lock()
	s.closing = true
	for t := range s.timers {
		t.Stop()
	}
	clear(s.timers)
	s.wgMu.Unlock()
	s.cancel()
	if ps := s.currentPS(); ps != nil {
		_ = ps.Close()
	}
	done := make(chan struct{})
	go func() {
		s.wg.Wait()
		close(done)
	}()
	var err error
	select {
	case <-done:
	case <-ctx.Done():
		err = fmt.Errorf("sss/mongoredis: close: %w", ctx.Err())
	}
	if started {
		s.unregister(ctx)
	}
	s.closeClients(ctx)
	return err
}
