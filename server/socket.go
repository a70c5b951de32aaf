package server

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"github.com/sss-go/sss/protocol"
)

// Socket is one client connection. Its methods are safe for concurrent use.
type Socket struct {
	srv       *Server
	id        string
	user      string
	sessionID string
	values    map[string]any
	info      json.RawMessage
	req       *http.Request
	ws        *websocket.Conn
	nc        net.Conn
	compress  bool
	// ctx is the handlers' context, cancelled when the socket is gone;
	// bctx, its child, bounds the backend calls made for the socket and
	// is cancelled as soon as the socket closes (either side) or its
	// connection breaks.
	ctx     context.Context
	cancel  context.CancelFunc
	bctx    context.Context
	bcancel context.CancelFunc

	hbOutstanding atomic.Bool  // an "h" was sent and not answered
	readWait      atomic.Bool  // the reader waits for room in the inbox
	hbGrace       atomic.Bool  // the reader waited since the last heartbeat
	slow          atomic.Int32 // >0 while holds or exclusions exist
	begun         atomic.Bool

	closeOnce sync.Once
	connGone  chan struct{} // closed once the TCP connection is closed

	mu          sync.Mutex
	q           []outItem
	spare       []outItem
	qBytes      int
	writing     bool
	hbDue       bool
	pong        []byte
	closing     bool // a close frame is queued (or the socket is gone)
	dead        bool // the connection is closed
	connClosed  bool // closeConn ran (possibly before the upgrade finished)
	closeCode   int
	closeReason string
	holds       map[string]*hold
	heldN       int
	excl        map[string][]protocol.UID
	skipTo      map[string]protocol.UID // drop deliveries up to this uid
	subs        map[string]ChannelOptions
	asks        map[string]struct{}
	bootTimer   *time.Timer

	// The inbox: frames read and not yet handled (see reader.go).
	imu      sync.Mutex
	icond    sync.Cond // L is &imu: the inbox changed
	inbox    []inItem
	inBytes  int
	handling bool // a handler goroutine runs

	// handler-goroutine state
	badCount int
	badStart time.Time
	rateN    int
	rateT    time.Time
}

// hold parks a channel's deliveries while a reply of that channel, or a
// publish excluding this socket, is in progress.
type hold struct {
	count   int
	buf     []*pubFrame
	drop    protocol.UID // parked publications up to drop are not queued
	hasDrop bool
}

// ID returns the socket's id (a random uuid), unique across instances.
func (s *Socket) ID() string { return s.id }

// User returns the session's user id, "" when none.
func (s *Socket) User() string { return s.user }

// SessionID returns the session id.
func (s *Socket) SessionID() string { return s.sessionID }

// Value returns a per-socket value set by the session parser.
func (s *Socket) Value(key string) any { return s.values[key] }

// Request returns the upgrade request (headers, cookies, URL). Do not read
// its Body.
func (s *Socket) Request() *http.Request { return s.req }

// Tell sends a TELL frame to this socket. msg is marshalled with
// encoding/json (json.RawMessage verbatim); a msg or topic that is not
// valid UTF-8 is refused with an error wrapping ErrInvalidPayload.
func (s *Socket) Tell(topic string, msg any) error {
	if err := checkText("topic", topic); err != nil {
		return err
	}
	raw, err := marshalMsg(msg)
	if err != nil {
		return err
	}
	if !s.sendText(protocol.AppendTell(nil, topic, raw)) {
		return ErrSocketClosed
	}
	return nil
}

// Subscriptions returns the channels the socket is subscribed to, sorted.
func (s *Socket) Subscriptions() []string {
	s.mu.Lock()
	out := make([]string, 0, len(s.subs))
	for c := range s.subs {
		out = append(out, c)
	}
	s.mu.Unlock()
	sort.Strings(out)
	return out
}

// Close sends a close frame with code and reason after the frames already
// queued, then closes the connection. The reason is made valid UTF-8 and
// cut to 123 bytes on a rune boundary (protocol.TruncateReason).
func (s *Socket) Close(code int, reason string) {
	s.mu.Lock()
	s.closeLocked(code, reason)
	s.mu.Unlock()
}

// subscribed reports whether the socket holds channel.
func (s *Socket) subscribed(channel string) bool {
	s.mu.Lock()
	_, ok := s.subs[channel]
	s.mu.Unlock()
	return ok
}

