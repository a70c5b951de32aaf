package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"

	"github.com/sss-go/sss/internal/backoff"
	"github.com/sss-go/sss/protocol"
)

// conn is one WebSocket connection, from upgrade to drop.
type conn struct {
	ws           *websocket.Conn
	url          string
	writeTimeout time.Duration
	closeTimeout time.Duration

	wmu sync.Mutex // serialises data frames

	// Guarded by Client.mu.
	nextID int
	asks   map[string]chan *protocol.Message
	subs   map[string]*pendingSub // SUBSCRIBE requests by id

	lost      chan struct{} // closed when the connection has ended
	closeSent atomic.Bool   // a close frame was sent: deadlines are the close's

	// Set by the connection goroutine only.
	booted     bool
	bootReason string
}

type hbConfig struct {
	on    bool
	total time.Duration // hbInterval + hbThreshold
}

func (cn *conn) newID() string {
	cn.nextID++
	return strconv.Itoa(cn.nextID)
}

// write sends one text frame. A failed write closes the connection so the
// reader notices the drop.
func (cn *conn) write(b []byte) error {
	cn.wmu.Lock()
	defer cn.wmu.Unlock()
	return cn.writeLocked(b)
}

func (cn *conn) writeLocked(b []byte) error {
	_ = cn.ws.SetWriteDeadline(time.Now().Add(cn.writeTimeout))
	if err := cn.ws.WriteMessage(websocket.TextMessage, b); err != nil {
		_ = cn.ws.NetConn().Close()
		return err
	}
	return nil
}

// sendClose sends a close frame and gives the server closeTimeout to echo
// it and end the connection.
func (cn *conn) sendClose(code int, reason string) {
	reason = protocol.TruncateReason(reason) // cut on a rune boundary: the frame must stay UTF-8
	cn.closeSent.Store(true)
	now := time.Now()
	if err := cn.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, reason), now.Add(cn.writeTimeout)); err != nil {
		_ = cn.ws.NetConn().Close()
		return
	}
	_ = cn.ws.NetConn().SetReadDeadline(now.Add(cn.closeTimeout))
}

// pendingSub is a SUBSCRIBE waiting for its reply.
type pendingSub struct {
	channel   string
	query     json.RawMessage
	sub       *Subscription
	done      chan struct{}
	err       error
	abandoned bool // the caller gave up; unsubscribe when granted
}

func (p *pendingSub) fail(err error) {
	select {
	case <-p.done:
	default:
		p.err = err
		close(p.done)
	}
}

// closedError carries the close code and reason the server sent before the
// handshake completed.
type closedError struct {
	code   int
	reason string
}

func (e *closedError) Error() string {
	return fmt.Sprintf("sss/client: connection closed by server: %d %s", e.code, e.reason)
}

// backoff returns the full-jitter wait before retry n (from 0).
func (c *Client) backoff(n int) time.Duration {
	return backoff.Policy{Base: c.opts.ReconnectBase, Cap: c.opts.ReconnectCap, Jitter: true}.Wait(n)
}

// sleep waits d, or until ctx ends or Close is called.
func (c *Client) sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-c.closeCh:
		return ErrClosed
	}
}

// start makes Dial's attempts.
func (c *Client) start(ctx context.Context) (*conn, []*protocol.Message, error) {
	limit := 1 + c.opts.ReconnectAttempts
	if c.opts.ReconnectAttempts == 0 {
		limit = 0
	}
	if c.opts.DisableReconnect {
		limit = 1
	}
	var last error
	for n := 0; limit == 0 || n < limit; n++ {
		if n == 0 {
			c.setStatus(StatusStarting)
		} else {
			c.setStatus(StatusRetryInterval)
			if err := c.sleep(ctx, c.backoff(n-1)); err != nil {
				return nil, nil, fmt.Errorf("sss/client: dial: %w", err)
			}
			c.setStatus(StatusStartRetrying)
		}
		cn, pending, err := c.connect(ctx, false)
		if err == nil {
			return cn, pending, nil
		}
		last = err
		var ce *closedError
		switch {
		case errors.Is(err, ErrRefused):
			return nil, nil, fmt.Errorf("sss/client: dial: %w", err)
		case errors.As(err, &ce) && ce.code == protocol.CloseBooted:
			return nil, nil, fmt.Errorf("sss/client: dial: %w: %s", ErrRefused, ce.reason)
		case ctx.Err() != nil:
			return nil, nil, fmt.Errorf("sss/client: dial: %w", ctx.Err())
		}
		c.log.Debug("sss/client: connection attempt failed", "attempt", n, "err", err)
	}
	return nil, nil, fmt.Errorf("sss/client: dial: %w: %w", ErrStartFailed, last)
}

