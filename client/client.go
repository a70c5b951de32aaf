package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"

	"github.com/sss-go/sss/protocol"
)

// Client is a connection to an sss (or SSS) server that reconnects and
// recovers its subscriptions by itself. Create it with Dial. All methods
// are safe for concurrent use.
type Client struct {
	opts   Options
	log    *slog.Logger
	urls   []string
	dialer *websocket.Dialer
	disp   *dispatcher
	limits protocol.Limits

	// ctx is cancelled to stop everything at once (Close after its grace).
	ctx     context.Context
	cancel  context.CancelFunc
	closeCh chan struct{} // closed when Close is called
	runDone chan struct{} // closed when the connection goroutine ends

	mu       sync.Mutex
	status   Status
	ready    chan struct{} // closed while status is StatusReady
	finalCh  chan struct{} // closed when a final status is reached
	finalErr error
	closing  bool
	cur      *conn // current connection, from upgrade to drop
	attempt  int   // connection attempts so far (URL selection)
	hb       hbConfig
	channels map[string]*channel
	ord      uint64 // order of first subscription, for SYNC entries
	subWait  map[string]*pendingSub
	userSub  *Subscription

	tells      map[string]func(msg json.RawMessage)
	broadcasts map[string]func(msg json.RawMessage)
	onPresence func(PresenceEvent)
	onStatus   func(newStatus, oldStatus Status)
	onBoot     func(reason string)
	onError    func(err error)

	stats struct {
		reconnects, recovered, duplicates, notRecoverable, refused, feeds atomic.Uint64
	}
}

// PresenceEvent is a presence change on a channel whose presence events are
// turned on by the server (docs/protocol.md, "5.8 Presence events": TELLs on
// topic "_presence"). It is the protocol's definition of that message.
type PresenceEvent = protocol.PresenceEvent

// PresenceMember is the subject of a PresenceEvent: User is empty for
// anonymous sockets, Info the small JSON object the server attached.
type PresenceMember = protocol.PresenceMember

// Stats is a snapshot of a client's counters.
type Stats struct {
	// Reconnects counts reconnections that completed (SYNC answered).
	Reconnects uint64
	// Recovered counts publications received in SYNC replies and
	// delivered (missed while disconnected).
	Recovered uint64
	// Duplicates counts FEEDs dropped because their uid was at or before
	// the channel's last applied uid.
	Duplicates uint64
	// NotRecoverable counts channels that came back "not recoverable".
	NotRecoverable uint64
	// Refused counts channels the server refused when re-synchronising.
	Refused uint64
	// Feeds counts live publications delivered (not counting Recovered).
	Feeds uint64
}

// Dial connects to the server at rawURL (and, failing that, at the other
// Options.URLs in turn), sends BEGIN and returns once the server answered
// it. ctx bounds Dial only, not the client's life. rawURL may be empty when
// Options.URLs or Options.SelectURL supply the URLs.
//
// A refusal by the server's session parser (HTTP 401/403, or close 4001)
// fails at once with an error wrapping ErrRefused; other failures are
// retried with backoff (Options.ReconnectAttempts) and end in an error
// wrapping ErrStartFailed, or ctx's error.
func Dial(ctx context.Context, rawURL string, opts Options) (*Client, error) {
	opts = opts.withDefaults()
	var urls []string
	if rawURL != "" {
		urls = append(urls, rawURL)
	}
	urls = append(urls, opts.URLs...)
	if len(urls) == 0 && opts.SelectURL == nil {
		return nil, errors.New("sss/client: dial: no URL given")
	}
	for _, u := range urls {
		p, err := url.Parse(u)
		if err != nil {
			return nil, fmt.Errorf("sss/client: dial: %w", err)
		}
		if p.Scheme != "ws" && p.Scheme != "wss" {
			return nil, fmt.Errorf("sss/client: dial %q: scheme must be ws or wss", u)
		}
	}
	cctx, cancel := context.WithCancel(context.Background())
	c := &Client{
		opts:   opts,
		log:    opts.Logger,
		urls:   urls,
		disp:   newDispatcher(opts.Logger),
		limits: protocol.Limits{MaxFrameBytes: opts.MaxFrameBytes, MaxDepth: 64, MaxChannelLen: 1024},
		dialer: &websocket.Dialer{
			Proxy:             opts.Proxy,
			TLSClientConfig:   opts.TLSConfig,
			HandshakeTimeout:  opts.HandshakeTimeout,
			Jar:               opts.Jar,
			EnableCompression: opts.EnableCompression,
		},
		ctx:        cctx,
		cancel:     cancel,
		closeCh:    make(chan struct{}),
		runDone:    make(chan struct{}),
		ready:      make(chan struct{}),
		finalCh:    make(chan struct{}),
		channels:   make(map[string]*channel),
		subWait:    make(map[string]*pendingSub),
		tells:      make(map[string]func(json.RawMessage)),
		broadcasts: make(map[string]func(json.RawMessage)),
	}
	if opts.Setup != nil {
		opts.Setup(c)
	}
	cn, pending, err := c.start(ctx)
	if err != nil {
		c.finish(StatusStartFailed, err, "")
		close(c.runDone)
		cancel()
		return nil, err
	}
	go c.run(cn, pending)
	return c, nil
}