// closeConn closes the TCP connection once.
func (s *Socket) closeConn() {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		nc := s.nc
		s.connClosed = true // an upgrade still under way closes it at once
		s.mu.Unlock()
		if nc != nil {
			_ = nc.Close()
		}
		close(s.connGone)
	})
}

// deliver hands a publication of a channel the socket is subscribed to.
// Called by the hub under the channel's lock, in uid order.
func (s *Socket) deliver(pf *pubFrame) {
	if s.slow.Load() == 0 {
		s.enqueue(outItem{pf: pf, op: opText})
		return
	}
	s.mu.Lock()
	if h := s.holds[pf.channel]; h != nil {
		if !s.closing {
			if len(s.q)+s.heldN >= s.srv.opts.SendQueueMessages {
				s.overflowLocked()
			} else {
				h.buf = append(h.buf, pf)
				s.heldN++
			}
		}
	} else {
		s.deliverExclLocked(pf)
	}
	s.mu.Unlock()
}

// deliverExclLocked queues pf, or an UPDATESUB in its place when the
// socket published it excluding itself.
func (s *Socket) deliverExclLocked(pf *pubFrame) {
	if to, ok := s.skipTo[pf.channel]; ok {
		if to.Epoch == pf.uid.Epoch && pf.uid.Seq <= to.Seq {
			if pf.uid.Seq == to.Seq {
				delete(s.skipTo, pf.channel)
				s.updateSlowLocked()
			}
			return // the client has it already
		}
		delete(s.skipTo, pf.channel)
		s.updateSlowLocked()
	}
	if ex := s.excl[pf.channel]; len(ex) > 0 {
		hit := false
		kept := ex[:0]
		for _, u := range ex {
			switch {
			case u == pf.uid:
				hit = true
			case u.Epoch == pf.uid.Epoch && u.Seq > pf.uid.Seq:
				kept = append(kept, u) // still to come
			}
		}
		if len(kept) == 0 {
			delete(s.excl, pf.channel)
			s.updateSlowLocked()
		} else {
			s.excl[pf.channel] = kept
		}
		if hit {
			s.enqueueLocked(outItem{data: protocol.AppendUpdateSub(nil, pf.channel, pf.uid), op: opText})
			return
		}
	}
	s.enqueueLocked(outItem{pf: pf, op: opText})
}

func (s *Socket) updateSlowLocked() {
	s.slow.Store(int32(len(s.holds) + len(s.excl) + len(s.skipTo)))
}

// holdLocked parks channel's deliveries until releaseLocked.
func (s *Socket) holdLocked(channel string) {
	if s.holds == nil {
		s.holds = make(map[string]*hold)
	}
	h := s.holds[channel]
	if h == nil {
		h = &hold{}
		s.holds[channel] = h
	}
	h.count++
	s.updateSlowLocked()
}

func (s *Socket) hold(channel string) {
	s.mu.Lock()
	s.holdLocked(channel)
	s.mu.Unlock()
}

// releaseLocked undoes one holdLocked; the last release queues the parked
// publications in order, dropping those at or before dropTo (when set) or
// the dropTo of an earlier release of the same hold (the client has them
// from a SYNC reply).
func (s *Socket) releaseLocked(channel string, dropTo *protocol.UID) {
	h := s.holds[channel]
	if h == nil {
		return
	}
	if dropTo != nil && (!h.hasDrop || h.drop.Epoch != dropTo.Epoch || h.drop.Seq < dropTo.Seq) {
		h.drop, h.hasDrop = *dropTo, true
	}
	h.count--
	if h.count > 0 {
		return
	}
	delete(s.holds, channel)
	s.updateSlowLocked()
	s.heldN -= len(h.buf)
	for _, pf := range h.buf {
		if h.hasDrop && pf.uid.Epoch == h.drop.Epoch && pf.uid.Seq <= h.drop.Seq {
			continue
		}
		s.deliverExclLocked(pf)
	}
}

// sentToLocked returns the last uid of channel, at or before pos, that
// the socket was handed: pos, unless some are still parked by a hold of
// the channel. The caller holds s.mu and a hold of channel.
func (s *Socket) sentToLocked(channel string, pos protocol.UID) protocol.UID {
	if h := s.holds[channel]; h != nil && len(h.buf) > 0 {
		if first := h.buf[0].uid; first.Epoch == pos.Epoch && first.Seq <= pos.Seq {
			return protocol.UID{Epoch: pos.Epoch, Seq: first.Seq - 1}
		}
	}
	return pos
}

