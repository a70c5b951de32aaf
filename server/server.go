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

// Server is an http.Handler speaking the sss protocol (docs/protocol.md)
// over WebSocket, connected to the other instances through a
// scaler.Scaler. Its Publish, Broadcast, Boot and Tell methods are shared
// with Publisher.
type Server struct {
	controls // sc, its control plane (or localPlane), Publish, Broadcast, Boot*, Tell*

	opts     Options
	log      *slog.Logger
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
		writers:   newWriterPool(),
		asks:      make(map[string]AskHandler),
		tells:     make(map[string]TellHandler),
		sockets:   make(map[string]*Socket),
		byUser:    make(map[string]map[*Socket]struct{}),
		bySession: make(map[string]map[*Socket]struct{}),
		shutDone:  make(chan struct{}),
	}
	if sc == nil {
		sc = scaler.NewMemory(scaler.MemoryOptions{Logger: o.Logger})
		s.ownSc = true
	}
	s.controls = controls{sc: sc, cp: controlPlane(sc, localPlane{s}), maxLen: o.MaxChannelLen, srv: s}
	s.presence = presenceStore(sc)
	s.users, _ = sc.(scaler.UserRegistry)
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
	if err := s.startScaler(ctx); err != nil {
		return nil, err
	}
	if o.HeartbeatInterval > 0 {
		s.wheel = newWheel(o.HeartbeatInterval, heartbeat)
	}
	return s, nil
}

// startScaler starts the scaler with the server's handler; a scaler New
// made is closed again when that fails.
func (s *Server) startScaler(ctx context.Context) error {
	err := s.sc.Start(ctx, scaler.Handler{
		Publication: s.hub.publication,
		Reset:       s.onReset,
		Control:     s.onControl,
		Event: func(e scaler.Event) {
			if s.opts.OnEvent != nil {
				s.emit(Event{Kind: EventScaler, Channel: e.Channel, Count: e.Count, Err: e.Err, Scaler: &e})
			}
		},
	})
	if err == nil {
		return nil
	}
	if s.ownSc {
		cctx, cancel := context.WithTimeout(context.Background(), s.opts.BackendTimeout)
		_ = s.sc.Close(cctx)
		cancel()
	}
	return fmt.Errorf("sss/server: start scaler: %w", err)
}

// published counts a Publish of this server and reports it to OnEvent.
func (s *Server) published(channel string, took time.Duration, err error) {
	if err == nil {
		s.stats.published.Add(1)
	}
	if s.opts.OnEvent != nil {
		s.emit(Event{Kind: EventPublish, Channel: channel, Latency: took, Err: err})
	}
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
