package mongoredis

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"unicode/utf8"

	"github.com/redis/go-redis/v9"
	"go.mongodb.org/mongo-driver/v2/bson"

	"github.com/sss-go/sss/internal/testhook"
	"github.com/sss-go/sss/protocol"
	"github.com/sss-go/sss/scaler"
)

// Scaler is a scaler.Scaler on MongoDB (the durable per-channel log) and
// Redis (relay, control plane, leases, presence). Create it with New.
//
// It composes parts that each own their state and lock: the log (mlog,
// MongoDB), the relay (Redis pub/sub), the leases (lease, presence and
// users in Redis), the writers (publications of this process) and the
// streams (this instance's ordered deliveries), with one group of
// background goroutines that Close stops.
type Scaler struct {
	opts  Options
	id    string
	rdb   redis.UniversalClient
	ownRD bool // created by New: closed by Close

	mlog    *mlog
	out     *sink
	run     *group
	relay   *relay
	leases  *leases
	writers *writers
	streams *streams

	mu      sync.Mutex // started, closed
	started bool
	closed  bool
	closeCh chan struct{} // closed when Close has finished
}

var (
	_ scaler.Scaler        = (*Scaler)(nil)
	_ scaler.HistoryReader = (*Scaler)(nil)
	_ scaler.ControlPlane  = (*Scaler)(nil)
	_ scaler.PresenceStore = (*Scaler)(nil)
	_ scaler.UserRegistry  = (*Scaler)(nil)
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
		opts:    o,
		id:      o.InstanceID,
		out:     &sink{logger: o.Logger},
		closeCh: make(chan struct{}),
	}
	if err := s.connect(ctx); err != nil {
		s.closeClients(ctx)
		return nil, err
	}
	s.run = newGroup()
	s.relay = newRelay(s.rdb, s.run, s.out, &s.opts, s.id)
	s.leases = newLeases(s.rdb, s.run, s.out, &s.opts, s.id)
	s.writers = newWriters(s.mlog, s.relay, s.rdb, s.run, s.out, &s.opts)
	s.streams = newStreams(s.mlog, s.run, s.out, &s.opts, s.epochMoved)
	s.relay.deliver = s.onRelay
	s.relay.moved = s.onMoved
	s.relay.recheck = s.streams.checkAll
	s.run.spawn(s.trimLoop)
	if f := testhook.Faults(); f != nil {
		f(s, faultInjector{s})
	}
	return s, nil
}

func (s *Scaler) closeClients(ctx context.Context) {
	if s.ownRD && s.rdb != nil {
		_ = s.rdb.Close()
	}
	if s.mlog != nil {
		s.mlog.close(ctx)
	}
}

// onRelay hands a relayed publication (stored as document id) to the
// channel's writer (which learns that its seq is taken) and stream.
func (s *Scaler) onRelay(p scaler.Publication, id bson.ObjectID) {
	s.writers.observe(p.Channel, p.UID.Epoch, p.UID.Seq)
	s.streams.push(p.Channel, item{kind: itemPub, pub: p, id: id})
}

// onMoved learns, from the control channel, that channel moved to a new
// epoch: its writer reads its epoch again, its stream checks the log.
func (s *Scaler) onMoved(channel string) {
	s.writers.invalidate(channel)
	s.streams.push(channel, item{kind: itemCheck})
}

// epochMoved tells this instance's writer and every instance (over the
// control channel) that channel moved to epoch ep. Writers would find out
// by themselves at their next insert, streams at their next check; this
// only makes it sooner.
func (s *Scaler) epochMoved(ctx context.Context, channel, ep string) error {
	s.writers.invalidate(channel)
	if err := s.relay.sendEnvelope(ctx, envelope{Reset: channel, Epoch: ep}); err != nil {
		return opError(fmt.Sprintf("announce new epoch of %q", channel), err)
	}
	return nil
}

// ID returns this instance's id.
func (s *Scaler) ID() string { return s.id }

// state returns whether the scaler was started and closed.
func (s *Scaler) state() (started, closed bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.started, s.closed
}

func (s *Scaler) isClosed() bool {
	_, closed := s.state()
	return closed
}

// Start attaches h, takes the lease and starts the relay and the
// channels' checks.
func (s *Scaler) Start(ctx context.Context, h scaler.Handler) error {
	s.mu.Lock()
	switch {
	case s.closed:
		s.mu.Unlock()
		return closedError("start")
	case s.started:
		s.mu.Unlock()
		return opError("start", scaler.ErrStarted)
	}
	s.started = true
	s.out.h.Store(&h)
	s.mu.Unlock()
	if err := s.leases.start(ctx); err != nil {
		s.mu.Lock()
		s.started = false
		s.mu.Unlock()
		return opError("start", err)
	}
	s.run.spawn(s.streams.checkLoop)
	if err := s.relay.start(ctx); err != nil {
		return opError("start", err)
	}
	return nil
}