// backend returns the context of one scaler call made for the socket:
// bounded by Options.BackendTimeout, ended when the socket closes.
func (s *Socket) backend() (context.Context, context.CancelFunc) {
	return context.WithTimeout(s.bctx, s.srv.opts.BackendTimeout)
}

func (s *Socket) release(channel string, dropTo *protocol.UID) {
	s.mu.Lock()
	s.releaseLocked(channel, dropTo)
	s.mu.Unlock()
}

// badFrame counts a bad frame and reports whether the limit is passed.
func (s *Socket) badFrame() bool {
	s.srv.stats.badFrames.Add(1)
	lim := s.srv.opts.BadFrameLimit
	if lim < 0 {
		return false
	}
	now := time.Now()
	if now.Sub(s.badStart) > s.srv.opts.BadFrameWindow {
		s.badStart = now
		s.badCount = 0
	}
	s.badCount++
	return s.badCount > lim
}

// rateLimited counts a request against Options.RateLimit.
func (s *Socket) rateLimited() bool {
	lim := s.srv.opts.RateLimit
	if lim <= 0 {
		return false
	}
	now := time.Now()
	if now.Sub(s.rateT) >= time.Second {
		s.rateT = now
		s.rateN = 0
	}
	s.rateN++
	return s.rateN > lim
}

// handle dispatches one client frame (handler goroutine).
func (s *Socket) handle(data []byte) {
	msg, err := protocol.DecodeClient(data, protocol.Limits{
		MaxFrameBytes: s.srv.opts.MaxFrameBytes,
		MaxDepth:      s.srv.opts.MaxDepth,
		MaxChannelLen: s.srv.opts.MaxChannelLen,
	})
	if err != nil {
		s.badInput(err)
		return
	}
	switch msg.Sys {
	case protocol.SysBegin:
		s.handleBegin()
	case protocol.SysSubscribe:
		if s.rateLimited() {
			s.sendText(protocol.AppendSubscribeFail(nil, msg.ID, msg.Channel, protocol.NewError(protocol.CodeRateLimited, "too many requests")))
			return
		}
		s.mu.Lock()
		_, dup := s.asks[string(msg.ID)]
		if dup {
			// ASK and SUBSCRIBE share the client's id counter.
			s.closeLocked(protocol.ClosePolicyViolation, "reused outstanding id")
		}
		s.mu.Unlock()
		if !dup {
			s.handleSubscribe(msg)
		}
	case protocol.SysUnsubscribe:
		s.handleUnsubscribe(msg.Channel)
	case protocol.SysSync:
		s.handleSync(msg)
	case protocol.SysAsk:
		s.handleAsk(msg)
	case protocol.SysTell:
		s.handleTell(msg)
	}
}

// badInput answers a frame DecodeClient refused.
func (s *Socket) badInput(err error) {
	var de *protocol.DecodeError
	if !errors.As(err, &de) {
		de = &protocol.DecodeError{Code: protocol.CodeBadFrame, Detail: "bad frame"}
	}
	e := protocol.NewError(de.Code, de.Detail)
	var frame []byte
	switch {
	case de.ID != nil && de.Sys == protocol.SysSubscribe:
		frame = protocol.AppendSubscribeFail(nil, de.ID, "", e)
	case de.ID != nil && de.Sys == protocol.SysAsk:
		frame = protocol.AppendResponseError(nil, de.ID, e)
	default:
		frame = protocol.AppendErrorFrame(nil, e)
	}
	over := s.badFrame()
	s.srv.emit(Event{Kind: EventBadFrame, Socket: s.id, Err: err})
	s.mu.Lock()
	s.enqueueLocked(outItem{data: frame, op: opText})
	if over {
		s.closeLocked(protocol.ClosePolicyViolation, "too many bad frames")
	}
	s.mu.Unlock()
}

// handleBegin answers BEGIN, granting the user channel.
func (s *Socket) handleBegin() {
	prot := s.srv.prot()
	if s.user == "" {
		s.sendText(protocol.AppendBeginReply(nil, prot, "", protocol.UID{}))
		return
	}
	uc := protocol.UserChannel(s.user)
	err := s.srv.subscribeSocket(s, uc, ChannelOptions{}, func(_ *hubChannel, pos protocol.UID, _ bool) {
		s.enqueueLocked(outItem{data: protocol.AppendBeginReply(nil, prot, uc, pos), op: opText})
	})
	if err != nil {
		s.srv.log.Warn("sss: user channel subscribe failed", "socket", s.id, "user", s.user, "err", err)
		s.Close(protocol.CloseTryAgainLater, "backend unavailable")
	}
}

