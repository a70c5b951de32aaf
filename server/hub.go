package server

import (
	"context"
	"errors"
	"hash/maphash"
	"sync"

	"github.com/sss-go/sss/protocol"
	"github.com/sss-go/sss/scaler"
)

// The hub: which local sockets are subscribed to which channel.
//
// 64 shards keyed by channel hash, each a map under an RWMutex, looked up
// under a read lock. Each channel has its own mutex that serialises its
// deliveries, joins and leaves, and a copy-on-write subscriber slice
// (replaced on every change, never modified), so a fan-out walks a stable
// slice and takes no hub lock per socket. Joining under the channel's lock
// reads the last delivered uid atomically with entering the subscriber
// list: the joiner gets exactly the publications after it.

const numShards = 64

// errChannelFull: the channel has Options.MaxSubscribers sockets here.
var errChannelFull = errors.New("sss/server: channel full")

type chanState uint8

const (
	chanSubscribing chanState = iota // scaler Subscribe in progress
	chanLive
	chanLeaving // scaler Unsubscribe in progress
	chanDead
)

type hub struct {
	srv    *Server
	seed   maphash.Seed
	shards [numShards]hubShard
}

type hubShard struct {
	mu sync.RWMutex
	m  map[string]*hubChannel
}

type hubChannel struct {
	name    string
	mu      sync.Mutex
	state   chanState
	settled chan struct{} // closed when a transient state ends
	subs    []*Socket     // copy-on-write
	last    protocol.UID  // last delivered (or position at subscribe)
	pending []scaler.Publication
	win     window
	slab    frameSlab
}

func newHub(srv *Server) *hub {
	h := &hub{srv: srv, seed: maphash.MakeSeed()}
	for i := range h.shards {
		h.shards[i].m = make(map[string]*hubChannel)
	}
	return h
}

func (h *hub) shard(name string) *hubShard {
	return &h.shards[maphash.String(h.seed, name)%numShards]
}

func (h *hub) lookup(name string) *hubChannel {
	sh := h.shard(name)
	sh.mu.RLock()
	ch := sh.m[name]
	sh.mu.RUnlock()
	return ch
}

// join subscribes s to channel (scaler.Subscribe for the first local
// subscriber) and calls fn under the channel's lock with the position the
// socket is live from, and s.mu held, so what fn queues precedes every
// FEED of the channel to s. max bounds the channel's local subscribers (0 =
// none). It reports whether the channel was created here.
func (h *hub) join(ctx context.Context, s *Socket, name string, max int, fn func(ch *hubChannel, pos protocol.UID)) (occupied bool, err error) {
	for {
		sh := h.shard(name)
		sh.mu.Lock()
		ch := sh.m[name]
		if ch == nil {
			ch = &hubChannel{name: name, state: chanSubscribing, settled: make(chan struct{})}
			ch.win.init(h.srv.opts.RecoveryWindow)
			sh.m[name] = ch
			sh.mu.Unlock()
			return true, h.create(ctx, ch, s, fn)
		}
		sh.mu.Unlock()
		ch.mu.Lock()
		if ch.state != chanLive {
			wait := ch.settled
			ch.mu.Unlock()
			if wait != nil {
				select {
				case <-wait:
				case <-ctx.Done():
					return false, ctx.Err()
				}
			}
			continue
		}
		found := false
		for _, x := range ch.subs {
			if x == s {
				found = true
				break
			}
		}
		if !found {
			if max > 0 && len(ch.subs) >= max {
				ch.mu.Unlock()
				return false, errChannelFull
			}
			subs := make([]*Socket, len(ch.subs), len(ch.subs)+1)
			copy(subs, ch.subs)
			ch.subs = append(subs, s)
		}
		s.mu.Lock()
		fn(ch, ch.last)
		s.mu.Unlock()
		ch.mu.Unlock()
		return false, nil
	}
}

// create runs the scaler subscription of a new channel entry.
func (h *hub) create(ctx context.Context, ch *hubChannel, s *Socket, fn func(*hubChannel, protocol.UID)) error {
	pos, err := h.srv.sc.Subscribe(ctx, ch.name)
	if err != nil {
		h.drop(ch)
		return err
	}
	ch.mu.Lock()
	ch.last = pos
	ch.state = chanLive
	var counts []int
	for _, p := range ch.pending {
		if n, ok := h.deliverLocked(ch, p); ok {
			counts = append(counts, n)
		}
	}
	ch.pending = nil
	ch.subs = []*Socket{s}
	s.mu.Lock()
	fn(ch, ch.last)
	s.mu.Unlock()
	close(ch.settled)
	ch.settled = nil
	ch.mu.Unlock()
	for _, n := range counts {
		h.delivered(ch.name, n)
	}
	return nil
}