func (c *Client) nextURL() string {
	c.mu.Lock()
	n := c.attempt
	c.attempt++
	c.mu.Unlock()
	if c.opts.SelectURL != nil {
		return c.opts.SelectURL(n)
	}
	return c.urls[n%len(c.urls)]
}

// connect makes one connection attempt: upgrade, then BEGIN (first
// connection) or SYNC (reconnection) and its reply. Frames that arrive
// before the reply are returned, to be handled after it (docs/protocol.md §4
// step 4). On success the reply has been applied.
func (c *Client) connect(ctx context.Context, sync bool) (*conn, []*protocol.Message, error) {
	u := c.nextURL()
	hctx, cancel := context.WithTimeout(ctx, c.opts.HandshakeTimeout)
	defer cancel()
	var header http.Header
	if c.opts.Header != nil {
		header = c.opts.Header.Clone()
	}
	ws, resp, err := c.dialer.DialContext(hctx, u, header)
	if err != nil {
		if resp != nil && (resp.StatusCode == http.StatusForbidden || resp.StatusCode == http.StatusUnauthorized) {
			return nil, nil, fmt.Errorf("%w: HTTP %d from %s", ErrRefused, resp.StatusCode, u)
		}
		return nil, nil, fmt.Errorf("connect %s: %w", u, err)
	}
	ws.SetReadLimit(int64(c.opts.MaxFrameBytes))
	cn := &conn{
		ws:           ws,
		url:          u,
		writeTimeout: c.opts.WriteTimeout,
		closeTimeout: c.opts.CloseTimeout,
		asks:         make(map[string]chan *protocol.Message),
		subs:         make(map[string]*pendingSub),
		lost:         make(chan struct{}),
	}
	c.mu.Lock()
	if c.closing {
		c.mu.Unlock()
		_ = ws.Close()
		return nil, nil, ErrClosed
	}
	c.cur = cn
	var entries []protocol.SyncEntry
	if sync {
		entries = c.syncEntriesLocked()
		c.setStatusLocked(StatusSyncing)
	} else {
		c.setStatusLocked(StatusBeginning)
	}
	c.mu.Unlock()

	fail := func(err error) (*conn, []*protocol.Message, error) {
		_ = ws.Close()
		c.mu.Lock()
		if c.cur == cn {
			c.cur = nil
		}
		if sync {
			for _, ch := range c.channels {
				for _, s := range ch.subs {
					s.setStatusLocked(SubDropped, nil)
				}
			}
		}
		c.mu.Unlock()
		close(cn.lost)
		return nil, nil, err
	}
	stop := context.AfterFunc(hctx, func() { _ = ws.NetConn().Close() })
	defer stop()
	if dl, ok := hctx.Deadline(); ok {
		_ = ws.NetConn().SetReadDeadline(dl)
	}
	req := protocol.AppendBegin(nil)
	if sync {
		req = protocol.AppendSync(nil, nil, entries)
	}
	if err := cn.write(req); err != nil {
		return fail(fmt.Errorf("send BEGIN or SYNC to %s: %w", u, err))
	}
	var pending []*protocol.Message
	for {
		typ, data, err := ws.ReadMessage()
		if err != nil {
			var ce *websocket.CloseError
			if errors.As(err, &ce) {
				return fail(&closedError{code: ce.Code, reason: ce.Text})
			}
			if hctx.Err() != nil && ctx.Err() == nil {
				err = fmt.Errorf("handshake timeout: %w", err)
			}
			return fail(fmt.Errorf("handshake with %s: %w", u, err))
		}
		if typ != websocket.TextMessage {
			continue
		}
		if string(data) == protocol.Heartbeat {
			if err := cn.write(data); err != nil {
				return fail(err)
			}
			continue
		}
		m, err := protocol.DecodeServer(data, c.limits)
		if err != nil || m == nil {
			c.log.Warn("sss/client: undecodable frame from server", "err", err)
			continue
		}
		if !sync && m.Sys == protocol.SysBegin {
			if !stop() {
				return fail(fmt.Errorf("handshake with %s: %w", u, context.Cause(hctx)))
			}
			_ = ws.NetConn().SetReadDeadline(time.Time{})
			c.applyBegin(m)
			c.setStatus(StatusReady)
			return cn, pending, nil
		}
		if sync && m.Sys == protocol.SysSync {
			if !stop() {
				return fail(fmt.Errorf("handshake with %s: %w", u, context.Cause(hctx)))
			}
			_ = ws.NetConn().SetReadDeadline(time.Time{})
			c.applySync(cn, entries, m)
			c.setStatus(StatusReady)
			return cn, pending, nil
		}
		pending = append(pending, m)
	}
}