// Status returns the client's current status.
func (c *Client) Status() Status {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.status
}

// Err returns why the client stopped (wrapping ErrClosed, ErrBooted,
// ErrReconnectFailed or ErrStartFailed), or nil while it runs.
func (c *Client) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.finalErr
}

// Done returns a channel closed once the client has stopped for good
// (closed, booted, or reconnection failed) and every callback queued before
// that has run: no goroutine of the client is left then.
func (c *Client) Done() <-chan struct{} { return c.disp.done }

// Stats returns a snapshot of the client's counters.
func (c *Client) Stats() Stats {
	return Stats{
		Reconnects:     c.stats.reconnects.Load(),
		Recovered:      c.stats.recovered.Load(),
		Duplicates:     c.stats.duplicates.Load(),
		NotRecoverable: c.stats.notRecoverable.Load(),
		Refused:        c.stats.refused.Load(),
		Feeds:          c.stats.feeds.Load(),
	}
}

// OnStatusChange sets the function called on every status change, on the
// client's callback goroutine (see the package doc, "Concurrency"); nil
// removes it. It replaces any earlier function.
func (c *Client) OnStatusChange(fn func(newStatus, oldStatus Status)) {
	c.mu.Lock()
	c.onStatus = fn
	c.mu.Unlock()
}

// OnBoot sets the function called when the server boots the client, with
// the server's reason. The client does not reconnect after a boot.
func (c *Client) OnBoot(fn func(reason string)) {
	c.mu.Lock()
	c.onBoot = fn
	c.mu.Unlock()
}

// OnError sets the function called with error frames that answer no
// request (docs/protocol.md §3.2: a frame {"err":{...}}); the error is a
// *ServerError whose Op is "server".
func (c *Client) OnError(fn func(err error)) {
	c.mu.Lock()
	c.onError = fn
	c.mu.Unlock()
}

// OnTell sets the handler of server tells on topic; nil removes it. Tells on
// a topic without a handler are dropped. Presence events are not tells:
// see OnPresence.
func (c *Client) OnTell(topic string, fn func(msg json.RawMessage)) {
	c.mu.Lock()
	if fn == nil {
		delete(c.tells, topic)
	} else {
		c.tells[topic] = fn
	}
	c.mu.Unlock()
}

// OnBroadcast sets the handler of broadcasts on topic; nil removes it.
func (c *Client) OnBroadcast(topic string, fn func(msg json.RawMessage)) {
	c.mu.Lock()
	if fn == nil {
		delete(c.broadcasts, topic)
	} else {
		c.broadcasts[topic] = fn
	}
	c.mu.Unlock()
}

// OnPresence sets the handler of presence events (joins and leaves on
// channels the client is subscribed to, when the server enables them).
func (c *Client) OnPresence(fn func(e PresenceEvent)) {
	c.mu.Lock()
	c.onPresence = fn
	c.mu.Unlock()
}

