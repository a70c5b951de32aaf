package server

import (
	"errors"
	"time"

	"github.com/sss-go/sss/protocol"
)

// Handling a client frame, on the socket's handler goroutine (reader.go):
// decode, count bad frames and requests, and dispatch by sys code.

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

// badFrame counts a bad frame and reports whether the limit is passed.
func (s *Socket) badFrame() bool {
	s.srv.stats.badFrames.Add(1)
	lim := s.srv.opts.BadFrameLimit
	return lim >= 0 && s.bad.add(s.srv.opts.BadFrameWindow, lim)
}

// rateLimited counts a request against Options.RateLimit.
func (s *Socket) rateLimited() bool {
	lim := s.srv.opts.RateLimit
	return lim > 0 && s.rate.add(time.Second, lim)
}

// windowCount counts events in consecutive windows of time (handler
// goroutine only).
type windowCount struct {
	start time.Time
	n     int
}

// add counts one event and reports whether the current window, of length
// w, has more than lim.
func (c *windowCount) add(w time.Duration, lim int) bool {
	now := time.Now()
	if now.Sub(c.start) >= w {
		c.start, c.n = now, 0
	}
	c.n++
	return c.n > lim
}