// run is the connection goroutine: it reads the connection, and when it
// drops decides whether and how to reconnect.
func (c *Client) run(cn *conn, pending []*protocol.Message) {
	defer close(c.runDone)
	defer c.cancel()
	for {
		code, reason := c.serve(cn, pending)
		c.mu.Lock()
		closing := c.closing
		c.mu.Unlock()
		switch {
		case closing:
			c.finish(StatusClosed, ErrClosed, "")
			return
		case cn.booted || code == protocol.CloseBooted:
			if reason == "" {
				reason = cn.bootReason
			}
			c.finish(StatusBooted, fmt.Errorf("%w: %s", ErrBooted, reason), reason)
			return
		case code == protocol.CloseByClient:
			c.finish(StatusClosed, ErrClosed, "")
			return
		case c.opts.DisableReconnect:
			c.finish(StatusReconnectFailed, ErrReconnectFailed, "")
			return
		}
		c.log.Info("sss/client: connection lost, reconnecting", "code", code, "reason", reason)
		var err error
		var bootReason string
		cn, pending, bootReason, err = c.reconnect()
		switch {
		case err == nil:
			c.stats.reconnects.Add(1)
		case errors.Is(err, ErrBooted):
			c.finish(StatusBooted, err, bootReason)
			return
		case errors.Is(err, ErrClosed):
			c.finish(StatusClosed, ErrClosed, "")
			return
		default:
			c.finish(StatusReconnectFailed, err, "")
			return
		}
	}
}

// reconnect makes the reconnection attempts after a drop.
func (c *Client) reconnect() (*conn, []*protocol.Message, string, error) {
	c.mu.Lock()
	c.setStatusLocked(StatusDroppedRetrying)
	for _, ch := range c.channels {
		for _, sub := range ch.subs {
			sub.setStatusLocked(SubDropped, nil)
		}
	}
	c.mu.Unlock()
	limit := c.opts.ReconnectAttempts
	var last error
	for n := 0; limit == 0 || n < limit; n++ {
		if n > 0 {
			c.setStatus(StatusRetryInterval)
		}
		if err := c.sleep(c.ctx, c.backoff(n)); err != nil {
			return nil, nil, "", ErrClosed
		}
		if n > 0 {
			c.setStatus(StatusDroppedRetrying)
		}
		cn, pending, err := c.connect(c.ctx, true)
		if err == nil {
			return cn, pending, "", nil
		}
		last = err
		c.mu.Lock()
		closing := c.closing
		c.mu.Unlock()
		var ce *closedError
		switch {
		case closing || c.ctx.Err() != nil:
			return nil, nil, "", ErrClosed
		case errors.As(err, &ce) && ce.code == protocol.CloseBooted:
			return nil, nil, ce.reason, fmt.Errorf("%w: %s", ErrBooted, ce.reason)
		case errors.As(err, &ce) && ce.code == protocol.CloseByClient:
			return nil, nil, "", ErrClosed
		case errors.Is(err, ErrRefused):
			return nil, nil, "", fmt.Errorf("%w: %w", ErrReconnectFailed, err)
		}
		c.log.Debug("sss/client: reconnection attempt failed", "attempt", n, "err", err)
	}
	return nil, nil, "", fmt.Errorf("%w: %w", ErrReconnectFailed, last)
}

