package mongoredis

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"go.mongodb.org/mongo-driver/v2/bson"

	"github.com/sss-go/sss/internal/backoff"
	"github.com/sss-go/sss/scaler"
)

// The relay: every publication, once stored, is PUBLISHed on the Redis
// channel <prefix>:c:<channel> carrying the whole publication (codec.go),
// so no instance reads MongoDB per delivered message. One pub/sub
// connection per instance holds the channels it serves plus <prefix>:ctl
// (control plane) and <prefix>:probe:<id> (its own probe). SUBSCRIBE and
// UNSUBSCRIBE are batched by one goroutine.

const relayTimeout = time.Second

// relay is the Redis pub/sub side of the scaler: its connection, the
// subscriptions it holds, its probe, and the relay faults tests inject.
// It hands what it receives to the functions the Scaler gives it.
type relay struct {
	rdb          redis.UniversalClient
	run          *group
	out          *sink
	probeEvery   time.Duration
	probeTimeout time.Duration

	chanPrefix string // "<prefix>:c:": a channel's relay name is chanPrefix + channel
	ctlName    string
	probeName  string

	// deliver takes a relayed publication (stored as document id);
	// moved learns that a channel's epoch moved (a control message);
	// recheck makes every served channel check the log (after the relay
	// was down).
	deliver func(p scaler.Publication, id bson.ObjectID)
	moved   func(ch string)
	recheck func()

	psMu sync.Mutex // ps
	ps   *redis.PubSub

	subs   subscriptions
	faults relayFaults

	connected atomic.Bool
	needCheck atomic.Bool // a probe failed: check everything once back
	probeSent atomic.Int64
	probeSeen atomic.Int64
	probeOK   atomic.Int64 // unix nanos of the last probe back
}

// subscriptions tracks the relay names the instance wants, those it sent
// SUBSCRIBE for, and those Redis confirmed (live), with the callers
// waiting for a confirmation.
type subscriptions struct {
	mu      sync.Mutex // every field
	want    map[string]bool
	sent    map[string]bool
	live    map[string]bool
	waiters map[string][]chan struct{}
	signal  chan struct{} // wakes the subscribing goroutine
}

func newRelay(rdb redis.UniversalClient, run *group, out *sink, o *Options, id string) *relay {
	return &relay{
		rdb:          rdb,
		run:          run,
		out:          out,
		probeEvery:   o.ProbeInterval,
		probeTimeout: o.ProbeTimeout,
		chanPrefix:   o.Prefix + ":c:",
		ctlName:      o.Prefix + ":ctl",
		probeName:    o.Prefix + ":probe:" + id,
		subs: subscriptions{
			want:    make(map[string]bool),
			sent:    make(map[string]bool),
			live:    make(map[string]bool),
			waiters: make(map[string][]chan struct{}),
			signal:  make(chan struct{}, 1),
		},
		faults: relayFaults{drop: make(map[string]bool), delay: make(map[string]time.Duration)},
	}
}

func (r *relay) name(ch string) string { return r.chanPrefix + ch }

// start opens the pub/sub connection and runs the receiving, subscribing
// and probing goroutines, then waits until the control channel is live,
// so that a Control sent after Start reaches this instance.
func (r *relay) start(ctx context.Context) error {
	r.probeOK.Store(time.Now().UnixNano())
	r.newPubSub()
	for _, f := range []func(){r.receiveLoop, r.subLoop, r.probeLoop} {
		r.run.spawn(f)
	}
	return r.waitLive(ctx, r.ctlName)
}

// close closes the pub/sub connection (on Close, after the group halted).
func (r *relay) close() {
	if ps := r.currentPS(); ps != nil {
		_ = ps.Close()
	}
}

// health says why the relay cannot be trusted now, or nil.
func (r *relay) health() error {
	if !r.connected.Load() {
		return errors.New("relay disconnected")
	}
	if since := time.Since(time.Unix(0, r.probeOK.Load())); since > r.probeEvery+r.probeTimeout+time.Second {
		return fmt.Errorf("no relay probe back for %v", since.Round(time.Millisecond))
	}
	return nil
}

// queuePubs queues, on pipe, the PUBLISH of each stored publication of
// ch, in order.
func (r *relay) queuePubs(ctx context.Context, pipe redis.Pipeliner, ch string, docs []*pubDoc) {
	name := r.name(ch)
	for _, d := range docs {
		pipe.Publish(ctx, name, encodeRelay(d))
	}
}

// sendEnvelope publishes a control message to every instance.
func (r *relay) sendEnvelope(ctx context.Context, e envelope) error {
	b, err := encodeEnvelope(e)
	if err != nil {
		return err
	}
	if err := r.rdb.Publish(ctx, r.ctlName, b).Err(); err != nil {
		return unavailable("publish on the control channel", err)
	}
	return nil
}

