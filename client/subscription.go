package client

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/sss-go/sss/protocol"
)

// channel is the client's one server subscription to a channel, shared by
// every local Subscription to it. Guarded by Client.mu.
type channel struct {
	name    string
	user    bool            // the user channel from BEGIN
	query   json.RawMessage // the first subscription's query, sent again in SYNC
	ord     uint64          // SYNC entry order: first subscription first
	lastUID string          // last uid from a reply, FEED or UPDATESUB, as sent
	hasUID  bool
	last    protocol.UID // lastUID parsed, when lastOK
	lastOK  bool
	subs    []*Subscription
}

func (ch *channel) parse() {
	u, err := protocol.ParseUID(ch.lastUID)
	ch.last, ch.lastOK = u, err == nil
}

// accept records uid as the channel's last applied uid, unless it is at or
// before the one it has in the same epoch (a duplicate): then it reports
// false. A uid of another epoch starts a new history and is accepted.
func (ch *channel) accept(uid string) bool {
	u, err := protocol.ParseUID(uid)
	if err == nil && ch.lastOK {
		if cmp, ok := u.Compare(ch.last); ok && cmp <= 0 {
			return false
		}
	}
	if uid == "" {
		return true
	}
	ch.lastUID, ch.hasUID = uid, true
	ch.last, ch.lastOK = u, err == nil
	return true
}

// Subscription is one local subscription to a channel. Several
// Subscriptions to one channel share one server subscription. Methods are
// safe for concurrent use.
type Subscription struct {
	c  *Client
	ch *channel

	// Guarded by Client.mu.
	status   SubStatus
	err      error
	handlers map[string]func(msg json.RawMessage, uid string)
	onStatus func(newStatus, oldStatus SubStatus, err error)
}

func newSubscription(c *Client, ch *channel) *Subscription {
	return &Subscription{c: c, ch: ch, status: SubActive, handlers: make(map[string]func(json.RawMessage, string))}
}

// Channel returns the subscribed channel's name.
func (s *Subscription) Channel() string { return s.ch.name }

// Status returns the subscription's status.
func (s *Subscription) Status() SubStatus {
	s.c.mu.Lock()
	defer s.c.mu.Unlock()
	return s.status
}

// Err returns the error of the last status change (ErrNotRecoverable or
// ErrSubscriptionRefused wrapped in a *ServerError, or why the client
// stopped), or nil.
func (s *Subscription) Err() error {
	s.c.mu.Lock()
	defer s.c.mu.Unlock()
	return s.err
}

// LastUID returns the uid of the last publication of the channel the client
// applied (or the position the server gave), as the server sent it.
func (s *Subscription) LastUID() string {
	s.c.mu.Lock()
	defer s.c.mu.Unlock()
	return s.ch.lastUID
}

// On sets the handler of the channel's publications on topic; nil removes
// it. The topic "" receives every publication whose topic has no handler of
// its own. Handlers run on the client's callback goroutine, in uid order.
func (s *Subscription) On(topic string, fn func(msg json.RawMessage, uid string)) {
	s.c.mu.Lock()
	if fn == nil {
		delete(s.handlers, topic)
	} else {
		s.handlers[topic] = fn
	}
	s.c.mu.Unlock()
}

// OnStatusChange sets the function called when the subscription's status
// changes, with the error that caused it: for SubNotRecoverable one
// wrapping ErrNotRecoverable, for SubRefused one wrapping
// ErrSubscriptionRefused (both *ServerError with the server's error object).
func (s *Subscription) OnStatusChange(fn func(newStatus, oldStatus SubStatus, err error)) {
	s.c.mu.Lock()
	s.onStatus = fn
	s.c.mu.Unlock()
}

// Unsubscribe ends this subscription. When it was the channel's last one,
// the client sends UNSUBSCRIBE (when connected) and leaves the channel out
// of later SYNCs. Idempotent.
func (s *Subscription) Unsubscribe() {
	c := s.c
	c.mu.Lock()
	if s.status.Final() {
		c.mu.Unlock()
		return
	}
	s.setStatusLocked(SubUnsubscribed, nil)
	ch := s.ch
	for i, x := range ch.subs {
		if x == s {
			ch.subs = append(ch.subs[:i:i], ch.subs[i+1:]...)
			break
		}
	}
	if c.userSub == s {
		c.userSub = nil
	}
	if len(ch.subs) > 0 || c.channels[ch.name] != ch {
		c.mu.Unlock()
		return
	}
	delete(c.channels, ch.name)
	cn := c.cur
	if cn == nil || c.status != StatusReady {
		// Not connected, or syncing: the SYNC reply handler unsubscribes
		// channels it finds gone.
		c.mu.Unlock()
		return
	}
	_ = c.writeUnlock(cn, protocol.AppendUnsubscribe(nil, ch.name))
}