// leave removes s from channel; the last local subscriber gone, the
// instance unsubscribes from the scaler. It reports whether the channel was
// vacated.
func (h *hub) leave(ctx context.Context, s *Socket, name string) bool {
	ch := h.lookup(name)
	if ch == nil {
		return false
	}
	ch.mu.Lock()
	idx := -1
	for i, x := range ch.subs {
		if x == s {
			idx = i
			break
		}
	}
	if idx < 0 || ch.state != chanLive {
		ch.mu.Unlock()
		return false
	}
	if len(ch.subs) > 1 {
		subs := make([]*Socket, 0, len(ch.subs)-1)
		subs = append(subs, ch.subs[:idx]...)
		ch.subs = append(subs, ch.subs[idx+1:]...)
		ch.mu.Unlock()
		return false
	}
	ch.subs = nil
	ch.state = chanLeaving
	ch.settled = make(chan struct{})
	ch.mu.Unlock()

	if err := h.srv.sc.Unsubscribe(ctx, name); err != nil {
		h.srv.log.Warn("sss: scaler unsubscribe failed", "channel", name, "err", err)
	}
	h.drop(ch)
	return true
}

// drop ends a channel entry whose scaler subscription failed or ended:
// it leaves the shard, and those waiting for it to settle go on.
func (h *hub) drop(ch *hubChannel) {
	sh := h.shard(ch.name)
	sh.mu.Lock()
	if sh.m[ch.name] == ch {
		delete(sh.m, ch.name)
	}
	sh.mu.Unlock()
	ch.mu.Lock()
	ch.state = chanDead
	close(ch.settled)
	ch.settled = nil
	ch.pending = nil
	ch.win = window{}
	ch.mu.Unlock()
}

// publication is the scaler's delivery callback.
func (h *hub) publication(p scaler.Publication) {
	ch := h.lookup(p.Channel)
	if ch == nil {
		return
	}
	ch.mu.Lock()
	n, delivered := 0, false
	switch ch.state {
	case chanSubscribing:
		ch.pending = append(ch.pending, p)
	case chanLive:
		n, delivered = h.deliverLocked(ch, p)
	}
	ch.mu.Unlock()
	if delivered {
		h.delivered(p.Channel, n)
	}
}

// delivered reports a fan-out (no lock held).
func (h *hub) delivered(channel string, n int) {
	if h.srv.opts.OnEvent != nil {
		h.srv.emit(Event{Kind: EventDelivery, Channel: channel, Count: n})
	}
}

// deliverLocked encodes p once and hands it to every subscriber; it
// returns to how many, and false when p was not delivered. The caller
// reports the delivery after releasing the channel's lock.
func (h *hub) deliverLocked(ch *hubChannel, p scaler.Publication) (int, bool) {
	if p.UID.Epoch == ch.last.Epoch && p.UID.Seq <= ch.last.Seq {
		return 0, false // at or before the position: never delivered
	}
	if p.UID.Epoch != ch.last.Epoch {
		ch.win.reset()
	}
	pf := ch.slab.frame(p)
	ch.last = p.UID
	ch.win.push(pf)
	subs := ch.subs
	for _, s := range subs {
		s.deliver(pf)
	}
	h.srv.stats.delivered.Add(uint64(len(subs)))
	return len(subs), true
}

// reset handles a stream that could not continue without a hole: every
// local subscriber must recover, so each is closed with 1012 and will be
// told "not recoverable" by its SYNC.
func (h *hub) reset(channel string, pos protocol.UID) {
	ch := h.lookup(channel)
	if ch == nil {
		return
	}
	ch.mu.Lock()
	ch.last = pos
	ch.win.reset()
	subs := ch.subs
	ch.mu.Unlock()
	for _, s := range subs {
		s.Close(protocol.CloseServiceRestart, "channel stream reset")
	}
}

// subscribers returns the local subscribers of channel.
func (h *hub) subscribers(channel string) []*Socket {
	ch := h.lookup(channel)
	if ch == nil {
		return nil
	}
	ch.mu.Lock()
	subs := ch.subs
	ch.mu.Unlock()
	return subs
}

// channels returns the channels with at least one local subscriber.
func (h *hub) channels() []string {
	var out []string
	h.eachLive(func(name string, _ int) { out = append(out, name) })
	return out
}

// counts returns the number of live channels and of subscriptions.
func (h *hub) counts() (channels, subs int) {
	h.eachLive(func(_ string, n int) {
		channels++
		subs += n
	})
	return channels, subs
}

// eachLive calls fn with the name and the number of local subscribers of
// every live channel that has some, under the shard's and the channel's
// locks: fn must only count.
func (h *hub) eachLive(fn func(name string, subs int)) {
	for i := range h.shards {
		sh := &h.shards[i]
		sh.mu.RLock()
		for name, ch := range sh.m {
			ch.mu.Lock()
			if ch.state == chanLive && len(ch.subs) > 0 {
				fn(name, len(ch.subs))
			}
			ch.mu.Unlock()
		}
		sh.mu.RUnlock()
	}
}
