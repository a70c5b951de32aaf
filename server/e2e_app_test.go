package server_test

// End-to-end test helpers: a test application around server.Server with a
// fixed set of ask and tell handlers and parsers (the raw client is in
// e2e_wire_test.go).

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sss-go/sss/protocol"
	"github.com/sss-go/sss/scaler"
	"github.com/sss-go/sss/server"
)

// e2eTimeout bounds every wait of these tests; it is a failure bound only,
// generous for a loaded 2-core machine running -race.
const e2eTimeout = 20 * time.Second

// e2eLogger returns a quiet logger, or one writing to stderr when
// SSS_E2E_LOG is set (server goroutines may log after a test ends, so the
// logger never writes to t).
func e2eLogger() *slog.Logger {
	if os.Getenv("SSS_E2E_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// e2eOptions returns the baseline options of these tests: heartbeats off
// (tests of heartbeats turn them on), a short shutdown spread so cleanup is
// fast, a quiet logger, and the test session and subscription parsers.
func e2eOptions() server.Options {
	return server.Options{
		SessionParser:      e2eSessionParser,
		SubscriptionParser: nil, // set by startE2E when nil (it records queries)
		HeartbeatInterval:  -1,
		ShutdownSpread:     50 * time.Millisecond,
		BootGrace:          300 * time.Millisecond,
		Logger:             e2eLogger(),
	}
}

// e2eSessionParser reads the session from the upgrade request's query:
// user=<id>, session=<id>, role=<value>; refuse=<message> refuses with a
// *protocol.Error; refuseplain=1 refuses with a plain error.
func e2eSessionParser(r *http.Request) (*server.Session, error) {
	q := r.URL.Query()
	if m := q.Get("refuse"); m != "" {
		return nil, &protocol.Error{Name: "Refused", Message: m}
	}
	if q.Get("refuseplain") != "" {
		return nil, errors.New("secret session detail")
	}
	s := &server.Session{User: q.Get("user"), SessionID: q.Get("session")}
	if role := q.Get("role"); role != "" {
		s.Values = map[string]any{"role": role}
	}
	return s, nil
}

// e2eTell is one client TELL seen by a tell handler.
type e2eTell struct {
	Topic  string
	Msg    string // raw JSON ("" when the handler got nil)
	Socket string
	User   string
}

// e2eApp is one server under test with its httptest front and handlers.
type e2eApp struct {
	t   *testing.T
	srv *server.Server
	hs  *httptest.Server
	url string // ws://127.0.0.1:port/
	sc  scaler.Scaler

	tells       chan e2eTell
	slowStarted chan string         // id of the socket of each slow ask that started
	slowEnded   chan string         // "cancelled" or "released" for each slow ask
	slowRelease chan struct{}       // closed to release every slow ask
	releaseOnce sync.Once           // guards slowRelease
	stuck       chan struct{}       // "stuck" asks ignore ctx and wait for this
	stuckOnce   sync.Once           // guards stuck
	queriesMu   sync.Mutex          // guards queries
	queries     map[string][]string // channel -> raw queries the subscription parser saw
}

// startE2E starts a server on sc (nil = the server's own memory scaler)
// behind an httptest server, registers the test handlers, and stops both at
// cleanup (the server first, then the scaler when the test passed one).
func startE2E(t *testing.T, sc scaler.Scaler, opts server.Options) *e2eApp {
	t.Helper()
	a := &e2eApp{
		t:           t,
		tells:       make(chan e2eTell, 4096),
		slowStarted: make(chan string, 256),
		slowEnded:   make(chan string, 256),
		slowRelease: make(chan struct{}),
		stuck:       make(chan struct{}),
		queries:     map[string][]string{},
	}
	if opts.SubscriptionParser == nil {
		opts.SubscriptionParser = a.subscriptionParser
	}
	srv, err := server.New(context.Background(), sc, opts)
	if err != nil {
		t.Fatalf("server.New: %v", err)
	}
	a.srv = srv
	a.sc = srv.Scaler()
	if a.sc == nil {
		t.Fatal("Server.Scaler() returned nil")
	}
	a.registerHandlers()
	a.hs = httptest.NewServer(srv)
	a.url = "ws" + strings.TrimPrefix(a.hs.URL, "http") + "/"
	t.Cleanup(func() {
		a.release()
		a.unstick()
		ctx, cancel := context.WithTimeout(context.Background(), e2eTimeout)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("cleanup: Shutdown: %v", err)
		}
		a.hs.Close()
		if sc != nil {
			if err := sc.Close(ctx); err != nil {
				t.Errorf("cleanup: scaler Close: %v", err)
			}
		}
	})
	return a
}

// release lets every slow ask answer.
func (a *e2eApp) release() { a.releaseOnce.Do(func() { close(a.slowRelease) }) }

// unstick lets every stuck ask return.
func (a *e2eApp) unstick() { a.stuckOnce.Do(func() { close(a.stuck) }) }

// subscriptionParser refuses "forbidden" (a *protocol.Error without code),
// "coded-refuse" (with code "custom_code") and "broken-parser" (a plain
// error); it records every query it sees.
func (a *e2eApp) subscriptionParser(ctx context.Context, sock *server.Socket, channel string, query json.RawMessage) (*server.ChannelOptions, error) {
	a.queriesMu.Lock()
	q := "<nil>"
	if query != nil {
		q = string(query)
	}
	a.queries[channel] = append(a.queries[channel], q)
	a.queriesMu.Unlock()
	switch channel {
	case "forbidden":
		return nil, &protocol.Error{Name: "Forbidden", Message: "not for you"}
	case "coded-refuse":
		return nil, &protocol.Error{Name: "Custom", Message: "custom refusal", Code: "custom_code"}
	case "broken-parser":
		return nil, errors.New("secret parser detail")
	case "dynpres":
		return &server.ChannelOptions{Presence: true}, nil
	case "dynsmall":
		return &server.ChannelOptions{MaxSubscribers: 1}, nil
	}
	return nil, nil
}

// queriesOf returns the queries the subscription parser saw for channel.
func (a *e2eApp) queriesOf(channel string) []string {
	a.queriesMu.Lock()
	defer a.queriesMu.Unlock()
	return append([]string(nil), a.queries[channel]...)
}

// e2ePubRequest is the msg of the "pub" ask and tell: publish from the
// socket's handler, excluding it when Exclude is set.
type e2ePubRequest struct {
	Channel string          `json:"channel"`
	Topic   string          `json:"topic"`
	Msg     json.RawMessage `json:"msg"`
	Exclude bool            `json:"exclude"`
}

func (a *e2eApp) registerHandlers() {
	s := a.srv
	s.HandleAsk("echo", func(ctx context.Context, sock *server.Socket, msg json.RawMessage) (any, error) {
		if msg == nil {
			return nil, nil
		}
		return msg, nil
	})
	s.HandleAsk("whoami", func(ctx context.Context, sock *server.Socket, msg json.RawMessage) (any, error) {
		role, _ := sock.Value("role").(string)
		cookie := ""
		if ck, err := sock.Request().Cookie("sid"); err == nil {
			cookie = ck.Value
		}
		return map[string]any{"id": sock.ID(), "user": sock.User(), "session": sock.SessionID(), "role": role,
			"subs": sock.Subscriptions(), "cookie": cookie}, nil
	})
	s.HandleAsk("html", func(ctx context.Context, sock *server.Socket, msg json.RawMessage) (any, error) {
		return map[string]string{"a": "<b>&"}, nil
	})
	s.HandleAsk("len", func(ctx context.Context, sock *server.Socket, msg json.RawMessage) (any, error) {
		return len(msg), nil
	})
	s.HandleAsk("fail", func(ctx context.Context, sock *server.Socket, msg json.RawMessage) (any, error) {
		return nil, errors.New("secret handler detail")
	})
	s.HandleAsk("panic", func(ctx context.Context, sock *server.Socket, msg json.RawMessage) (any, error) {
		panic("secret panic detail")
	})
	s.HandleAsk("apperr", func(ctx context.Context, sock *server.Socket, msg json.RawMessage) (any, error) {
		return nil, &protocol.Error{Name: "Nope", Message: "nope says the app"}
	})
	s.HandleAsk("coded", func(ctx context.Context, sock *server.Socket, msg json.RawMessage) (any, error) {
		return nil, fmt.Errorf("wrapped: %w", &protocol.Error{Name: "Teapot", Message: "short and stout", Code: "teapot"})
	})
	s.HandleAsk("slow", func(ctx context.Context, sock *server.Socket, msg json.RawMessage) (any, error) {
		a.slowStarted <- sock.ID()
		select {
		case <-ctx.Done():
			a.slowEnded <- "cancelled"
			return nil, ctx.Err()
		case <-a.slowRelease:
			a.slowEnded <- "released"
			return "slow done", nil
		}
	})
	s.HandleAsk("stuck", func(ctx context.Context, sock *server.Socket, msg json.RawMessage) (any, error) {
		a.slowStarted <- sock.ID()
		<-a.stuck
		return "unstuck", nil
	})
	s.HandleAsk("tellme", func(ctx context.Context, sock *server.Socket, msg json.RawMessage) (any, error) {
		if err := sock.Tell("told", msg); err != nil {
			return nil, err
		}
		return "ok", nil
	})
	s.HandleAsk("pub", func(ctx context.Context, sock *server.Socket, msg json.RawMessage) (any, error) {
		uid, err := a.pub(ctx, sock, msg)
		if err != nil {
			return nil, err
		}
		return uid.String(), nil
	})
	// The same from a tell handler, on the socket's handler goroutine.
	s.HandleTell("pub", func(ctx context.Context, sock *server.Socket, msg json.RawMessage) {
		if _, err := a.pub(ctx, sock, msg); err != nil {
			a.t.Errorf("tell pub: %v", err)
		}
	})
	for _, topic := range []string{"post", "nothing"} {
		s.HandleTell(topic, func(ctx context.Context, sock *server.Socket, msg json.RawMessage) {
			tl := e2eTell{Topic: topic, Socket: sock.ID(), User: sock.User()}
			if msg != nil {
				tl.Msg = string(msg)
			}
			select {
			case a.tells <- tl:
			default:
			}
		})
	}
}

// pub publishes an e2ePubRequest from sock's handlers.
func (a *e2eApp) pub(ctx context.Context, sock *server.Socket, msg json.RawMessage) (protocol.UID, error) {
	var req e2ePubRequest
	if err := json.Unmarshal(msg, &req); err != nil {
		return protocol.UID{}, err
	}
	var opts server.PublishOptions
	if req.Exclude {
		opts.Exclude = sock
	}
	return a.srv.Publish(ctx, req.Channel, req.Topic, req.Msg, opts)
}

// publish publishes msg (raw JSON) from the server and returns the uid.
func (a *e2eApp) publish(channel, topic, msg string) protocol.UID {
	a.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), e2eTimeout)
	defer cancel()
	uid, err := a.srv.Publish(ctx, channel, topic, json.RawMessage(msg), server.PublishOptions{})
	if err != nil {
		a.t.Fatalf("Publish(%q): %v", channel, err)
	}
	return uid
}

// position returns the scaler's current position of channel.
func (a *e2eApp) position(channel string) protocol.UID {
	a.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), e2eTimeout)
	defer cancel()
	pos, err := a.sc.Position(ctx, channel)
	if err != nil {
		a.t.Fatalf("Position(%q): %v", channel, err)
	}
	return pos
}

// faults returns the scaler's fault injector.
func (a *e2eApp) faults() scaler.FaultInjector {
	a.t.Helper()
	fi, ok := a.sc.(scaler.FaultInjector)
	if !ok {
		a.t.Fatalf("scaler %T does not implement scaler.FaultInjector", a.sc)
	}
	return fi
}

// waitTell waits for the next client TELL seen by a tell handler.
func (a *e2eApp) waitTell() e2eTell {
	a.t.Helper()
	select {
	case tl := <-a.tells:
		return tl
	case <-time.After(e2eTimeout):
		a.t.Fatal("no TELL reached a tell handler")
		return e2eTell{}
	}
}

// waitSlowStarted waits until a slow or stuck ask handler runs.
func (a *e2eApp) waitSlowStarted() {
	a.t.Helper()
	select {
	case <-a.slowStarted:
	case <-time.After(e2eTimeout):
		a.t.Fatal("slow ask handler never started")
	}
}
