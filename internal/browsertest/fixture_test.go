package browsertest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sss-go/sss/protocol"
	"github.com/sss-go/sss/scaler"
	"github.com/sss-go/sss/server"
)

// fixture is the real sss server the JavaScript tests talk to, with a
// control API (/ctl/...) that lets a test publish, boot, close sockets
// with a given code, refuse channels, make the backend fail subscribes,
// hold reconnections back, stall a connection's heartbeats and restart
// the server with or without its history.
type fixture struct {
	t  *testing.T
	hs *httptest.Server

	mu       sync.Mutex
	be       *scaler.MemoryBackend
	srv      *server.Server
	sc       *scaler.Memory
	socks    map[string]map[*server.Socket]struct{} // by user
	closes   map[string][]int                       // close codes by user
	refused  map[string]bool                        // channels the parser refuses
	failSub  map[string]int                         // scaler subscribes to fail, by channel
	subCalls map[string]int                         // scaler subscribes, by channel
	blocked  map[string]bool                        // users whose upgrades get 503
	conns    map[string]*stallConn                  // by remote address
}

func startFixture(t *testing.T) *fixture {
	t.Helper()
	f := &fixture{
		t:        t,
		be:       newBackend(),
		socks:    map[string]map[*server.Socket]struct{}{},
		closes:   map[string][]int{},
		refused:  map[string]bool{},
		failSub:  map[string]int{},
		subCalls: map[string]int{},
		blocked:  map[string]bool{},
		conns:    map[string]*stallConn{},
	}
	f.srv, f.sc = f.newServer()
	mux := http.NewServeMux()
	mux.HandleFunc("/ws", f.serveWS)
	mux.Handle("GET /sss.js", server.ClientScriptHandler())
	mux.HandleFunc("POST /ctl/{op}", f.control)
	f.hs = httptest.NewUnstartedServer(mux)
	f.hs.Listener = &stallListener{Listener: f.hs.Listener, f: f}
	f.hs.Start()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		f.mu.Lock()
		srv, sc := f.srv, f.sc
		f.mu.Unlock()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("fixture shutdown: %v", err)
		}
		_ = sc.Close(ctx)
		f.hs.Close()
	})
	return f
}

func newBackend() *scaler.MemoryBackend {
	return scaler.NewMemoryBackend(scaler.MemoryOptions{Logger: quiet()})
}

// newServer makes a server on a new instance of the current backend.
func (f *fixture) newServer() (*server.Server, *scaler.Memory) {
	f.t.Helper()
	f.mu.Lock()
	mem := f.be.Instance()
	f.mu.Unlock()
	srv, err := server.New(context.Background(), &flakyScaler{Memory: mem, f: f}, server.Options{
		SessionParser: func(r *http.Request) (*server.Session, error) {
			return &server.Session{User: r.URL.Query().Get("user")}, nil
		},
		SubscriptionParser: func(_ context.Context, _ *server.Socket, channel string, _ json.RawMessage) (*server.ChannelOptions, error) {
			f.mu.Lock()
			refuse := f.refused[channel]
			f.mu.Unlock()
			if refuse {
				return nil, &protocol.Error{Name: "Forbidden", Message: "refused by the test", Code: protocol.CodeForbidden}
			}
			return nil, nil
		},
		CheckOrigin:    func(*http.Request) bool { return true },
		DefaultChannel: server.ChannelOptions{Presence: true},
		// A lost heartbeat is noticed by the client after 3 s, a second
		// before the server would close with 4003 (after 2 intervals).
		HeartbeatInterval:  2 * time.Second,
		HeartbeatThreshold: time.Second,
		MaxRecovery:        50,
		ShutdownSpread:     -1,
		ShutdownCloseCode:  protocol.CloseServiceRestart,
		BootGrace:          time.Second,
		OnOpen:             f.opened,
		OnClose:            f.closed,
		Logger:             quiet(),
	})
	if err != nil {
		f.t.Fatalf("fixture server: %v", err)
	}
	srv.HandleAsk("echo", func(_ context.Context, _ *server.Socket, msg json.RawMessage) (any, error) { return msg, nil })
	srv.HandleAsk("whoami", func(_ context.Context, s *server.Socket, _ json.RawMessage) (any, error) { return s.User(), nil })
	srv.HandleAsk("fail", func(context.Context, *server.Socket, json.RawMessage) (any, error) {
		return nil, &protocol.Error{Name: "Nope", Message: "the test handler says no", Code: "nope"}
	})
	srv.HandleAsk("sleep", func(ctx context.Context, _ *server.Socket, msg json.RawMessage) (any, error) {
		var ms int
		_ = json.Unmarshal(msg, &ms)
		t := time.NewTimer(time.Duration(ms) * time.Millisecond)
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
		}
		return true, nil
	})
	srv.HandleTell("ping", func(_ context.Context, s *server.Socket, msg json.RawMessage) { _ = s.Tell("pong", msg) })
	return srv, mem
}

func (f *fixture) opened(s *server.Socket) {
	f.mu.Lock()
	defer f.mu.Unlock()
	m := f.socks[s.User()]
	if m == nil {
		m = map[*server.Socket]struct{}{}
		f.socks[s.User()] = m
	}
	m[s] = struct{}{}
}

func (f *fixture) closed(s *server.Socket, code int, _ string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.socks[s.User()], s)
	f.closes[s.User()] = append(f.closes[s.User()], code)
}

func (f *fixture) sockets(user string) []*server.Socket {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []*server.Socket
	for s := range f.socks[user] {
		out = append(out, s)
	}
	return out
}

