package server

import (
	"context"
	"encoding/json"
	"net/http"
)

// Calling user code: hooks are never called under a lock of the server,
// and a panic in one is recovered and logged (with the socket id when
// there is a socket), so it neither kills the process nor leaves a lock
// held or a socket half made.

// SessionParser runs on the upgrade request, on the HTTP handler's
// goroutine. It returns the session of an accepted request, or an error to
// refuse it: the upgrade then completes and the socket is closed at once
// with 4001 and the error's message as reason (a *protocol.Error's Message,
// else "refused"), or HTTP 403 is answered with Options.RefuseWithHTTP403.
// A panic is logged and answered with HTTP 500 (the client retries).
type SessionParser func(r *http.Request) (*Session, error)

// SubscriptionParser decides a SUBSCRIBE or SYNC entry of a non-user
// channel. It runs on the socket's handler goroutine (see TellHandler). It
// returns nil to accept (optionally with channel option overrides; nil
// keeps the options of the channel's rule), a *protocol.Error to refuse
// (Code defaulted to "refused"), or any other error, answered as
// "internal" and logged; a panic is answered "internal" and logged too.
// An override of Presence decides whether this socket is recorded and
// announced; Server.Presence and Server.Count follow the channel's rule.
type SubscriptionParser func(ctx context.Context, sock *Socket, channel string, query json.RawMessage) (*ChannelOptions, error)

// AskHandler answers an ASK. It runs on a goroutine of its own; ctx is
// cancelled when the socket closes. The result is marshalled with
// encoding/json (a json.RawMessage goes verbatim; HTML is not escaped). An
// error of type *protocol.Error goes to the client as is (Code "app_error"
// if empty); any other error or a panic is answered "internal" and logged.
type AskHandler func(ctx context.Context, sock *Socket, msg json.RawMessage) (any, error)

// TellHandler receives a client TELL. It runs on the socket's handler
// goroutine, which handles the socket's frames one at a time in the order
// they came, so tells of one socket are handled in order; it should not
// block for long (the socket's later frames wait meanwhile; heartbeats and
// close frames are still read). A panic is logged.
type TellHandler func(ctx context.Context, sock *Socket, msg json.RawMessage)

// hook runs fn, a call of the user hook name, and reports whether it
// returned normally; a panic is logged with sock's id (when sock is not
// nil) and attrs.
func (s *Server) hook(name string, sock *Socket, fn func(), attrs ...any) (ok bool) {
	defer func() {
		if p := recover(); p != nil {
			args := append([]any{"hook", name, "panic", p}, attrs...)
			if sock != nil {
				args = append(args, "socket", sock.id)
			}
			s.log.Error("sss: hook panicked", args...)
			ok = false
		}
	}()
	fn()
	return true
}

// backendError reports a failed scaler call made for a socket.
func (s *Server) backendError(sock *Socket, channel string, err error) {
	if s.opts.OnEvent != nil {
		s.emit(Event{Kind: EventBackendError, Socket: sock.id, Channel: channel, Err: err})
	}
}

// emit sends an event to Options.OnEvent, recovering a panic. Callers
// hold no lock.
func (s *Server) emit(e Event) {
	if s.opts.OnEvent == nil {
		return
	}
	defer func() {
		if p := recover(); p != nil {
			args := []any{"hook", "OnEvent", "panic", p, "event", e.Kind.String()}
			if e.Socket != "" {
				args = append(args, "socket", e.Socket)
			}
			s.log.Error("sss: hook panicked", args...)
		}
	}()
	s.opts.OnEvent(e)
}

// emitAsync emits e from a goroutine of its own: for events raised under
// a lock (a slow consumer found while queueing a delivery).
func (s *Server) emitAsync(e Event) {
	if s.opts.OnEvent == nil {
		return
	}
	s.work.add(true)
	go func() {
		defer s.work.done()
		s.emit(e)
	}()
}
