package server

import (
	"context"
)

// The registry: the server's open sockets by id, by user and by session,
// which the control plane's targets name.

// addSocket registers a socket; false once Shutdown has taken the list of
// sockets to close.
func (s *Server) addSocket(sock *Socket) bool {
	s.smu.Lock()
	if s.noSockets {
		s.smu.Unlock()
		return false
	}
	s.stats.sockets.Add(1)
	s.sockets[sock.id] = sock
	addTo(s.bySession, sock.sessionID, sock)
	if sock.user != "" {
		addTo(s.byUser, sock.user, sock)
	}
	s.smu.Unlock()
	if sock.user != "" && s.users != nil {
		ctx, cancel := sock.backend()
		err := s.users.AddUser(ctx, sock.user)
		cancel()
		if err != nil {
			s.backendError(sock, "", err)
			s.log.Warn("sss: scaler AddUser failed", "user", sock.user, "err", err)
		}
	}
	return true
}

func addTo(m map[string]map[*Socket]struct{}, key string, sock *Socket) {
	set := m[key]
	if set == nil {
		set = make(map[*Socket]struct{})
		m[key] = set
	}
	set[sock] = struct{}{}
}

func removeFrom(m map[string]map[*Socket]struct{}, key string, sock *Socket) {
	if set := m[key]; set != nil {
		delete(set, sock)
		if len(set) == 0 {
			delete(m, key)
		}
	}
}

// removeSocket unregisters a closed socket and drops its subscriptions.
// The scaler calls this takes share one BackendTimeout.
func (s *Server) removeSocket(sock *Socket) {
	s.smu.Lock()
	delete(s.sockets, sock.id)
	removeFrom(s.bySession, sock.sessionID, sock)
	if sock.user != "" {
		removeFrom(s.byUser, sock.user, sock)
	}
	s.smu.Unlock()
	s.stats.sockets.Add(-1)
	ctx, cancel := context.WithTimeout(context.Background(), s.opts.BackendTimeout)
	defer cancel()
	for _, ch := range sock.Subscriptions() {
		s.unsubscribeSocket(ctx, sock, ch)
	}
	if sock.user != "" && s.users != nil {
		if err := s.users.RemoveUser(ctx, sock.user); err != nil {
			s.backendError(sock, "", err)
			s.log.Warn("sss: scaler RemoveUser failed", "user", sock.user, "err", err)
		}
	}
}

// socketsOf returns the local sockets of a user or session ("" key =
// every socket).
func (s *Server) socketsOf(m map[string]map[*Socket]struct{}, key string) []*Socket {
	s.smu.RLock()
	defer s.smu.RUnlock()
	var out []*Socket
	if m == nil {
		out = make([]*Socket, 0, len(s.sockets))
		for _, sock := range s.sockets {
			out = append(out, sock)
		}
		return out
	}
	for sock := range m[key] {
		out = append(out, sock)
	}
	return out
}

func (s *Server) socketByID(id string) []*Socket {
	s.smu.RLock()
	defer s.smu.RUnlock()
	if sock := s.sockets[id]; sock != nil {
		return []*Socket{sock}
	}
	return nil
}