func (f *fixture) serveWS(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	blocked := f.blocked[r.URL.Query().Get("user")]
	srv := f.srv
	f.mu.Unlock()
	if blocked {
		http.Error(w, "held back by the test", http.StatusServiceUnavailable)
		return
	}
	srv.ServeHTTP(w, r)
}

// ctlRequest is the body of every control call; each uses some fields.
type ctlRequest struct {
	User     string            `json:"user"`
	Channel  string            `json:"channel"`
	Topic    string            `json:"topic"`
	Msgs     []json.RawMessage `json:"msgs"`
	Code     int               `json:"code"`
	Reason   string            `json:"reason"`
	On       bool              `json:"on"`
	Times    int               `json:"times"`
	NewEpoch bool              `json:"newEpoch"`
}

func (f *fixture) control(w http.ResponseWriter, r *http.Request) {
	var req ctlRequest
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 20*time.Second)
	defer cancel()
	res, err := f.do(ctx, r.PathValue("op"), req)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(res)
}

func (f *fixture) do(ctx context.Context, op string, req ctlRequest) (any, error) {
	f.mu.Lock()
	srv, sc := f.srv, f.sc
	f.mu.Unlock()
	switch op {
	case "publish":
		uids := []string{}
		for _, m := range req.Msgs {
			uid, err := srv.Publish(ctx, req.Channel, req.Topic, m, server.PublishOptions{})
			if err != nil {
				return nil, err
			}
			uids = append(uids, uid.String())
		}
		return uids, nil
	case "broadcast":
		return true, srv.Broadcast(ctx, req.Topic, req.Msgs[0])
	case "boot":
		return true, srv.BootUser(ctx, req.User, req.Reason)
	case "close":
		socks := f.sockets(req.User)
		for _, s := range socks {
			s.Close(req.Code, req.Reason)
		}
		return len(socks), nil
	case "refuse":
		f.mu.Lock()
		f.refused[req.Channel] = req.On
		f.mu.Unlock()
		return true, nil
	case "failsub":
		f.mu.Lock()
		f.failSub[req.Channel] = req.Times
		f.mu.Unlock()
		return true, nil
	case "block":
		f.mu.Lock()
		f.blocked[req.User] = req.On
		f.mu.Unlock()
		return true, nil
	case "stall":
		return f.stall(req.User), nil
	case "reset":
		return true, sc.ResetHistory(ctx, req.Channel)
	case "restart":
		return true, f.restart(ctx, req.NewEpoch)
	case "state":
		f.mu.Lock()
		defer f.mu.Unlock()
		return map[string]any{
			"sockets":  len(f.socks[req.User]),
			"closes":   append([]int{}, f.closes[req.User]...),
			"subCalls": f.subCalls[req.Channel],
		}, nil
	}
	return nil, fmt.Errorf("unknown control %q", op)
}

// restart replaces the server by a new one, on the same backend (history
// kept) or on a new one (every channel gets a new epoch), and shuts the
// old one down: its sockets are closed with 1012.
func (f *fixture) restart(ctx context.Context, newEpoch bool) error {
	if newEpoch {
		f.mu.Lock()
		f.be = newBackend()
		f.mu.Unlock()
	}
	srv, sc := f.newServer()
	f.mu.Lock()
	old, oldSc := f.srv, f.sc
	f.srv, f.sc = srv, sc
	f.mu.Unlock()
	if err := old.Shutdown(ctx); err != nil {
		return err
	}
	return oldSc.Close(ctx)
}

// stall makes the connections of user's sockets drop what the server
// writes from now on, as a network that lost the way back would: the
// client hears no heartbeat.
func (f *fixture) stall(user string) int {
	n := 0
	for _, s := range f.sockets(user) {
		f.mu.Lock()
		c := f.conns[s.Request().RemoteAddr]
		f.mu.Unlock()
		if c != nil {
			c.stalled.Store(true)
			n++
		}
	}
	return n
}

// flakyScaler fails the subscribes the test asked to fail.
type flakyScaler struct {
	*scaler.Memory
	f *fixture
}

func (s *flakyScaler) Subscribe(ctx context.Context, channel string) (protocol.UID, error) {
	s.f.mu.Lock()
	s.f.subCalls[channel]++
	fail := s.f.failSub[channel] > 0
	if fail {
		s.f.failSub[channel]--
	}
	s.f.mu.Unlock()
	if fail {
		return protocol.UID{}, errors.New("browsertest: backend unavailable on purpose")
	}
	return s.Memory.Subscribe(ctx, channel)
}

type stallListener struct {
	net.Listener
	f *fixture
}

func (l *stallListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	sc := &stallConn{Conn: c, f: l.f}
	l.f.mu.Lock()
	l.f.conns[c.RemoteAddr().String()] = sc
	l.f.mu.Unlock()
	return sc, nil
}

type stallConn struct {
	net.Conn
	f       *fixture
	stalled atomic.Bool
	once    sync.Once
}

func (c *stallConn) Write(b []byte) (int, error) {
	if c.stalled.Load() {
		return len(b), nil
	}
	return c.Conn.Write(b)
}

func (c *stallConn) Close() error {
	c.once.Do(func() {
		c.f.mu.Lock()
		if c.f.conns[c.RemoteAddr().String()] == c {
			delete(c.f.conns, c.RemoteAddr().String())
		}
		c.f.mu.Unlock()
	})
	return c.Conn.Close()
}
