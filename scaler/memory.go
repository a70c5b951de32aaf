package scaler

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/sss-go/sss/protocol"
)

// ErrNotStarted: the call needs Start first (Subscribe, Join, AddUser
// hold state under the instance's lease and deliver to its Handler). An
// error of the memory scaler that the contract's sentinels do not cover.
var ErrNotStarted = errors.New("sss/scaler: not started")

// Defaults of MemoryOptions.
const (
	DefaultMemoryMaxCount          = 1000
	DefaultMemoryMaxAge            = time.Hour
	DefaultMemoryIdempotencyWindow = 2 * time.Minute
	DefaultMemoryLeaseTTL          = 10 * time.Second
	DefaultMemoryCheckInterval     = time.Second
)

// MemoryOptions configures a MemoryBackend and every instance made from it.
// The zero value is ready to use.
type MemoryOptions struct {
	// Retention returns the retention of a channel, asked once when the
	// channel is first used. Zero fields of its result fall back to
	// DefaultRetention. Nil means DefaultRetention for every channel. It
	// is called with the backend's lock held and must not call the
	// scaler.
	Retention func(channel string) Retention
	// DefaultRetention is the retention of channels Retention says
	// nothing about. Zero MaxCount means 1000 publications
	// (DefaultMemoryMaxCount); zero MaxAge means one hour
	// (DefaultMemoryMaxAge). Negative values keep their meaning (see
	// Retention).
	DefaultRetention Retention
	// IdempotencyWindow is how long a publish idempotency key is
	// remembered. Zero means two minutes; negative disables keys.
	IdempotencyWindow time.Duration
	// LeaseTTL is how long an instance's lease lives without renewal; an
	// instance renews it every LeaseTTL/3. Zero means 10 s.
	LeaseTTL time.Duration
	// CheckInterval is the period of each started instance's position
	// check (which finds a lost last publication) and of the age trimmer.
	// Zero means 1 s.
	//
	// Per-channel state is bounded: a channel that never had a
	// publication keeps no state once it has no subscriber (its epoch is
	// derived from its name and a secret of the backend, so the position
	// "<epoch>.0" handed out stays recoverable, and its first publication
	// lands in that epoch). A channel that had publications keeps a small
	// record of its epoch and position; the trimmer forgets it only when
	// it keeps nothing, has no subscriber, saw no publish or subscribe for
	// longer than its MaxAge (when positive), and never had a publication
	// in its derived epoch (so that epoch is never reused with other
	// content). Such a channel starts in its derived epoch when used
	// again.
	CheckInterval time.Duration
	// Logger receives the scaler's logs; nil means slog.Default().
	Logger *slog.Logger
}