// serve reads cn until it ends and returns the close code and reason the
// server sent (1006 when the connection ended without a close frame).
func (c *Client) serve(cn *conn, pending []*protocol.Message) (int, string) {
	ws := cn.ws
	stop := context.AfterFunc(c.ctx, func() { _ = ws.NetConn().Close() })
	defer stop()
	c.mu.Lock()
	hb := c.hb
	c.mu.Unlock()
	armHB := func() {
		if hb.on && !cn.closeSent.Load() {
			_ = ws.NetConn().SetReadDeadline(time.Now().Add(hb.total))
		}
	}
	armHB()
	for _, m := range pending {
		c.handle(cn, m)
	}
	code, reason := websocket.CloseAbnormalClosure, ""
read:
	for {
		typ, data, err := ws.ReadMessage()
		if err != nil {
			var ce *websocket.CloseError
			var ne net.Error
			switch {
			case errors.As(err, &ce):
				code, reason = ce.Code, ce.Text
			case errors.As(err, &ne) && ne.Timeout() && hb.on && !cn.closeSent.Load():
				// docs/protocol.md §8: no h for interval + threshold.
				c.log.Warn("sss/client: heartbeat lost", "url", cn.url)
				cn.sendClose(protocol.CloseHeartbeatLost, "The socket did not receive a heartbeat")
				code, reason = protocol.CloseHeartbeatLost, "heartbeat lost"
			default:
				c.log.Debug("sss/client: connection ended", "err", err)
			}
			break read
		}
		if typ != websocket.TextMessage {
			continue
		}
		if string(data) == protocol.Heartbeat {
			armHB()
			if err := cn.write(data); err != nil {
				c.log.Debug("sss/client: heartbeat reply failed", "err", err)
			}
			continue
		}
		if cn.closeSent.Load() {
			continue // closing: nothing more is delivered
		}
		m, err := protocol.DecodeServer(data, c.limits)
		if err != nil || m == nil {
			c.log.Warn("sss/client: undecodable frame from server", "err", err)
			continue
		}
		c.handle(cn, m)
	}
	_ = ws.Close()
	c.dropped(cn)
	return code, reason
}

// dropped fails what waited on cn.
func (c *Client) dropped(cn *conn) {
	c.mu.Lock()
	if c.cur == cn {
		c.cur = nil
	}
	for id := range cn.asks {
		delete(cn.asks, id)
	}
	for id, p := range cn.subs {
		delete(cn.subs, id)
		if c.subWait[p.channel] == p {
			delete(c.subWait, p.channel)
		}
		p.fail(fmt.Errorf("sss/client: subscribe %q: %w", p.channel, ErrConnectionLost))
	}
	c.mu.Unlock()
	close(cn.lost)
}