// writeUnlock writes b on cn, taking cn's write lock before releasing
// c.mu, so SUBSCRIBE and UNSUBSCRIBE frames reach the wire in the order
// c.mu decided them. c.mu must be held; it is released.
func (c *Client) writeUnlock(cn *conn, b []byte) error {
	cn.wmu.Lock()
	c.mu.Unlock()
	defer cn.wmu.Unlock()
	return cn.writeLocked(b)
}

// setStatusLocked changes the subscription's status and queues its
// callback. Client.mu must be held.
func (s *Subscription) setStatusLocked(st SubStatus, err error) {
	old := s.status
	if old == st && err == nil {
		return
	}
	s.status, s.err = st, err
	c := s.c
	c.disp.push(func() {
		c.mu.Lock()
		fn := s.onStatus
		c.mu.Unlock()
		if fn != nil {
			fn(st, old, err)
		}
	})
}

// Subscribe subscribes to channel with query (any JSON value the server's
// subscription parser reads; nil for none) and returns once the server
// granted it. A second Subscribe to a channel the client holds returns a
// new Subscription sharing the server subscription at once (the query of
// the first stays in force). While the client is reconnecting, Subscribe
// waits for it to be ready again, bounded by ctx.
//
// A refusal comes back as a *ServerError wrapping ErrSubscriptionRefused;
// a drop before the reply as an error wrapping ErrConnectionLost.
func (c *Client) Subscribe(ctx context.Context, name string, query any) (*Subscription, error) {
	if name == "" || protocol.ReservedChannel(name) {
		return nil, fmt.Errorf("sss/client: subscribe %q: %w", name, ErrReservedChannel)
	}
	q, err := protocol.MarshalPayload(query)
	if err != nil {
		return nil, fmt.Errorf("sss/client: subscribe %q: %w", name, err)
	}
	for {
		cn, err := c.waitReady(ctx)
		if err != nil {
			return nil, fmt.Errorf("sss/client: subscribe %q: %w", name, err)
		}
		c.mu.Lock()
		if c.cur != cn || c.status != StatusReady {
			c.mu.Unlock()
			continue
		}
		if ch := c.channels[name]; ch != nil {
			sub := newSubscription(c, ch)
			ch.subs = append(ch.subs, sub)
			c.mu.Unlock()
			return sub, nil
		}
		if p := c.subWait[name]; p != nil {
			c.mu.Unlock()
			select {
			case <-p.done:
				continue
			case <-ctx.Done():
				return nil, fmt.Errorf("sss/client: subscribe %q: %w", name, ctx.Err())
			}
		}
		p := &pendingSub{channel: name, query: q, done: make(chan struct{})}
		id := cn.newID()
		cn.subs[id] = p
		c.subWait[name] = p
		if err := c.writeUnlock(cn, protocol.AppendSubscribe(nil, json.RawMessage(id), name, q)); err != nil {
			c.mu.Lock()
			delete(cn.subs, id)
			if c.subWait[name] == p {
				delete(c.subWait, name)
			}
			p.fail(ErrConnectionLost)
			c.mu.Unlock()
			return nil, fmt.Errorf("sss/client: subscribe %q: %w", name, ErrConnectionLost)
		}
		select {
		case <-p.done:
		case <-ctx.Done():
			c.mu.Lock()
			select {
			case <-p.done:
				c.mu.Unlock()
			default:
				p.abandoned = true
				c.mu.Unlock()
				return nil, fmt.Errorf("sss/client: subscribe %q: %w", name, ctx.Err())
			}
		}
		if p.err != nil {
			return nil, p.err
		}
		return p.sub, nil
	}
}

// subscribeReply takes a SUBSCRIBE reply (connection goroutine).
func (c *Client) subscribeReply(cn *conn, m *protocol.Message) {
	c.mu.Lock()
	id := string(m.ID)
	p := cn.subs[id]
	if p == nil {
		c.mu.Unlock()
		c.log.Debug("sss/client: subscribe reply to no pending request", "id", id)
		return
	}
	delete(cn.subs, id)
	if c.subWait[p.channel] == p {
		delete(c.subWait, p.channel)
	}
	if !m.Result {
		p.fail(serverError("subscribe", p.channel, m.Err, ErrSubscriptionRefused))
		c.mu.Unlock()
		return
	}
	if ch := c.channels[p.channel]; ch != nil {
		// Held already (not expected: one SUBSCRIBE per channel is in
		// flight and only while no subscription exists): share it.
		p.sub = newSubscription(c, ch)
		if !p.abandoned {
			ch.subs = append(ch.subs, p.sub)
		}
		close(p.done)
		c.mu.Unlock()
		return
	}
	if p.abandoned {
		// The caller gave up: undo the server subscription.
		p.fail(context.Canceled)
		if c.cur == cn {
			_ = c.writeUnlock(cn, protocol.AppendUnsubscribe(nil, p.channel))
			return
		}
		c.mu.Unlock()
		return
	}
	c.ord++
	ch := &channel{name: p.channel, query: p.query, ord: c.ord, lastUID: m.LastUID, hasUID: m.LastUID != ""}
	ch.parse()
	p.sub = newSubscription(c, ch)
	ch.subs = []*Subscription{p.sub}
	c.channels[p.channel] = ch
	close(p.done)
	c.mu.Unlock()
}

