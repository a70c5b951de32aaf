package server

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"github.com/sss-go/sss/protocol"
	"github.com/sss-go/sss/scaler"
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
	bad  windowCount // bad frames per Options.BadFrameWindow
	rate windowCount // requests per second
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
	raw, err := tellPayload(topic, msg)
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

func (s *Socket) numSubs() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.subs)
}

func (s *Socket) isClosing() bool {
	s.mu.Lock()
	c := s.closing
	s.mu.Unlock()
	return c
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

// backend returns the context of one scaler call made for the socket:
// bounded by Options.BackendTimeout, ended when the socket closes.
func (s *Socket) backend() (context.Context, context.CancelFunc) {
	return context.WithTimeout(s.bctx, s.srv.opts.BackendTimeout)
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

func (sock *Socket) member() scaler.Member {
	return scaler.Member{ID: sock.id, User: sock.user, Info: sock.info}
}