func (o MemoryOptions) withDefaults() MemoryOptions {
	if o.DefaultRetention.MaxCount == 0 {
		o.DefaultRetention.MaxCount = DefaultMemoryMaxCount
	}
	if o.DefaultRetention.MaxAge == 0 {
		o.DefaultRetention.MaxAge = DefaultMemoryMaxAge
	}
	if o.IdempotencyWindow == 0 {
		o.IdempotencyWindow = DefaultMemoryIdempotencyWindow
	}
	if o.LeaseTTL <= 0 {
		o.LeaseTTL = DefaultMemoryLeaseTTL
	}
	if o.CheckInterval <= 0 {
		o.CheckInterval = DefaultMemoryCheckInterval
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return o
}

// MemoryBackend is the shared state of a cluster of in-memory scaler
// instances: channel logs, presence, user registrations, leases and the
// control bus. Instances made by Instance behave like separate processes
// sharing one backend: each has its own id, subscriptions, lease and
// delivery goroutine, and publications reach them through an asynchronous
// relay. A MemoryBackend needs no closing; close its instances.
type MemoryBackend struct {
	opts   MemoryOptions
	secret [32]byte // derives the epoch of channels without state

	mu        sync.Mutex
	nextID    uint64
	channels  map[string]*memChannel
	instances map[*Memory]struct{}
	leases    map[string]time.Time // instance id -> lease expiry
	presence  map[string]map[string]memPresence
	users     map[string]map[string]int // user -> instance id -> count
}

type memPresence struct {
	owner  string
	member Member
}

type memIdem struct {
	key string
	uid protocol.UID
	at  time.Time
}

// memChannel is one channel's log. log holds the retained publications
// first..seq, contiguous.
type memChannel struct {
	epoch    string
	seq      uint64
	log      []Publication
	ret      Retention
	subs     map[*Memory]*memSub
	idem     map[string]memIdem
	idemFIFO []memIdem
	touched  time.Time // creation, last publish, last (un)subscribe
	trimmed  int       // publications removed and not yet reported
	dflt     string    // the channel's derived epoch
	// usedDflt: a publication was made in the derived epoch, so the
	// channel's state is never forgotten (see MemoryOptions).
	usedDflt bool
}

// droppable reports whether c's state can go: nothing tells it from a
// channel that never existed.
func (c *memChannel) droppable() bool {
	return c.seq == 0 && !c.usedDflt && c.epoch == c.dflt && len(c.subs) == 0 && len(c.log) == 0 && len(c.idem) == 0
}

func (c *memChannel) first() uint64 { return c.seq - uint64(len(c.log)) + 1 }

func (c *memChannel) pos() protocol.UID { return protocol.UID{Epoch: c.epoch, Seq: c.seq} }

// NewMemoryBackend returns an empty backend.
func NewMemoryBackend(opts MemoryOptions) *MemoryBackend {
	b := &MemoryBackend{
		opts:      opts.withDefaults(),
		channels:  make(map[string]*memChannel),
		instances: make(map[*Memory]struct{}),
		leases:    make(map[string]time.Time),
		presence:  make(map[string]map[string]memPresence),
		users:     make(map[string]map[string]int),
	}
	_, _ = rand.Read(b.secret[:]) // crypto/rand.Read never fails on supported platforms
	return b
}

// derivedEpoch is the epoch of a channel for which the backend holds no
// state: a keyed hash of its name, 16 characters of [A-Za-z0-9].
func (b *MemoryBackend) derivedEpoch(channel string) string {
	mac := hmac.New(sha256.New, b.secret[:])
	mac.Write([]byte(channel))
	sum := mac.Sum(nil)
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
	out := make([]byte, 16)
	for i := range out {
		out[i] = alphabet[int(sum[i])%len(alphabet)]
	}
	return string(out)
}

// NewMemory returns a single instance on a backend of its own: the
// embedded default scaler of a server that runs alone.
func NewMemory(opts MemoryOptions) *Memory {
	return NewMemoryBackend(opts).Instance()
}

// Instance returns a new instance on the backend, not yet started.
func (b *MemoryBackend) Instance() *Memory {
	b.mu.Lock()
	b.nextID++
	id := "mem" + strconv.FormatUint(b.nextID, 10)
	m := &Memory{
		b:        b,
		id:       id,
		log:      b.opts.Logger.With("scaler", "memory", "instance", id),
		subs:     make(map[string]*memSub),
		drop:     make(map[string]int),
		delay:    make(map[string]time.Duration),
		timers:   make(map[*time.Timer]struct{}),
		joined:   make(map[string]map[string]Member),
		users:    make(map[string]int),
		wake:     make(chan struct{}, 1),
		renewNow: make(chan struct{}, 1),
		stop:     make(chan struct{}),
		done:     make(chan struct{}),
	}
	b.instances[m] = struct{}{}
	b.mu.Unlock()
	return m
}

// channelLocked returns channel's log, creating its state (in the derived
// epoch).
func (b *MemoryBackend) channelLocked(channel string) *memChannel {
	c := b.peekLocked(channel)
	if b.channels[channel] == nil {
		b.channels[channel] = c
	}
	return c
}

// peekLocked returns channel's log without keeping state for a channel
// that has none: a fresh, empty one in the derived epoch.
func (b *MemoryBackend) peekLocked(channel string) *memChannel {
	c := b.channels[channel]
	if c != nil {
		return c
	}
	ret := b.opts.DefaultRetention
	if b.opts.Retention != nil {
		r := b.opts.Retention(channel)
		if r.MaxCount != 0 {
			ret.MaxCount = r.MaxCount
		}
		if r.MaxAge != 0 {
			ret.MaxAge = r.MaxAge
		}
	}
	ep := b.derivedEpoch(channel)
	return &memChannel{
		epoch:   ep,
		dflt:    ep,
		ret:     ret,
		subs:    make(map[*Memory]*memSub),
		touched: time.Now(),
	}
}

// trimLocked is the one trimming path: it applies c's retention by count
// and age and returns how many publications it removed. The removals are
// reported by the periodic trimmer (one EventTrimmed per channel and
// period, not one per publish).
func trimLocked(c *memChannel, now time.Time) int {
	n := 0
	switch {
	case c.ret.MaxCount < 0:
		n = len(c.log)
	case len(c.log) > c.ret.MaxCount:
		n = len(c.log) - c.ret.MaxCount
	}
	if c.ret.MaxAge > 0 {
		cut := now.Add(-c.ret.MaxAge)
		for n < len(c.log) && c.log[n].Time.Before(cut) {
			n++
		}
	}
	dropFront(c, n)
	return n
}

func dropFront(c *memChannel, n int) {
	if n <= 0 {
		return
	}
	clear(c.log[:n]) // let the payloads go
	c.log = c.log[n:]
	c.trimmed += n
	if len(c.log) == 0 {
		c.log = nil
	}
}

// expireIdemLocked forgets idempotency keys older than the window.
func (b *MemoryBackend) expireIdemLocked(c *memChannel, now time.Time) {
	cut := now.Add(-b.opts.IdempotencyWindow)
	i := 0
	for i < len(c.idemFIFO) && !c.idemFIFO[i].at.After(cut) {
		e := c.idemFIFO[i]
		if cur, ok := c.idem[e.key]; ok && cur.at.Equal(e.at) {
			delete(c.idem, e.key)
		}
		i++
	}
	if i > 0 {
		clear(c.idemFIFO[:i])
		c.idemFIFO = c.idemFIFO[i:]
	}
}

// memView is a consistent read of a channel's log for the stream.
type memView struct {
	epoch string
	first uint64 // first kept seq (seq+1 when nothing is kept)
	last  uint64 // the channel's position
	pubs  []Publication
}

// view reads the publications of channel after `after` up to upto (0: to
// the end) when epoch is current; otherwise only the position.
func (b *MemoryBackend) view(channel, epoch string, after, upto uint64) memView {
	b.mu.Lock()
	defer b.mu.Unlock()
	c := b.peekLocked(channel)
	v := memView{epoch: c.epoch, first: c.first(), last: c.seq}
	if c.epoch != epoch || after >= c.seq {
		return v
	}
	lo := max(after+1, v.first)
	hi := c.seq
	if upto != 0 && upto < hi {
		hi = upto
	}
	if lo <= hi {
		f := v.first
		v.pubs = append([]Publication(nil), c.log[lo-f:hi-f+1]...)
	}
	return v
}

// leaseAliveLocked reports whether instance id holds a live lease.
func (b *MemoryBackend) leaseAliveLocked(id string, now time.Time) bool {
	exp, ok := b.leases[id]
	return ok && now.Before(exp)
}

// Memory is one instance of the in-memory scaler. Create it with NewMemory
// or MemoryBackend.Instance. It implements Scaler and FaultInjector.
type Memory struct {
	b   *MemoryBackend
	id  string
	log *slog.Logger

	// Guarded by b.mu.
	started bool
	closed  atomic.Bool // written under b.mu

	// mu guards the fields below; taken after b.mu, never the reverse.
	mu     sync.Mutex
	subs   map[string]*memSub
	drop   map[string]int
	delay  map[string]time.Duration
	timers map[*time.Timer]struct{}
	joined map[string]map[string]Member
	users  map[string]int
	paused bool

	// qmu guards the relay queue; taken after mu.
	qmu     sync.Mutex
	queue   []memItem
	qclosed bool
	wake    chan struct{}

	renewNow chan struct{}
	stop     chan struct{}
	done     chan struct{}
	stopOnce sync.Once
}

var (
	_ Scaler        = (*Memory)(nil)
	_ HistoryReader = (*Memory)(nil)
	_ ControlPlane  = (*Memory)(nil)
	_ PresenceStore = (*Memory)(nil)
	_ UserRegistry  = (*Memory)(nil)
	_ FaultInjector = (*Memory)(nil)
)

// memSub is an instance's subscription to one channel. Its stream fields
// belong to the instance's delivery goroutine once the subscription is
// registered.
type memSub struct {
	channel string
	dead    atomic.Bool
	// pending counts relayed publications queued but not yet handled: the
	// position check leaves a stream with a backlog alone.
	pending atomic.Int64

	epoch string // stream position: epoch and last delivered seq
	last  uint64
	seen  uint64 // channel position seen by the previous position check
}

// memItem is one entry of an instance's relay queue.
type memItem struct {
	sub     *memSub
	pub     Publication
	control *Control
	event   *Event
}

// ID returns the instance's id, unique within its backend.
func (m *Memory) ID() string { return m.id }

// check returns an error, naming the operation and its subject, when the
// instance is closed or ctx is done.
func (m *Memory) check(ctx context.Context, op, subject string) error {
	var err error
	if m.closed.Load() {
		err = ErrClosed
	} else if err = ctx.Err(); err == nil {
		return nil
	}
	if subject == "" {
		return fmt.Errorf("sss/scaler: %s: %w", op, err)
	}
	return fmt.Errorf("sss/scaler: %s %q: %w", op, subject, err)
}

// Start attaches h, takes the instance's lease and starts its delivery
// goroutine.
func (m *Memory) Start(ctx context.Context, h Handler) error {
	if err := m.check(ctx, "start", ""); err != nil {
		return err
	}
	b := m.b
	b.mu.Lock()
	if m.closed.Load() {
		b.mu.Unlock()
		return fmt.Errorf("sss/scaler: start: %w", ErrClosed)
	}
	if m.started {
		b.mu.Unlock()
		return fmt.Errorf("sss/scaler: start: %w", ErrStarted)
	}
	m.started = true
	b.leases[m.id] = time.Now().Add(b.opts.LeaseTTL)
	b.mu.Unlock()
	go m.run(h)
	m.log.Debug("memory scaler started")
	return nil
}

// Subscribe makes the instance live on channel and returns the channel's
// position, atomically with respect to every Publish.
func (m *Memory) Subscribe(ctx context.Context, channel string) (protocol.UID, error) {
	if err := m.check(ctx, "subscribe", channel); err != nil {
		return protocol.UID{}, err
	}
	b := m.b
	b.mu.Lock()
	defer b.mu.Unlock()
	if m.closed.Load() {
		return protocol.UID{}, fmt.Errorf("sss/scaler: subscribe %q: %w", channel, ErrClosed)
	}
	if !m.started {
		return protocol.UID{}, fmt.Errorf("sss/scaler: subscribe %q: %w", channel, ErrNotStarted)
	}
	c := b.channelLocked(channel)
	c.touched = time.Now()
	if _, ok := c.subs[m]; !ok {
		s := &memSub{channel: channel, epoch: c.epoch, last: c.seq, seen: c.seq}
		c.subs[m] = s
		m.mu.Lock()
		m.subs[channel] = s
		m.mu.Unlock()
	}
	return c.pos(), nil
}

// Unsubscribe stops the instance's stream of channel.
func (m *Memory) Unsubscribe(ctx context.Context, channel string) error {
	if err := m.check(ctx, "unsubscribe", channel); err != nil {
		return err
	}
	b := m.b
	b.mu.Lock()
	defer b.mu.Unlock()
	if c := b.channels[channel]; c != nil {
		if s := c.subs[m]; s != nil {
			s.dead.Store(true)
			delete(c.subs, m)
			c.touched = time.Now()
		}
		if c.droppable() {
			delete(b.channels, channel)
		}
	}
	m.mu.Lock()
	delete(m.subs, channel)
	m.mu.Unlock()
	return nil
}

// Publish appends the publication to channel's log, assigning the next
// seq, and relays it to every subscribed instance.
func (m *Memory) Publish(ctx context.Context, channel, topic string, msg json.RawMessage, opts PublishOptions) (protocol.UID, error) {
	if err := m.check(ctx, "publish", channel); err != nil {
		return protocol.UID{}, err
	}
	if len(msg) == 0 {
		msg = json.RawMessage("null")
	} else if !utf8.Valid(msg) || !json.Valid(msg) {
		return protocol.UID{}, fmt.Errorf("sss/scaler: publish %q: %w", channel, ErrBadPayload)
	}
	msg = append(json.RawMessage(nil), msg...)
	b := m.b
	now := time.Now()
	b.mu.Lock()
	if m.closed.Load() {
		b.mu.Unlock()
		return protocol.UID{}, fmt.Errorf("sss/scaler: publish %q: %w", channel, ErrClosed)
	}
	c := b.channelLocked(channel)
	useKey := opts.IdempotencyKey != "" && b.opts.IdempotencyWindow > 0
	if useKey {
		b.expireIdemLocked(c, now)
		if e, ok := c.idem[opts.IdempotencyKey]; ok {
			b.mu.Unlock()
			return e.uid, nil
		}
	}
	c.seq++
	c.touched = now
	c.usedDflt = c.usedDflt || c.epoch == c.dflt
	p := Publication{Channel: channel, UID: c.pos(), Topic: topic, Msg: msg, Time: now}
	c.log = append(c.log, p)
	if useKey {
		if c.idem == nil {
			c.idem = make(map[string]memIdem)
		}
		e := memIdem{key: opts.IdempotencyKey, uid: p.UID, at: now}
		c.idem[e.key] = e
		c.idemFIFO = append(c.idemFIFO, e)
	}
	trimLocked(c, now)
	for inst, s := range c.subs {
		inst.relay(s, p)
	}
	b.mu.Unlock()
	return p.UID, nil
}

// relay hands p to the instance's queue, honouring injected faults. Called
// with b.mu held.
func (m *Memory) relay(s *memSub, p Publication) {
	m.mu.Lock()
	if n := m.drop[p.Channel]; n > 0 {
		if n == 1 {
			delete(m.drop, p.Channel)
		} else {
			m.drop[p.Channel] = n - 1
		}
		m.mu.Unlock()
		return
	}
	if d, ok := m.delay[p.Channel]; ok {
		delete(m.delay, p.Channel)
		var t *time.Timer
		t = time.AfterFunc(d, func() {
			m.mu.Lock()
			_, live := m.timers[t]
			delete(m.timers, t)
			m.mu.Unlock()
			if live {
				s.pending.Add(1)
				m.enqueue(memItem{sub: s, pub: p})
			}
		})
		m.timers[t] = struct{}{}
		m.mu.Unlock()
		return
	}
	m.mu.Unlock()
	s.pending.Add(1)
	m.enqueue(memItem{sub: s, pub: p})
}

// enqueue appends it to the relay queue and wakes the delivery goroutine.
func (m *Memory) enqueue(it memItem) {
	m.qmu.Lock()
	if m.qclosed {
		m.qmu.Unlock()
		return
	}
	m.queue = append(m.queue, it)
	m.qmu.Unlock()
	select {
	case m.wake <- struct{}{}:
	default:
	}
}

// Position returns channel's current position.
func (m *Memory) Position(ctx context.Context, channel string) (protocol.UID, error) {
	if err := m.check(ctx, "position", channel); err != nil {
		return protocol.UID{}, err
	}
	b := m.b
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.peekLocked(channel).pos(), nil
}

// Since returns the publications of channel after `after`.
func (m *Memory) Since(ctx context.Context, channel string, after protocol.UID, limit int) ([]Publication, error) {
	if err := m.check(ctx, "since", channel); err != nil {
		return nil, err
	}
	b := m.b
	now := time.Now()
	b.mu.Lock()
	c := b.peekLocked(channel)
	trimLocked(c, now)
	var (
		out []Publication
		err error
	)
	switch {
	case after.Epoch != c.epoch:
		err = fmt.Errorf("sss/scaler: since %q %s: %w", channel, after, ErrEpochChanged)
	case after.Seq > c.seq:
		err = fmt.Errorf("sss/scaler: since %q %s: %w", channel, after, ErrFuture)
	case after.Seq+1 < c.first():
		err = fmt.Errorf("sss/scaler: since %q %s: %w", channel, after, ErrTrimmed)
	default:
		f := c.first()
		rest := c.log[after.Seq+1-f:]
		if limit > 0 && len(rest) > limit {
			rest = rest[:limit]
		}
		out = append(make([]Publication, 0, len(rest)), rest...)
	}
	b.mu.Unlock()
	return out, err
}

// History returns up to limit of channel's newest publications, oldest
// first.
func (m *Memory) History(ctx context.Context, channel string, limit int) ([]Publication, error) {
	if err := m.check(ctx, "history", channel); err != nil {
		return nil, err
	}
	b := m.b
	now := time.Now()
	b.mu.Lock()
	c := b.peekLocked(channel)
	trimLocked(c, now)
	rest := c.log
	if limit > 0 && len(rest) > limit {
		rest = rest[len(rest)-limit:]
	}
	out := append(make([]Publication, 0, len(rest)), rest...)
	b.mu.Unlock()
	return out, nil
}

// Control sends msg to every started instance of the backend, this one
// included, with Origin set to this instance's id.
func (m *Memory) Control(ctx context.Context, msg Control) error {
	if err := m.check(ctx, "control", msg.Target); err != nil {
		return err
	}
	msg.Origin = m.id
	if msg.Msg != nil {
		msg.Msg = append(json.RawMessage(nil), msg.Msg...)
	}
	if msg.Member != nil {
		mb := *msg.Member
		msg.Member = &mb
	}
	b := m.b
	b.mu.Lock()
	defer b.mu.Unlock()
	for inst := range b.instances {
		if inst.started && !inst.closed.Load() {
			c := msg
			inst.enqueue(memItem{control: &c})
		}
	}
	return nil
}

// Health returns nil while the instance is started and holds its lease.
func (m *Memory) Health(ctx context.Context) error {
	if err := m.check(ctx, "health", ""); err != nil {
		return err
	}
	b := m.b
	b.mu.Lock()
	defer b.mu.Unlock()
	switch {
	case !m.started:
		return fmt.Errorf("sss/scaler: health: %w: %w", ErrUnavailable, ErrNotStarted)
	case !b.leaseAliveLocked(m.id, time.Now()):
		return fmt.Errorf("sss/scaler: health: lease expired: %w", ErrUnavailable)
	}
	return nil
}

// Close stops the delivery goroutine and waits for it (bounded by ctx),
// then drops the instance's subscriptions, lease, presence and user
// entries. Later calls return nil; other methods return errors wrapping
// ErrClosed. Close must not be called from a Handler function with a ctx
// that never ends: it waits for the goroutine that runs them.
func (m *Memory) Close(ctx context.Context) error {
	b := m.b
	b.mu.Lock()
	first := !m.closed.Load()
	if first {
		m.closed.Store(true)
		b.dropOwnedLocked(m.id)
		delete(b.leases, m.id)
		delete(b.instances, m)
		m.mu.Lock()
		for ch, s := range m.subs {
			s.dead.Store(true)
			if c := b.channels[ch]; c != nil && c.subs[m] == s {
				delete(c.subs, m)
			}
		}
		clear(m.subs)
		for t := range m.timers {
			t.Stop()
		}
		clear(m.timers)
		m.mu.Unlock()
		m.qmu.Lock()
		m.qclosed = true
		m.queue = nil
		m.qmu.Unlock()
	}
	started := m.started
	b.mu.Unlock()
	if !started {
		return nil
	}
	m.stopOnce.Do(func() { close(m.stop) })
	select {
	case <-m.done:
	case <-ctx.Done():
		select {
		case <-m.done: // stopped in time after all
		default:
			return fmt.Errorf("sss/scaler: close: %w", ctx.Err())
		}
	}
	if first {
		m.log.Debug("memory scaler closed")
	}
	return nil
}
