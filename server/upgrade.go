package server

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
	"github.com/gorilla/websocket"
	"github.com/sss-go/sss/protocol"
)

// testHookRegister, set by tests only, runs in ServeHTTP right before a
// socket is registered.
var testHookRegister atomic.Pointer[func()]

// checkOrigin is the upgrader's origin check. A panic in
// Options.CheckOrigin refuses the request.
func (s *Server) checkOrigin(r *http.Request) (ok bool) {
	if s.opts.CheckOrigin != nil {
		if !s.hook("CheckOrigin", nil, func() { ok = s.opts.CheckOrigin(r) }, "remote", r.RemoteAddr) {
			return false
		}
		return ok
	}
	origin := r.Header.Get("Origin")
	if origin == "" {
		return true
	}
	for _, o := range s.opts.AllowedOrigins {
		if o == "*" || strings.EqualFold(o, origin) {
			return true
		}
	}
	u, err := url.Parse(origin)
	if err != nil {
		return false
	}
	return strings.EqualFold(u.Host, r.Host)
}

// ServeHTTP upgrades the request to a WebSocket and serves it. It answers
// 503 while the server drains.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if s.draining.Load() {
		http.Error(w, "server shutting down", http.StatusServiceUnavailable)
		return
	}
	sess, refusal, ok := s.session(w, r)
	if !ok {
		return // answered
	}
	if refusal != nil {
		s.refuse(w, r, refusal)
		return
	}
	if !s.work.add(false) {
		http.Error(w, "server shutting down", http.StatusServiceUnavailable)
		return
	}
	sock := s.newSocket(r, sess)
	if h := testHookRegister.Load(); h != nil {
		(*h)()
	}
	// Register before the 101 goes out, so that a boot, tell or
	// broadcast sent right after the client saw its upgrade succeed
	// reaches this socket.
	if !s.addSocket(sock) {
		sock.cancel()
		s.work.done()
		http.Error(w, "server shutting down", http.StatusServiceUnavailable)
		return
	}
	ws, err := s.up.Upgrade(w, r, nil)
	if err != nil {
		// The upgrader answered with an HTTP error.
		sock.cancel()
		s.removeSocket(sock)
		s.work.done()
		return
	}
	s.attach(sock, ws)
	sock.startHeartbeats()
	if s.opts.OnOpen != nil && !s.hook("OnOpen", sock, func() { s.opts.OnOpen(sock) }) {
		sock.Close(protocol.CloseInternalError, "internal error")
	}
	go sock.readLoop()
}

// session runs the session parser. ok is false when the request was
// answered (a panic in the parser: HTTP 500; a refusal with
// RefuseWithHTTP403: 403); refusal is the parser's error otherwise.
func (s *Server) session(w http.ResponseWriter, r *http.Request) (sess *Session, refusal error, ok bool) {
	if s.opts.SessionParser == nil {
		return &Session{}, nil, true
	}
	var err error
	if !s.hook("SessionParser", nil, func() { sess, err = s.opts.SessionParser(r) }, "remote", r.RemoteAddr) {
		http.Error(w, "internal error", http.StatusInternalServerError)
		return nil, nil, false
	}
	if err == nil && sess == nil {
		sess = &Session{}
	}
	if err == nil && sess.User != "" && !protocol.ValidUserID(sess.User) {
		err = protocol.NewError(protocol.CodeRefused, "invalid user id")
	}
	if err != nil {
		if s.opts.RefuseWithHTTP403 {
			http.Error(w, "forbidden", http.StatusForbidden)
			return nil, nil, false
		}
		return nil, err, true
	}
	return sess, nil, true
}

// refuse completes the upgrade of a refused session and closes it with
// 4001 and the refusal's message.
func (s *Server) refuse(w http.ResponseWriter, r *http.Request, refusal error) {
	ws, err := s.up.Upgrade(w, r, nil)
	if err != nil {
		return // the upgrader answered
	}
	reason := "refused"
	var pe *protocol.Error
	if errors.As(refusal, &pe) && pe.Message != "" {
		reason = pe.Message
	} else {
		s.log.Info("sss: session refused", "err", refusal)
	}
	s.closeRaw(ws, protocol.CloseBooted, reason)
}

// newSocket makes the socket of an accepted session.
func (s *Server) newSocket(r *http.Request, sess *Session) *Socket {
	info := sess.Info
	if len(info) > 0 && (!utf8.Valid(info) || !json.Valid(info)) {
		s.log.Warn("sss: session Info is not valid JSON in UTF-8; dropped", "user", sess.User)
		info = nil
	}
	sock := &Socket{
		srv:       s,
		id:        uuid.NewString(),
		user:      sess.User,
		sessionID: sess.SessionID,
		values:    sess.Values,
		info:      info,
		req:       r,
		compress:  s.opts.EnableCompression,
		connGone:  make(chan struct{}),
		// No writer may start before the connection exists: frames
		// queued meanwhile (a boot, a tell, a broadcast) wait for it.
		writing: true,
	}
	if sock.sessionID == "" {
		sock.sessionID = uuid.NewString()
	}
	sock.icond.L = &sock.imu
	sock.ctx, sock.cancel = context.WithCancel(context.Background())
	sock.bctx, sock.bcancel = context.WithCancel(sock.ctx)
	return sock
}

// attach gives an upgraded connection to its socket.
func (s *Server) attach(sock *Socket, ws *websocket.Conn) {
	sock.mu.Lock()
	sock.ws, sock.nc = ws, ws.NetConn()
	sock.writing = false
	if sock.connClosed {
		// Shutdown cut the socket short during the upgrade.
		sock.dead = true
		_ = sock.nc.Close()
	} else if len(sock.q) > 0 || sock.closing {
		sock.kickLocked()
	}
	sock.mu.Unlock()
	if sock.compress {
		ws.EnableWriteCompression(true)
	}
	ws.SetCloseHandler(func(code int, text string) error {
		// Echo every close frame with its code and reason
		// (docs/protocol.md, "9.2 Who closes, and the echo rule"), after
		// the replies to the frames that came before it; the writer
		// closes the connection right after. Backend calls made for the
		// socket end now.
		sock.bcancel()
		sock.push(inItem{code: code, reason: text})
		return nil
	})
	ws.SetPingHandler(func(data string) error {
		sock.mu.Lock()
		if !sock.closing {
			sock.pong = []byte(data)
			sock.kickLocked()
		}
		sock.mu.Unlock()
		return nil
	})
	ws.SetPongHandler(func(string) error { return nil })
}

// closeRaw sends a close frame on a connection that never became a
// socket and closes it.
func (s *Server) closeRaw(ws *websocket.Conn, code int, reason string) {
	nc := ws.NetConn()
	p := closePayload(code, reason)
	_ = nc.SetWriteDeadline(time.Now().Add(s.opts.WriteTimeout))
	_, _ = nc.Write(append(appendFrameHeader(nil, opClose, len(p)), p...))
	_ = nc.Close()
}