// applyFeed delivers a FEED (live, or a record of a SYNC reply) to the
// channel's subscriptions, unless it is a duplicate.
func (c *Client) applyFeed(m *protocol.Message, recovered bool) {
	c.mu.Lock()
	ch := c.channels[m.Channel]
	if ch == nil {
		c.mu.Unlock()
		c.log.Debug("sss/client: publication for a channel not held", "channel", m.Channel)
		return
	}
	if !ch.accept(m.UID) {
		c.mu.Unlock()
		c.stats.duplicates.Add(1)
		return
	}
	subs := append([]*Subscription(nil), ch.subs...)
	c.mu.Unlock()
	if recovered {
		c.stats.recovered.Add(1)
	} else {
		c.stats.feeds.Add(1)
	}
	if len(subs) == 0 {
		return
	}
	topic, msg, uid := m.Topic, m.Msg, m.UID
	c.disp.push(func() {
		for _, s := range subs {
			c.mu.Lock()
			fn := s.handlers[topic]
			if fn == nil {
				fn = s.handlers[""]
			}
			if s.status.Final() {
				fn = nil
			}
			c.mu.Unlock()
			if fn != nil {
				fn(msg, uid)
			}
		}
	})
}

// syncEntriesLocked lists the channels to recover: the user channel first
// (query null), then the others in first-subscription order. Their
// subscriptions become SubSyncing. c.mu must be held.
func (c *Client) syncEntriesLocked() []protocol.SyncEntry {
	chans := make([]*channel, 0, len(c.channels))
	for _, ch := range c.channels {
		chans = append(chans, ch)
	}
	// Insertion sort: few channels, and it keeps the file free of sort
	// helpers for one call.
	for i := 1; i < len(chans); i++ {
		for j := i; j > 0 && less(chans[j], chans[j-1]); j-- {
			chans[j], chans[j-1] = chans[j-1], chans[j]
		}
	}
	entries := make([]protocol.SyncEntry, 0, len(chans))
	for _, ch := range chans {
		entries = append(entries, protocol.SyncEntry{Channel: ch.name, LastUID: ch.lastUID, HasUID: ch.hasUID, Query: ch.query})
		for _, s := range ch.subs {
			s.setStatusLocked(SubSyncing, nil)
		}
	}
	return entries
}

func less(a, b *channel) bool {
	if a.user != b.user {
		return a.user
	}
	return a.ord < b.ord
}

// applySync takes the SYNC reply (docs/protocol.md §7): the records
// first, in order, then each channel's outcome: active, not recoverable
// (still live), or refused (gone).
func (c *Client) applySync(cn *conn, entries []protocol.SyncEntry, m *protocol.Message) {
	errs := func(name string) *protocol.Error {
		if e := m.SyncErrors[name]; e != nil {
			return e
		}
		return &protocol.Error{Name: "Error", Message: "no result for this channel", Code: protocol.CodeInternal}
	}
	for i := range m.Records {
		r := &m.Records[i]
		if r.Channel == "" {
			continue
		}
		c.applyFeed(r, true)
	}
	c.mu.Lock()
	var gone []string
	for _, e := range entries {
		ok, listed := m.SyncResult[e.Channel]
		var perr *protocol.Error
		if !ok {
			perr = errs(e.Channel)
		}
		notRecoverable := !ok && listed && perr.Code == protocol.CodeNotRecoverable
		ch := c.channels[e.Channel]
		if ch == nil {
			// Unsubscribed while syncing: the server holds it again.
			if ok || notRecoverable {
				gone = append(gone, e.Channel)
			}
			continue
		}
		switch {
		case ok:
			for _, s := range ch.subs {
				s.setStatusLocked(SubActive, nil)
			}
		case notRecoverable:
			c.stats.notRecoverable.Add(1)
			err := serverError("sync", e.Channel, perr, ErrNotRecoverable)
			for _, s := range ch.subs {
				s.setStatusLocked(SubNotRecoverable, err)
			}
		default:
			c.stats.refused.Add(1)
			err := serverError("sync", e.Channel, perr, ErrSubscriptionRefused)
			for _, s := range ch.subs {
				s.setStatusLocked(SubRefused, err)
			}
			delete(c.channels, e.Channel)
			if ch.user {
				c.userSub = nil
			}
		}
	}
	c.mu.Unlock()
	for _, name := range gone {
		if err := cn.write(protocol.AppendUnsubscribe(nil, name)); err != nil {
			return
		}
	}
}
