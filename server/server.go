package server

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"sort"
	"sync"
	"sync/atomic"
	"time"

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
	cp       scaler.ControlPlane  // sc's, or this instance only
	presence scaler.PresenceStore // sc's, or this instance only
	users    scaler.UserRegistry  // sc's, or nil
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
	noSockets bool // Shutdown took the list of sockets: register no more
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
// Shutdown) and starts sc with the server's handler; ctx bounds that start
// (a networked scaler takes its lease and subscribes to its control
// channel), not the server's life. It finds sc's optional capabilities
// (package scaler) and uses a fallback for each one missing: without a
// scaler.ControlPlane, broadcasts, boots and tells reach this instance's
// sockets only; without a scaler.PresenceStore, Presence and Count see
// this instance's members only.
func New(ctx context.Context, sc scaler.Scaler, opts Options) (*Server, error) {
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
	s.cp = controlPlane(s.sc, localPlane{s})
	s.presence = presenceStore(s.sc)
	s.users, _ = s.sc.(scaler.UserRegistry)
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
	err = s.sc.Start(ctx, scaler.Handler{
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
			cctx, cancel := context.WithTimeout(context.Background(), o.BackendTimeout)
			_ = s.sc.Close(cctx)
			cancel()
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

// prot returns BEGIN's prot object.
func (s *Server) prot() protocol.Prot {
	if s.opts.HeartbeatInterval <= 0 {
		return protocol.Prot{V: 1}
	}
	return protocol.Prot{V: 1, HB: true, HBInterval: int(s.opts.HeartbeatInterval / time.Millisecond),
		HBThreshold: int(s.opts.HeartbeatThreshold / time.Millisecond)}
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
// or its scaler is unhealthy (or does not answer within BackendTimeout).
func (s *Server) ReadyHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if s.draining.Load() {
			http.Error(w, "draining", http.StatusServiceUnavailable)
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), s.opts.BackendTimeout)
		defer cancel()
		if err := s.sc.Health(ctx); err != nil {
			http.Error(w, "scaler unhealthy", http.StatusServiceUnavailable)
			return
		}
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write([]byte("ok\n"))
	})
}