// newPubSub replaces the pub/sub connection: the new one subscribes to
// everything the instance serves.
func (r *relay) newPubSub() {
	ps := r.rdb.Subscribe(r.run.ctx)
	r.psMu.Lock()
	old := r.ps
	r.ps = ps
	r.psMu.Unlock()
	if old != nil {
		_ = old.Close()
	}
	r.subs.mu.Lock()
	names := []string{r.ctlName, r.probeName}
	for name := range r.subs.sent {
		names = append(names, name)
	}
	clear(r.subs.live)
	r.subs.mu.Unlock()
	ctx, cancel := context.WithTimeout(r.run.ctx, relayTimeout)
	defer cancel()
	// On failure the channels stay registered: go-redis subscribes them
	// when the receive loop reconnects.
	_ = ps.Subscribe(ctx, names...)
}

func (r *relay) currentPS() *redis.PubSub {
	r.psMu.Lock()
	defer r.psMu.Unlock()
	return r.ps
}

// subscribe makes the instance live on ch's relay channel: it returns
// once Redis confirmed the subscription.
func (r *relay) subscribe(ctx context.Context, ch string) error {
	return r.waitLive(ctx, r.name(ch))
}

func (r *relay) waitLive(ctx context.Context, name string) error {
	s := &r.subs
	s.mu.Lock()
	s.want[name] = true
	if s.sent[name] && s.live[name] {
		s.mu.Unlock()
		return nil
	}
	w := make(chan struct{})
	s.waiters[name] = append(s.waiters[name], w)
	s.mu.Unlock()
	r.signalSubs()
	select {
	case <-w:
		return nil
	case <-ctx.Done():
		s.dropWaiter(name, w)
		return unavailable("subscribe relay", ctx.Err())
	case <-r.run.ctx.Done():
		s.dropWaiter(name, w)
		return scaler.ErrClosed
	}
}

func (s *subscriptions) dropWaiter(name string, w chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ws := s.waiters[name]
	for i, x := range ws {
		if x == w {
			s.waiters[name] = append(ws[:i:i], ws[i+1:]...)
			break
		}
	}
	if len(s.waiters[name]) == 0 {
		delete(s.waiters, name)
	}
}

// unsubscribe drops ch's relay channel.
func (r *relay) unsubscribe(ch string) {
	r.subs.mu.Lock()
	delete(r.subs.want, r.name(ch))
	r.subs.mu.Unlock()
	r.signalSubs()
}

func (r *relay) signalSubs() {
	select {
	case r.subs.signal <- struct{}{}:
	default:
	}
}

// confirm records Redis' confirmation of a subscription.
func (s *subscriptions) confirm(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.sent[name] {
		return
	}
	s.live[name] = true
	for _, w := range s.waiters[name] {
		close(w)
	}
	delete(s.waiters, name)
}

// changes marks what is to be subscribed as sent and what is no longer
// wanted as dropped, and returns both.
func (s *subscriptions) changes() (subs, unsubs []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for name := range s.want {
		if !s.sent[name] {
			s.sent[name] = true
			s.live[name] = false
			subs = append(subs, name)
		}
	}
	for name := range s.sent {
		if !s.want[name] {
			delete(s.sent, name)
			delete(s.live, name)
			unsubs = append(unsubs, name)
		}
	}
	return subs, unsubs
}

