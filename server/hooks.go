package server

// Calling user code: hooks are never called under a lock of the server,
// and a panic in one is recovered and logged (with the socket id when
// there is a socket), so it neither kills the process nor leaves a lock
// held or a socket half made.

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