// UserSubscription returns the subscription to the session's user channel
// that BEGIN granted, or nil when the session has no user (or it was
// unsubscribed).
func (c *Client) UserSubscription() *Subscription {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.userSub
}

// Ask sends msg on topic and waits for the server's response, which it
// decodes into reply (a pointer, as for json.Unmarshal; *json.RawMessage
// keeps the bytes; nil discards the response). msg is encoded with
// encoding/json (json.RawMessage as is; nil as null).
//
// While the client is reconnecting, Ask waits for it to be ready again,
// bounded by ctx. An error object from the server comes back as a
// *ServerError (errors.As also finds the *protocol.Error inside). If the
// connection drops before the response, Ask fails at once with an error
// wrapping ErrConnectionLost; it is not re-sent.
func (c *Client) Ask(ctx context.Context, topic string, msg any, reply any) error {
	raw, err := protocol.MarshalPayload(msg)
	if err != nil {
		return fmt.Errorf("sss/client: ask %q: %w", topic, err)
	}
	ch := make(chan *protocol.Message, 1)
	var cn *conn
	var id string
	for {
		if cn, err = c.waitReady(ctx); err != nil {
			return fmt.Errorf("sss/client: ask %q: %w", topic, err)
		}
		c.mu.Lock()
		if c.cur == cn { // else it dropped meanwhile: nothing was sent, wait again
			id = cn.newID()
			cn.asks[id] = ch
			c.mu.Unlock()
			break
		}
		c.mu.Unlock()
	}
	if err := cn.write(protocol.AppendAsk(nil, json.RawMessage(id), topic, raw)); err != nil {
		c.mu.Lock()
		delete(cn.asks, id)
		c.mu.Unlock()
		return fmt.Errorf("sss/client: ask %q: %w", topic, ErrConnectionLost)
	}
	var m *protocol.Message
	select {
	case m = <-ch:
	case <-cn.lost:
		select {
		case m = <-ch:
		default:
			return fmt.Errorf("sss/client: ask %q: %w", topic, ErrConnectionLost)
		}
	case <-ctx.Done():
		c.mu.Lock()
		delete(cn.asks, id)
		c.mu.Unlock()
		return fmt.Errorf("sss/client: ask %q: %w", topic, ctx.Err())
	}
	if m.Err != nil {
		return serverError("ask", topic, m.Err, nil)
	}
	if reply == nil {
		return nil
	}
	if rm, ok := reply.(*json.RawMessage); ok {
		*rm = append((*rm)[:0], m.Msg...)
		if m.Msg == nil {
			*rm = json.RawMessage("null")
		}
		return nil
	}
	data := m.Msg
	if data == nil {
		data = []byte("null")
	}
	if err := json.Unmarshal(data, reply); err != nil {
		return fmt.Errorf("sss/client: ask %q: %w: %w", topic, ErrBadReply, err)
	}
	return nil
}

// Tell sends msg on topic; the server does not reply. While the client is
// reconnecting, Tell waits for it to be ready again, bounded by ctx. A nil
// error means the frame was written, not that a handler ran.
func (c *Client) Tell(ctx context.Context, topic string, msg any) error {
	raw, err := protocol.MarshalPayload(msg)
	if err != nil {
		return fmt.Errorf("sss/client: tell %q: %w", topic, err)
	}
	for {
		cn, err := c.waitReady(ctx)
		if err != nil {
			return fmt.Errorf("sss/client: tell %q: %w", topic, err)
		}
		select {
		case <-cn.lost:
			continue // dropped meanwhile: nothing was sent, wait again
		default:
		}
		if err := cn.write(protocol.AppendTell(nil, topic, raw)); err != nil {
			return fmt.Errorf("sss/client: tell %q: %w", topic, ErrConnectionLost)
		}
		return nil
	}
}