// subLoop sends batched SUBSCRIBE/UNSUBSCRIBE commands.
func (r *relay) subLoop() {
	for {
		select {
		case <-r.run.ctx.Done():
			return
		case <-r.subs.signal:
		}
		subs, unsubs := r.subs.changes()
		ps := r.currentPS()
		ctx, cancel := context.WithTimeout(r.run.ctx, relayTimeout)
		if len(subs) > 0 {
			_ = ps.Subscribe(ctx, subs...) // retried by go-redis on reconnect
		}
		if len(unsubs) > 0 {
			_ = ps.Unsubscribe(ctx, unsubs...)
		}
		cancel()
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// receiveLoop reads the pub/sub connection. go-redis reconnects and
// resubscribes silently; a receive error tells this loop that it happened,
// and the first message after it makes every served channel be checked
// against the log.
func (r *relay) receiveLoop() {
	disconnected, fails := false, 0
	for r.run.ctx.Err() == nil {
		ps := r.currentPS()
		msg, err := ps.ReceiveTimeout(r.run.ctx, time.Second)
		if err != nil {
			if r.run.ctx.Err() != nil {
				return
			}
			if ps != r.currentPS() || isTimeout(err) && !disconnected {
				continue // replaced after a failed probe, or quiet
			}
			if !disconnected {
				disconnected = true
				r.lost(err)
			}
			fails++
			backoff.Sleep(r.run.ctx, retryWait(fails))
			continue
		}
		fails = 0
		if recheck := r.needCheck.Swap(false); disconnected || recheck {
			disconnected = false
			r.back()
		} else if !r.connected.Load() {
			r.connected.Store(true)
		}
		switch m := msg.(type) {
		case *redis.Subscription:
			if m.Kind == "subscribe" {
				r.subs.confirm(m.Channel)
			}
		case *redis.Message:
			r.dispatch(m.Channel, m.Payload)
		}
	}
}

// lost records that the pub/sub connection failed.
func (r *relay) lost(err error) {
	r.connected.Store(false)
	r.subs.mu.Lock()
	clear(r.subs.live)
	r.subs.mu.Unlock()
	r.out.logger.Warn("sss/mongoredis: relay disconnected", "err", err)
	r.out.event(scaler.EventRelayDisconnected, "", 0, err)
}

// back records that the pub/sub connection works again (or may have
// missed messages): every served channel is checked.
func (r *relay) back() {
	r.connected.Store(true)
	r.out.logger.Info("sss/mongoredis: relay reconnected")
	r.out.event(scaler.EventRelayReconnected, "", 0, nil)
	r.recheck()
}

// dispatch routes one pub/sub message.
func (r *relay) dispatch(name, payload string) {
	switch {
	case name == r.probeName:
		if n, err := strconv.ParseInt(payload, 10, 64); err == nil {
			r.probeSeen.Store(n)
		}
	case name == r.ctlName:
		r.onControl(payload)
	case strings.HasPrefix(name, r.chanPrefix):
		ch := name[len(r.chanPrefix):]
		p, id, err := decodeRelay(ch, []byte(payload))
		if err != nil {
			r.out.logger.Warn("sss/mongoredis: bad relay message", "channel", ch, "err", err)
			return
		}
		if r.faults.take(ch, func(d time.Duration) { r.run.after(d, func() { r.deliver(p, id) }) }) {
			return
		}
		r.deliver(p, id)
	}
}

// onControl handles a message of the control channel.
func (r *relay) onControl(payload string) {
	e, err := decodeEnvelope([]byte(payload))
	if err != nil {
		r.out.logger.Warn("sss/mongoredis: bad control message", "err", err)
		return
	}
	if e.Reset != "" {
		r.moved(e.Reset)
	}
	if f := r.out.handler().Control; e.Ctl != nil && f != nil {
		f(*e.Ctl)
	}
}

// probeLoop sends the instance a probe over the relay every ProbeInterval;
// one that does not come back within ProbeTimeout replaces the pub/sub
// connection (catches a connection stuck open but silent).
func (r *relay) probeLoop() {
	t := time.NewTicker(r.probeEvery)
	defer t.Stop()
	var pending int64
	var pendingAt time.Time
	for {
		if pending != 0 && r.probeSeen.Load() >= pending {
			pending = 0
			r.probeOK.Store(time.Now().UnixNano())
		}
		switch {
		case pending == 0:
			pending = r.probeSent.Add(1)
			pendingAt = time.Now()
			ctx, cancel := context.WithTimeout(r.run.ctx, relayTimeout)
			_ = r.rdb.Publish(ctx, r.probeName, strconv.FormatInt(pending, 10)).Err()
			cancel()
		case time.Since(pendingAt) > r.probeTimeout:
			pending = 0
			r.probeFailed()
		}
		if !r.run.tick(t.C) {
			return
		}
	}
}

// probeFailed reports a probe that did not come back and replaces the
// pub/sub connection.
func (r *relay) probeFailed() {
	err := fmt.Errorf("sss/mongoredis: relay probe not back after %v", r.probeTimeout)
	r.out.logger.Warn("sss/mongoredis: relay probe failed", "err", err)
	r.out.event(scaler.EventProbeFailed, "", 0, err)
	if r.connected.Load() {
		r.needCheck.Store(true)
		r.newPubSub()
	}
}

// relayFaults are the relay faults tests inject (see fault.go): the next
// relayed publication of a channel dropped, or delayed.
type relayFaults struct {
	mu    sync.Mutex // drop, delay
	drop  map[string]bool
	delay map[string]time.Duration
}

// take applies a fault armed for ch to the publication being relayed: it
// reports whether the publication was taken (dropped, or handed to
// later with its delay).
func (f *relayFaults) take(ch string, later func(time.Duration)) bool {
	f.mu.Lock()
	drop := f.drop[ch]
	d, delay := f.delay[ch]
	delete(f.drop, ch)
	if !drop {
		delete(f.delay, ch)
	}
	f.mu.Unlock()
	switch {
	case drop:
		return true
	case delay:
		later(d)
		return true
	}
	return false
}
