package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/gorilla/websocket"
	"github.com/sss-go/sss/protocol"
	"github.com/sss-go/sss/scaler"
)

// Server is an http.Handler speaking the SSS protocol (PROTOCOL.md) over
// WebSocket, connected to the other instances through a scaler.Scaler.
type Server struct {
	opts     Options
	log      *slog.Logger
	sc       scaler.Scaler
	ownSc    bool
	up       websocket.Upgrader
	hub      *hub
	writers  *writerPool
	qfree    queueFree
	wheel    *wheel
	work     tracker
	stats    counters
	draining atomic.Bool

	hmu   sync.RWMutex
	asks  map[string]AskHandler
	tells map[string]TellHandler

	smu       sync.RWMutex
	sockets   map[string]*Socket
	byUser    map[string]map[*Socket]struct{}
	bySession map[string]map[*Socket]struct{}

	shutOnce sync.Once
	shutDone chan struct{}
}

type counters struct {
	sockets    atomic.Int64
	published  atomic.Uint64
	delivered  atomic.Uint64
	slowCloses atomic.Uint64
	badFrames  atomic.Uint64
}

var nullJSON = json.RawMessage("null")

// New returns a Server using sc (nil: a new in-memory scaler, closed by
// Shutdown) and starts sc with the server's handler.
func New(sc scaler.Scaler, opts Options) (*Server, error) {
	o, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	s := &Server{
		opts:      o,
		log:       o.Logger,
		sc:        sc,
		writers:   newWriterPool(),
		asks:      make(map[string]AskHandler),
		tells:     make(map[string]TellHandler),
		sockets:   make(map[string]*Socket),
		byUser:    make(map[string]map[*Socket]struct{}),
		bySession: make(map[string]map[*Socket]struct{}),
		shutDone:  make(chan struct{}),
	}
	if s.sc == nil {
		s.sc = scaler.NewMemory(scaler.MemoryOptions{Logger: o.Logger})
		s.ownSc = true
	}
	s.hub = newHub(s)
	s.work.init()
	s.up = websocket.Upgrader{
		ReadBufferSize:    256,
		WriteBufferPool:   &sync.Pool{},
		EnableCompression: o.EnableCompression,
		CheckOrigin:       s.checkOrigin,
		Error: func(w http.ResponseWriter, r *http.Request, status int, reason error) {
			http.Error(w, http.StatusText(status), status)
		},
	}
	err = s.sc.Start(context.Background(), scaler.Handler{
		Publication: s.hub.publication,
		Reset:       s.onReset,
		Control:     s.onControl,
		Event: func(e scaler.Event) {
			if s.opts.OnEvent != nil {
				s.emit(Event{Kind: EventScaler, Channel: e.Channel, Count: e.Count, Err: e.Err, Scaler: &e})
			}
		},
	})
	if err != nil {
		if s.ownSc {
			_ = s.sc.Close(context.Background())
		}
		return nil, fmt.Errorf("sss/server: start scaler: %w", err)
	}
	if o.HeartbeatInterval > 0 {
		s.wheel = newWheel(o.HeartbeatInterval, heartbeat)
	}
	return s, nil
}

// Scaler returns the server's scaler.
func (s *Server) Scaler() scaler.Scaler { return s.sc }

// HandleAsk sets the handler of an ask topic. It may be called at any time;
// it panics on an empty topic, a nil handler or a topic already handled
// (setup mistakes).
func (s *Server) HandleAsk(topic string, fn AskHandler) {
	if topic == "" || fn == nil {
		panic("sss/server: HandleAsk with empty topic or nil handler")
	}
	s.hmu.Lock()
	defer s.hmu.Unlock()
	if _, dup := s.asks[topic]; dup {
		panic("sss/server: HandleAsk: duplicate topic " + topic)
	}
	s.asks[topic] = fn
}

// HandleTell sets the handler of a client tell topic; the same rules as
// HandleAsk apply.
func (s *Server) HandleTell(topic string, fn TellHandler) {
	if topic == "" || fn == nil {
		panic("sss/server: HandleTell with empty topic or nil handler")
	}
	s.hmu.Lock()
	defer s.hmu.Unlock()
	if _, dup := s.tells[topic]; dup {
		panic("sss/server: HandleTell: duplicate topic " + topic)
	}
	s.tells[topic] = fn
}

func (s *Server) askHandler(topic string) AskHandler {
	s.hmu.RLock()
	defer s.hmu.RUnlock()
	return s.asks[topic]
}

func (s *Server) tellHandler(topic string) TellHandler {
	s.hmu.RLock()
	defer s.hmu.RUnlock()
	return s.tells[topic]
}

// prot returns BEGIN's prot object.
func (s *Server) prot() protocol.Prot {
	if s.opts.HeartbeatInterval <= 0 {
		return protocol.Prot{V: 1}
	}
	return protocol.Prot{V: 1, HB: true, HBInterval: int(s.opts.HeartbeatInterval / time.Millisecond),
		HBThreshold: int(s.opts.HeartbeatThreshold / time.Millisecond)}
}