// handle dispatches one decoded frame from the server.
func (c *Client) handle(cn *conn, m *protocol.Message) {
	switch m.Sys {
	case protocol.SysFeed:
		c.applyFeed(m, false)
	case protocol.SysUpdateSub:
		c.mu.Lock()
		if ch := c.channels[m.Channel]; ch != nil {
			ch.accept(m.UID)
		}
		c.mu.Unlock()
	case protocol.SysSubscribe:
		c.subscribeReply(cn, m)
	case protocol.SysResponse:
		c.mu.Lock()
		ch := cn.asks[string(m.ID)]
		delete(cn.asks, string(m.ID))
		c.mu.Unlock()
		if ch != nil {
			ch <- m
		} else {
			c.log.Debug("sss/client: response to no pending ask", "id", string(m.ID))
		}
	case protocol.SysTell:
		if m.Topic == protocol.PresenceTopic {
			c.presence(m)
			return
		}
		c.mu.Lock()
		_, ok := c.tells[m.Topic]
		c.mu.Unlock()
		if !ok {
			c.log.Debug("sss/client: tell on a topic with no handler", "topic", m.Topic)
			return
		}
		msg := m.Msg
		topic := m.Topic
		c.disp.push(func() {
			c.mu.Lock()
			fn := c.tells[topic]
			c.mu.Unlock()
			if fn != nil {
				fn(msg)
			}
		})
	case protocol.SysBroadcast:
		msg := m.Msg
		topic := m.Topic
		c.disp.push(func() {
			c.mu.Lock()
			fn := c.broadcasts[topic]
			c.mu.Unlock()
			if fn != nil {
				fn(msg)
			}
		})
	case protocol.SysBoot:
		// docs/protocol.md §9: answer BOOT with close 4001
		// and the BOOT's reason; the server echoes it.
		cn.booted = true
		cn.bootReason = m.Reason
		cn.sendClose(protocol.CloseBooted, m.Reason)
	case 0:
		if m.Err != nil {
			if name, ok := bootedChannel(m.Err); ok {
				c.channelBooted(name, m.Err)
			}
			err := serverError("server", "", m.Err, nil)
			c.disp.push(func() {
				c.mu.Lock()
				fn := c.onError
				c.mu.Unlock()
				if fn != nil {
					fn(err)
				}
			})
		}
	default:
		c.log.Debug("sss/client: frame ignored", "sys", int(m.Sys))
	}
}

// bootedChannel returns the channel named by a channel_booted error
// frame (server.BootChannel; the wire has no unsubscribe notice).
func bootedChannel(e *protocol.Error) (string, bool) {
	if e.Code != protocol.CodeChannelBooted || e.Channel == "" {
		return "", false
	}
	return e.Channel, true
}

// channelBooted ends every subscription to a channel the server removed
// the client from; the channel is left out of later SYNCs.
func (c *Client) channelBooted(name string, perr *protocol.Error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	ch := c.channels[name]
	if ch == nil {
		return
	}
	err := serverError("server", name, perr, ErrChannelBooted)
	for _, s := range ch.subs {
		s.setStatusLocked(SubUnsubscribed, err)
	}
	ch.subs = nil
	delete(c.channels, name)
	if ch.user {
		c.userSub = nil
	}
}

func (c *Client) presence(m *protocol.Message) {
	var e PresenceEvent
	if err := json.Unmarshal(m.Msg, &e); err != nil {
		c.log.Warn("sss/client: bad presence event", "err", err)
		return
	}
	c.disp.push(func() {
		c.mu.Lock()
		fn := c.onPresence
		c.mu.Unlock()
		if fn != nil {
			fn(e)
		}
	})
}

// applyBegin takes the BEGIN reply: heartbeat settings and the user
// channel.
func (c *Client) applyBegin(m *protocol.Message) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if p := m.Prot; p != nil && p.HB && p.HBInterval > 0 {
		th := p.HBThreshold
		if th <= 0 {
			th = 1000 // docs/protocol.md §8: threshold 1000 ms when absent
		}
		c.hb = hbConfig{on: true, total: time.Duration(p.HBInterval+th) * time.Millisecond}
	} else {
		c.hb = hbConfig{}
	}
	if m.Channel == "" {
		return
	}
	ch := c.channels[m.Channel]
	if ch == nil {
		c.ord++
		ch = &channel{name: m.Channel, user: true, ord: c.ord}
		c.channels[m.Channel] = ch
	}
	ch.lastUID, ch.hasUID = m.LastUID, m.LastUID != ""
	ch.parse()
	if c.userSub == nil {
		c.userSub = newSubscription(c, ch)
		ch.subs = append(ch.subs, c.userSub)
	}
}