// startHeartbeats registers the socket with the heartbeat wheel once.
func (s *Socket) startHeartbeats() {
	if s.begun.Swap(true) {
		return
	}
	if s.srv.wheel != nil {
		s.srv.wheel.add(s)
	}
}

func (s *Socket) handleUnsubscribe(channel string) {
	if !s.subscribed(channel) {
		return
	}
	ctx, cancel := s.backend()
	defer cancel()
	s.srv.unsubscribeSocket(ctx, s, channel)
}

// handleAsk starts an ask handler on its own goroutine.
func (s *Socket) handleAsk(msg *protocol.Message) {
	key := string(msg.ID)
	s.mu.Lock()
	if _, dup := s.asks[key]; dup {
		s.closeLocked(protocol.ClosePolicyViolation, "reused outstanding id")
		s.mu.Unlock()
		return
	}
	if len(s.asks) >= s.srv.opts.MaxConcurrentAsks || s.rateLimited() {
		s.enqueueLocked(outItem{data: protocol.AppendResponseError(nil, msg.ID, protocol.NewError(protocol.CodeRateLimited, "too many asks")), op: opText})
		s.mu.Unlock()
		return
	}
	h := s.srv.askHandler(msg.Topic)
	if h == nil {
		s.enqueueLocked(outItem{data: protocol.AppendResponseError(nil, msg.ID, protocol.NewError(protocol.CodeUnknownTopic, "no handler for topic "+msg.Topic)), op: opText})
		s.mu.Unlock()
		return
	}
	s.srv.work.add(true)
	if s.asks == nil {
		s.asks = make(map[string]struct{})
	}
	s.asks[key] = struct{}{}
	s.mu.Unlock()
	body := msg.Msg
	if body == nil {
		body = json.RawMessage("null")
	}
	go s.runAsk(h, msg.Topic, msg.ID, body)
}

// runAsk runs one ask handler and answers exactly once.
func (s *Socket) runAsk(h AskHandler, topic string, id, body json.RawMessage) {
	defer s.srv.work.done()
	frame := s.callAsk(h, topic, id, body)
	s.mu.Lock()
	delete(s.asks, string(id))
	s.enqueueLocked(outItem{data: frame, op: opText})
	s.mu.Unlock()
}

func (s *Socket) callAsk(h AskHandler, topic string, id, body json.RawMessage) (frame []byte) {
	defer func() {
		if p := recover(); p != nil {
			s.srv.log.Error("sss: ask handler panicked", "socket", s.id, "topic", topic, "panic", p)
			frame = protocol.AppendResponseError(nil, id, protocol.NewInternalError())
		}
	}()
	res, err := h(s.ctx, s, body)
	if err != nil {
		return protocol.AppendResponseError(nil, id, s.srv.appError(err, protocol.CodeAppError, "ask", topic, s))
	}
	raw, err := marshalMsg(res)
	if err != nil {
		s.srv.log.Error("sss: ask result not encodable", "socket", s.id, "topic", topic, "err", err)
		return protocol.AppendResponseError(nil, id, protocol.NewInternalError())
	}
	return protocol.AppendResponse(nil, id, raw)
}

// handleTell runs a tell handler on the handler goroutine.
func (s *Socket) handleTell(msg *protocol.Message) {
	if s.rateLimited() {
		s.sendText(protocol.AppendErrorFrame(nil, protocol.NewError(protocol.CodeRateLimited, "too many tells")))
		return
	}
	h := s.srv.tellHandler(msg.Topic)
	if h == nil {
		s.sendText(protocol.AppendErrorFrame(nil, protocol.NewError(protocol.CodeUnknownTopic, "no handler for topic "+msg.Topic)))
		return
	}
	body := msg.Msg
	if body == nil {
		body = json.RawMessage("null")
	}
	defer func() {
		if p := recover(); p != nil {
			s.srv.log.Error("sss: tell handler panicked", "socket", s.id, "topic", msg.Topic, "panic", p)
		}
	}()
	h(s.ctx, s, body)
}
