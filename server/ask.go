package server

import (
	"encoding/json"
	"errors"

	"github.com/sss-go/sss/protocol"
)

// Asks and tells: the handlers by topic, and how a client's ASK and TELL
// reach them.

// HandleAsk sets the handler of an ask topic. It may be called at any time;
// it panics on an empty topic, a nil handler or a topic already handled
// (setup mistakes).
func (s *Server) HandleAsk(topic string, fn AskHandler) {
	register(s, s.asks, "HandleAsk", topic, fn, fn == nil)
}

// HandleTell sets the handler of a client tell topic; the same rules as
// HandleAsk apply.
func (s *Server) HandleTell(topic string, fn TellHandler) {
	register(s, s.tells, "HandleTell", topic, fn, fn == nil)
}

// register adds the handler of a topic to m (s.asks or s.tells).
func register[H any](s *Server, m map[string]H, what, topic string, fn H, isNil bool) {
	if topic == "" || isNil {
		panic("sss/server: " + what + " with empty topic or nil handler")
	}
	s.hmu.Lock()
	defer s.hmu.Unlock()
	if _, dup := m[topic]; dup {
		panic("sss/server: " + what + ": duplicate topic " + topic)
	}
	m[topic] = fn
}

// handler returns the handler of a topic in m (s.asks or s.tells).
func handler[H any](s *Server, m map[string]H, topic string) H {
	s.hmu.RLock()
	defer s.hmu.RUnlock()
	return m[topic]
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
	h := handler(s.srv, s.srv.asks, msg.Topic)
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
	raw, err := protocol.MarshalPayload(res)
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
	h := handler(s.srv, s.srv.tells, msg.Topic)
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

// appError turns a hook's error into a wire error object; codeDefault
// fills an empty Code. Errors other than *protocol.Error are logged and
// answered "internal".
func (s *Server) appError(err error, codeDefault, what, name string, sock *Socket) *protocol.Error {
	var pe *protocol.Error
	if errors.As(err, &pe) {
		out := *pe
		if out.Code == "" {
			out.Code = codeDefault
		}
		if out.Name == "" {
			out.Name = protocol.NameOf(out.Code)
		}
		return &out
	}
	s.log.Error("sss: "+what+" failed", "socket", sock.id, "topic", name, "err", err)
	return protocol.NewInternalError()
}