// checkOrigin is the upgrader's origin check.
func (s *Server) checkOrigin(r *http.Request) bool {
	if s.opts.CheckOrigin != nil {
		return s.opts.CheckOrigin(r)
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
	var sess *Session
	var refusal error
	if s.opts.SessionParser != nil {
		var err error
		sess, err = s.opts.SessionParser(r)
		if err == nil && sess == nil {
			sess = &Session{}
		}
		if err == nil && sess.User != "" && !protocol.ValidUserID(sess.User) {
			err = protocol.NewError(protocol.CodeRefused, "invalid user id")
		}
		if err != nil {
			refusal = err
			if s.opts.RefuseWithHTTP403 {
				http.Error(w, "forbidden", http.StatusForbidden)
				return
			}
		}
	}
	if sess == nil {
		sess = &Session{}
	}
	if refusal != nil {
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
		return
	}
	if !s.work.add(false) {
		http.Error(w, "server shutting down", http.StatusServiceUnavailable)
		return
	}
	sock := &Socket{
		srv:       s,
		id:        uuid.NewString(),
		user:      sess.User,
		sessionID: sess.SessionID,
		values:    sess.Values,
		info:      sess.Info,
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
	sock.ctx, sock.cancel = context.WithCancel(context.Background())
	// Register before the 101 goes out, so that a boot, tell or
	// broadcast sent right after the client saw its upgrade succeed
	// reaches this socket.
	s.addSocket(sock)
	ws, err := s.up.Upgrade(w, r, nil)
	if err != nil {
		// The upgrader answered with an HTTP error.
		sock.cancel()
		s.removeSocket(sock)
		s.work.done()
		return
	}
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
		// Echo every close frame with its code and reason (PROTOCOL.md);
		// the writer closes the connection right after.
		sock.Close(code, text)
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
	sock.startHeartbeats()
	if s.opts.OnOpen != nil {
		s.opts.OnOpen(sock)
	}
	go sock.readLoop()
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

// addSocket registers a socket.
func (s *Server) addSocket(sock *Socket) {
	s.stats.sockets.Add(1)
	s.smu.Lock()
	s.sockets[sock.id] = sock
	addTo(s.bySession, sock.sessionID, sock)
	if sock.user != "" {
		addTo(s.byUser, sock.user, sock)
	}
	s.smu.Unlock()
	if sock.user != "" {
		if err := s.sc.AddUser(sock.ctx, sock.user); err != nil {
			s.backendError(sock, "", err)
			s.log.Warn("sss: scaler AddUser failed", "user", sock.user, "err", err)
		}
	}
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
func (s *Server) removeSocket(sock *Socket) {
	s.smu.Lock()
	delete(s.sockets, sock.id)
	removeFrom(s.bySession, sock.sessionID, sock)
	if sock.user != "" {
		removeFrom(s.byUser, sock.user, sock)
	}
	s.smu.Unlock()
	s.stats.sockets.Add(-1)
	ctx, cancel := context.WithTimeout(context.Background(), s.opts.WriteTimeout)
	defer cancel()
	for _, ch := range sock.Subscriptions() {
		s.unsubscribeSocket(ctx, sock, ch)
	}
	if sock.user != "" {
		if err := s.sc.RemoveUser(ctx, sock.user); err != nil {
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

// subscribeSocket subscribes sock to channel; fn runs under the socket's
// and the channel's locks with the position (see hub.join) and should
// queue the reply. The socket's subscription is recorded before fn.
func (s *Server) subscribeSocket(ctx context.Context, sock *Socket, channel string, co ChannelOptions, fn func(ch *hubChannel, pos protocol.UID)) error {
	added := false
	occupied, err := s.hub.join(ctx, sock, channel, co.MaxSubscribers, func(ch *hubChannel, pos protocol.UID) {
		if _, ok := sock.subs[channel]; !ok {
			if sock.subs == nil {
				sock.subs = make(map[string]ChannelOptions)
			}
			sock.subs[channel] = co
			added = true
		}
		fn(ch, pos)
	})
	if err != nil {
		return err
	}
	if occupied && s.opts.OnChannelOccupied != nil {
		s.opts.OnChannelOccupied(channel)
	}
	if added {
		s.joined(ctx, sock, channel, co)
	}
	return nil
}

// joined runs after a new subscription: presence and hooks.
func (s *Server) joined(ctx context.Context, sock *Socket, channel string, co ChannelOptions) {
	if s.opts.OnSubscribe != nil {
		s.opts.OnSubscribe(sock, channel)
	}
	if protocol.ReservedChannel(channel) {
		return
	}
	m := sock.member()
	if err := s.sc.Join(ctx, channel, m); err != nil {
		s.backendError(sock, channel, err)
		s.log.Warn("sss: scaler join failed", "socket", sock.id, "channel", channel, "err", err)
	}
	if co.Presence {
		if err := s.sc.Control(ctx, scaler.Control{Kind: scaler.ControlJoin, Target: channel, Member: &m}); err != nil {
			s.log.Warn("sss: presence join event failed", "channel", channel, "err", err)
		}
	}
}

func (sock *Socket) member() scaler.Member {
	return scaler.Member{ID: sock.id, User: sock.user, Info: sock.info}
}

// unsubscribeSocket removes sock's subscription to channel.
func (s *Server) unsubscribeSocket(ctx context.Context, sock *Socket, channel string) {
	sock.mu.Lock()
	co, ok := sock.subs[channel]
	delete(sock.subs, channel)
	delete(sock.excl, channel)
	delete(sock.skipTo, channel)
	sock.updateSlowLocked()
	sock.mu.Unlock()
	if !ok {
		return
	}
	if s.hub.leave(ctx, sock, channel) && s.opts.OnChannelVacated != nil {
		s.opts.OnChannelVacated(channel)
	}
	if s.opts.OnUnsubscribe != nil {
		s.opts.OnUnsubscribe(sock, channel)
	}
	if protocol.ReservedChannel(channel) {
		return
	}
	if err := s.sc.Leave(ctx, channel, sock.id); err != nil {
		s.backendError(sock, channel, err)
		s.log.Warn("sss: scaler leave failed", "socket", sock.id, "channel", channel, "err", err)
	}
	if co.Presence {
		m := sock.member()
		if err := s.sc.Control(ctx, scaler.Control{Kind: scaler.ControlLeave, Target: channel, Member: &m}); err != nil {
			s.log.Warn("sss: presence leave event failed", "channel", channel, "err", err)
		}
	}
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
	return protocol.ErrInternal()
}

// marshalMsg encodes a message: json.RawMessage verbatim (validated), nil
// as null, anything else with encoding/json without HTML escaping.
func marshalMsg(v any) (json.RawMessage, error) {
	switch m := v.(type) {
	case nil:
		return nullJSON, nil
	case json.RawMessage:
		if m == nil {
			return nullJSON, nil
		}
		if bytes.ContainsAny(m, " \t\r\n") {
			// Frames are compact JSON (PROTOCOL.md): compact once
			// here, never per subscriber. Compact validates too.
			var buf bytes.Buffer
			if err := json.Compact(&buf, m); err != nil {
				return nil, fmt.Errorf("%w: %v", ErrBadMessage, err)
			}
			return buf.Bytes(), nil
		}
		if !json.Valid(m) {
			return nil, ErrBadMessage
		}
		return m, nil
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadMessage, err)
	}
	return bytes.TrimRight(buf.Bytes(), "\n"), nil
}

// backendError reports a failed scaler call made for a socket.
func (s *Server) backendError(sock *Socket, channel string, err error) {
	if s.opts.OnEvent != nil {
		s.emit(Event{Kind: EventBackendError, Socket: sock.id, Channel: channel, Err: err})
	}
}

// emit sends an event to Options.OnEvent.
func (s *Server) emit(e Event) {
	if s.opts.OnEvent != nil {
		s.opts.OnEvent(e)
	}
}

// Channels returns the channels with at least one subscribed socket on
// this instance, sorted.
func (s *Server) Channels() []string {
	out := s.hub.channels()
	sort.Strings(out)
	if out == nil {
		out = []string{}
	}
	return out
}

// Stats returns a snapshot of the server's counters.
func (s *Server) Stats() Stats {
	chs, subs := s.hub.counts()
	return Stats{
		Sockets:            int(s.stats.sockets.Load()),
		Channels:           chs,
		Subscriptions:      subs,
		Published:          s.stats.published.Load(),
		Delivered:          s.stats.delivered.Load(),
		SlowConsumerCloses: s.stats.slowCloses.Load(),
		BadFrames:          s.stats.badFrames.Load(),
		Writers:            int(s.writers.n.Load()),
	}
}

// Draining reports whether Shutdown has begun.
func (s *Server) Draining() bool { return s.draining.Load() }

// ReadyHandler answers 200 while the server is ready, 503 while it drains
// or its scaler is unhealthy.
func (s *Server) ReadyHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if s.draining.Load() {
			http.Error(w, "draining", http.StatusServiceUnavailable)
			return
		}
		if err := s.sc.Health(r.Context()); err != nil {
			http.Error(w, "scaler unhealthy", http.StatusServiceUnavailable)
			return
		}
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write([]byte("ok\n"))
	})
}

// tracker counts running readers and asks so Shutdown can wait for them.
type tracker struct {
	mu     sync.Mutex
	n      int
	closed bool
	zeroed bool
	zero   chan struct{}
}

func (t *tracker) init() { t.zero = make(chan struct{}) }

// add counts one more; false once closed, unless inner (work started by
// work already counted, such as an ask started by a reader).
func (t *tracker) add(inner bool) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed && !inner {
		return false
	}
	t.n++
	return true
}

func (t *tracker) done() {
	t.mu.Lock()
	t.n--
	if t.n == 0 && t.closed && !t.zeroed {
		t.zeroed = true
		close(t.zero)
	}
	t.mu.Unlock()
}

// close refuses new work and returns a channel closed when none runs.
func (t *tracker) close() <-chan struct{} {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.closed {
		t.closed = true
		if t.n == 0 {
			t.zeroed = true
			close(t.zero)
		}
	}
	return t.zero
}