// Subscribe makes this instance live on channel (the Redis subscription
// is confirmed first), then reads the channel's position from the log.
func (s *Scaler) Subscribe(ctx context.Context, channel string) (protocol.UID, error) {
	op := fmt.Sprintf("subscribe %q", channel)
	switch started, closed := s.state(); {
	case closed:
		return protocol.UID{}, closedError(op)
	case !started:
		return protocol.UID{}, opError(op, errors.New("Start was not called"))
	}
	st, created := s.streams.open(channel)
	if created {
		return s.startStream(ctx, st, op)
	}
	select {
	case <-st.ready:
	case <-ctx.Done():
		return protocol.UID{}, opError(op, unavailable("wait for the stream", ctx.Err()))
	}
	if st.err != nil {
		return protocol.UID{}, st.err
	}
	// Already live: the stream goes on; report the current position.
	return s.position(ctx, op, channel)
}

func (s *Scaler) startStream(ctx context.Context, st *stream, op string) (protocol.UID, error) {
	err := s.relay.subscribe(ctx, st.ch)
	var pos protocol.UID
	if err == nil {
		pos, err = s.mlog.position(ctx, st.ch)
	}
	if err != nil {
		st.err = opError(op, err)
		st.removed.Store(true)
		s.streams.remove(st.ch, st, func() { s.relay.unsubscribe(st.ch) })
		close(st.ready)
		return protocol.UID{}, st.err
	}
	st.start(pos)
	return pos, nil
}

// Unsubscribe stops this instance's stream of channel.
func (s *Scaler) Unsubscribe(ctx context.Context, channel string) error {
	if s.isClosed() {
		return closedError(fmt.Sprintf("unsubscribe %q", channel))
	}
	s.streams.remove(channel, nil, func() { s.relay.unsubscribe(channel) })
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
	op := fmt.Sprintf("publish %q", channel)
	switch {
	case s.isClosed():
		return protocol.UID{}, closedError(op)
	case channel == "":
		return protocol.UID{}, opError(op, errors.New("empty channel"))
	case len(msg) > 0 && (!utf8.Valid(msg) || !json.Valid(msg)):
		return protocol.UID{}, opError(op, scaler.ErrBadPayload)
	case ctx.Err() != nil:
		return protocol.UID{}, opError(op, fmt.Errorf("%w: %w", scaler.ErrUnavailable, ctx.Err()))
	}
	r := newPubReq(channel, topic, msg, opts.IdempotencyKey)
	if !s.writers.get(channel).enqueue(r) {
		return protocol.UID{}, closedError(op)
	}
	select {
	case <-r.done:
	case <-ctx.Done():
		select {
		case <-r.done:
		default:
			if r.withdraw() {
				return protocol.UID{}, opError(op, fmt.Errorf("not sent: %w: %w", scaler.ErrUnavailable, ctx.Err()))
			}
			r.abandoned.Store(true)
			return protocol.UID{}, opError(op, fmt.Errorf("insert sent, no answer yet: %w: %w", scaler.ErrUncertain, ctx.Err()))
		}
	}
	if r.err != nil {
		if s.isClosed() && !errors.Is(r.err, scaler.ErrUncertain) {
			return protocol.UID{}, closedError(op)
		}
		return protocol.UID{}, opError(op, r.err)
	}
	return r.uid, nil
}

// Position returns the channel's current position.
func (s *Scaler) Position(ctx context.Context, channel string) (protocol.UID, error) {
	op := fmt.Sprintf("position %q", channel)
	if s.isClosed() {
		return protocol.UID{}, closedError(op)
	}
	return s.position(ctx, op, channel)
}

// position reads the channel's position for op.
func (s *Scaler) position(ctx context.Context, op, channel string) (protocol.UID, error) {
	pos, err := s.mlog.position(ctx, channel)
	if err != nil {
		return protocol.UID{}, opError(op, err)
	}
	return pos, nil
}

// Control sends a control message to every running instance, this one
// included.
func (s *Scaler) Control(ctx context.Context, msg scaler.Control) error {
	if s.isClosed() {
		return closedError("control")
	}
	msg.Origin = s.id
	return wrapNil("control", s.relay.sendEnvelope(ctx, envelope{Ctl: &msg}))
}

// Health reports whether this instance can serve: Redis answers, the
// relay is connected and its probe comes back, MongoDB answers, and the
// lease is held.
func (s *Scaler) Health(ctx context.Context) error {
	switch started, closed := s.state(); {
	case closed:
		return closedError("health")
	case !started:
		return opError("health", fmt.Errorf("%w: not started", scaler.ErrUnavailable))
	}
	if err := s.rdb.Ping(ctx).Err(); err != nil {
		return opError("health", unavailable("redis ping", err))
	}
	if err := s.relay.health(); err != nil {
		return opError("health", fmt.Errorf("%w: %w", scaler.ErrUnavailable, err))
	}
	if err := s.mlog.ping(ctx, nil); err != nil {
		return opError("health", unavailable("mongodb ping", err))
	}
	if !s.leases.ok.Load() {
		return opError("health", fmt.Errorf("%w: lease not held", scaler.ErrUnavailable))
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
			return opError("close", ctx.Err())
		}
	}
	s.closed = true
	started := s.started
	s.mu.Unlock()
	defer close(s.closeCh)

	s.run.halt()
	s.relay.close()
	err := s.run.wait(ctx)
	if err != nil {
		err = opError("close", err)
	}
	if started {
		s.leases.unregister(ctx)
	}
	s.closeClients(ctx)
	return err
}