// waitReady waits until the client is ready and returns its connection, or
// fails when ctx ends or the client stopped for good.
func (c *Client) waitReady(ctx context.Context) (*conn, error) {
	for {
		c.mu.Lock()
		if c.finalErr != nil {
			err := c.finalErr
			c.mu.Unlock()
			return nil, err
		}
		if c.status == StatusReady && c.cur != nil {
			cn := c.cur
			c.mu.Unlock()
			return cn, nil
		}
		ready := c.ready
		c.mu.Unlock()
		select {
		case <-ready:
		case <-c.finalCh:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// setStatusLocked records a status change and queues its callback. c.mu
// must be held.
func (c *Client) setStatusLocked(s Status) {
	old := c.status
	if old == s {
		return
	}
	c.status = s
	if s == StatusReady {
		close(c.ready)
	} else if old == StatusReady {
		c.ready = make(chan struct{})
	}
	if c.log.Enabled(context.Background(), slog.LevelDebug) {
		c.log.Debug("sss/client: status", "status", s.String(), "old", old.String())
	}
	c.disp.push(func() {
		c.mu.Lock()
		fn := c.onStatus
		c.mu.Unlock()
		if fn != nil {
			fn(s, old)
		}
	})
}

func (c *Client) setStatus(s Status) {
	c.mu.Lock()
	c.setStatusLocked(s)
	c.mu.Unlock()
}

// finish moves the client to a final status: every subscription ends, the
// boot callback is queued, and the callback goroutine exits after running
// what is queued.
func (c *Client) finish(s Status, err error, bootReason string) {
	c.mu.Lock()
	if c.finalErr != nil {
		c.mu.Unlock()
		return
	}
	c.finalErr = err
	c.setStatusLocked(s)
	var ss SubStatus
	switch s {
	case StatusBooted:
		ss = SubBooted
	case StatusReconnectFailed, StatusStartFailed:
		ss = SubReconnectFailed
	default:
		ss = SubClosed
	}
	for name, ch := range c.channels {
		for _, sub := range ch.subs {
			sub.setStatusLocked(ss, err)
		}
		delete(c.channels, name)
	}
	for name, p := range c.subWait {
		p.fail(err)
		delete(c.subWait, name)
	}
	close(c.finalCh)
	if s == StatusBooted {
		c.disp.push(func() {
			c.mu.Lock()
			fn := c.onBoot
			c.mu.Unlock()
			if fn != nil {
				fn(bootReason)
			}
		})
	}
	c.mu.Unlock()
	c.disp.close()
}

// Close closes the connection on purpose: it sends close 4000, waits (at
// most Options.CloseTimeout) for the server to echo it and end the
// connection, and stops reconnecting. Requests waiting fail with
// ErrConnectionLost or ErrClosed. Callbacks already queued still run, and
// Close waits for them (at most Options.CloseTimeout more), so no goroutine
// of the client is left when it returns. Close is idempotent and may be
// called from a callback; it then returns without waiting for the callbacks
// (the caller is one), and Done tells when they have run.
func (c *Client) Close() error {
	defer c.waitCallbacks()
	c.mu.Lock()
	if c.closing {
		c.mu.Unlock()
		<-c.runDone
		return nil
	}
	c.closing = true
	close(c.closeCh)
	cn := c.cur
	c.mu.Unlock()
	if cn != nil {
		cn.sendClose(protocol.CloseByClient, "Connection closed by client")
	} else {
		c.cancel()
	}
	t := time.NewTimer(c.opts.CloseTimeout + time.Second)
	defer t.Stop()
	select {
	case <-c.runDone:
	case <-t.C:
		c.cancel()
		<-c.runDone
	}
	return nil
}

// waitCallbacks waits, bounded by Options.CloseTimeout, until the callback
// goroutine has run what was queued and exited; it returns at once when
// called from that goroutine (Close inside a callback).
func (c *Client) waitCallbacks() {
	if c.disp.onDispatcher() {
		return
	}
	t := time.NewTimer(c.opts.CloseTimeout)
	defer t.Stop()
	select {
	case <-c.disp.done:
	case <-t.C:
		c.log.Warn("sss/client: a callback is still running after Close")
	}
}
