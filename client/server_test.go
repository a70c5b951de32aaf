package client_test

// Tests against the real server package over loopback (httptest) with the
// real in-memory scaler.

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sss-go/sss/client"
	"github.com/sss-go/sss/internal/testutil"
	"github.com/sss-go/sss/protocol"
	"github.com/sss-go/sss/scaler"
	"github.com/sss-go/sss/server"
)

func TestMain(m *testing.M) { testutil.Main(m) }

// wait bounds every wait of these tests: a failure bound only.
const wait = 20 * time.Second

func quiet() *slog.Logger {
	if os.Getenv("SSS_CLIENT_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// serverOpts: user from ?user=, heartbeats off, fast shutdown.
func serverOpts() server.Options {
	return server.Options{
		SessionParser: func(r *http.Request) (*server.Session, error) {
			q := r.URL.Query()
			if m := q.Get("refuse"); m != "" {
				return nil, &protocol.Error{Name: "Refused", Message: m, Code: "refused"}
			}
			return &server.Session{User: q.Get("user"), SessionID: q.Get("session")}, nil
		},
		HeartbeatInterval: -1,
		ShutdownSpread:    20 * time.Millisecond,
		BootGrace:         300 * time.Millisecond,
		Logger:            quiet(),
	}
}

type testServer struct {
	srv  *server.Server
	ts   *httptest.Server
	addr string // host:port
}

func (s *testServer) url(query string) string {
	u := "ws://" + s.addr + "/"
	if query != "" {
		u += "?" + query
	}
	return u
}

func startServer(t *testing.T, sc scaler.Scaler, opts server.Options) *testServer {
	t.Helper()
	srv, err := server.New(context.Background(), sc, opts)
	if err != nil {
		t.Fatalf("server.New: %v", err)
	}
	ts := httptest.NewServer(srv)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		defer cancel()
		_ = srv.Shutdown(ctx)
		ts.Close()
	})
	return &testServer{srv: srv, ts: ts, addr: strings.TrimPrefix(ts.URL, "http://")}
}

func clientOpts() client.Options {
	return client.Options{
		ReconnectBase: 5 * time.Millisecond,
		ReconnectCap:  50 * time.Millisecond,
		CloseTimeout:  3 * time.Second,
		Logger:        quiet(),
	}
}

func dial(t *testing.T, url string, opts client.Options) *client.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	c, err := client.Dial(ctx, url, opts)
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	t.Cleanup(func() {
		_ = c.Close()
		<-c.Done()
	})
	return c
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	t.Cleanup(cancel)
	return ctx
}

func recv[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(wait):
		t.Fatalf("timed out waiting for %s", what)
		var zero T
		return zero
	}
}

func TestAsk(t *testing.T) {
	testutil.CheckLeaks(t)
	s := startServer(t, nil, serverOpts())
	s.srv.HandleAsk("echo", func(ctx context.Context, sock *server.Socket, msg json.RawMessage) (any, error) {
		return msg, nil
	})
	s.srv.HandleAsk("apperr", func(ctx context.Context, sock *server.Socket, msg json.RawMessage) (any, error) {
		return nil, &protocol.Error{Name: "Nope", Message: "not today", Code: "nope"}
	})
	s.srv.HandleAsk("fail", func(ctx context.Context, sock *server.Socket, msg json.RawMessage) (any, error) {
		return nil, errors.New("secret detail")
	})
	c := dial(t, s.url(""), clientOpts())
	ctx := ctxT(t)

	for _, tc := range []struct {
		name string
		msg  any
		want string
	}{
		{"object", map[string]any{"a": 1, "b": []any{true, nil, "x<&>"}}, `{"a":1,"b":[true,null,"x<&>"]}`},
		{"string", "hello", `"hello"`},
		{"nil", nil, `null`},
		{"raw", json.RawMessage(`[1,2.5]`), `[1,2.5]`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got json.RawMessage
			if err := c.Ask(ctx, "echo", tc.msg, &got); err != nil {
				t.Fatal(err)
			}
			if string(got) != tc.want {
				t.Errorf("reply %s, want %s", got, tc.want)
			}
		})
	}
	t.Run("typed reply", func(t *testing.T) {
		var got struct{ A int }
		if err := c.Ask(ctx, "echo", map[string]int{"a": 7}, &got); err != nil || got.A != 7 {
			t.Fatalf("got %+v, %v", got, err)
		}
	})
	for _, tc := range []struct{ topic, code string }{
		{"nosuch", protocol.CodeUnknownTopic},
		{"apperr", "nope"},
		{"fail", protocol.CodeInternal},
	} {
		t.Run("error "+tc.topic, func(t *testing.T) {
			err := c.Ask(ctx, tc.topic, nil, nil)
			var perr *protocol.Error
			var serr *client.ServerError
			if !errors.As(err, &perr) || !errors.As(err, &serr) {
				t.Fatalf("Ask error %v (%T) is not a server error", err, err)
			}
			if perr.Code != tc.code || serr.Code() != tc.code {
				t.Errorf("code %q, want %q", perr.Code, tc.code)
			}
			if tc.topic == "fail" && strings.Contains(perr.Message, "secret") {
				t.Errorf("internal details leaked: %q", perr.Message)
			}
		})
	}
	t.Run("context", func(t *testing.T) {
		release := make(chan struct{})
		defer close(release)
		s.srv.HandleAsk("block", func(ctx context.Context, sock *server.Socket, msg json.RawMessage) (any, error) {
			select {
			case <-release:
			case <-ctx.Done():
			}
			return nil, nil
		})
		actx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
		defer cancel()
		err := c.Ask(actx, "block", nil, nil)
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Ask = %v, want deadline exceeded", err)
		}
		// The client still works after an abandoned ask.
		var got string
		if err := c.Ask(ctx, "echo", "again", &got); err != nil || got != "again" {
			t.Fatalf("Ask after timeout: %q %v", got, err)
		}
	})
}

func TestTellAndServerTells(t *testing.T) {
	testutil.CheckLeaks(t)
	opts := serverOpts()
	opened := make(chan *server.Socket, 1)
	opts.OnOpen = func(sock *server.Socket) { opened <- sock }
	s := startServer(t, nil, opts)
	fromClient := make(chan string, 1)
	s.srv.HandleTell("ping", func(ctx context.Context, sock *server.Socket, msg json.RawMessage) {
		fromClient <- string(msg)
		_ = sock.Tell("pong", msg)
	})
	tells := make(chan string, 16)
	broadcasts := make(chan string, 16)
	co := clientOpts()
	co.Setup = func(c *client.Client) {
		for _, topic := range []string{"pong", "user", "session", "socket"} {
			c.OnTell(topic, func(msg json.RawMessage) { tells <- topic + " " + string(msg) })
		}
		c.OnBroadcast("news", func(msg json.RawMessage) { broadcasts <- string(msg) })
	}
	c := dial(t, s.url("user=bob&session=s1"), co)
	sock := recv(t, opened, "socket")
	ctx := ctxT(t)

	if err := c.Tell(ctx, "ping", map[string]int{"n": 1}); err != nil {
		t.Fatal(err)
	}
	if got := recv(t, fromClient, "tell at the server"); got != `{"n":1}` {
		t.Errorf("server got %s", got)
	}
	if got := recv(t, tells, "pong"); got != `pong {"n":1}` {
		t.Errorf("client got %q", got)
	}
	for _, tc := range []struct {
		name string
		send func() error
		want string
	}{
		{"user", func() error { return s.srv.TellUser(ctx, "bob", "user", 1) }, "user 1"},
		{"session", func() error { return s.srv.TellSession(ctx, "s1", "session", 2) }, "session 2"},
		{"socket", func() error { return s.srv.TellSocket(ctx, sock.ID(), "socket", 3) }, "socket 3"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.send(); err != nil {
				t.Fatal(err)
			}
			if got := recv(t, tells, tc.name); got != tc.want {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
	t.Run("broadcast", func(t *testing.T) {
		if err := s.srv.Broadcast(ctx, "news", "hi all"); err != nil {
			t.Fatal(err)
		}
		if got := recv(t, broadcasts, "broadcast"); got != `"hi all"` {
			t.Errorf("got %s", got)
		}
	})
	t.Run("error frame", func(t *testing.T) {
		errs := make(chan error, 1)
		c.OnError(func(err error) { errs <- err })
		if err := c.Tell(ctx, "nohandler", nil); err != nil {
			t.Fatal(err)
		}
		var perr *protocol.Error
		if err := recv(t, errs, "error frame"); !errors.As(err, &perr) || perr.Code != protocol.CodeUnknownTopic {
			t.Errorf("OnError got %v", err)
		}
	})
}

func TestPresence(t *testing.T) {
	testutil.CheckLeaks(t)
	opts := serverOpts()
	opts.Channels = []server.ChannelRule{{Pattern: "room*", Options: server.ChannelOptions{Presence: true}}}
	s := startServer(t, nil, opts)
	events := make(chan client.PresenceEvent, 16)
	co := clientOpts()
	co.Setup = func(c *client.Client) { c.OnPresence(func(e client.PresenceEvent) { events <- e }) }
	a := dial(t, s.url("user=ann"), co)
	ctx := ctxT(t)
	if _, err := a.Subscribe(ctx, "room1", nil); err != nil {
		t.Fatal(err)
	}
	b := dial(t, s.url("user=ben"), clientOpts())
	if _, err := b.Subscribe(ctx, "room1", nil); err != nil {
		t.Fatal(err)
	}
	// Ann may see her own join first; wait for Ben's.
	for {
		e := recv(t, events, "join")
		if e.Member.User == "ben" {
			if e.Channel != "room1" || e.Event != "join" {
				t.Fatalf("event %+v", e)
			}
			break
		}
	}
	_ = b.Close()
	for {
		e := recv(t, events, "leave")
		if e.Member.User == "ben" && e.Event == "leave" {
			break
		}
	}
}

func TestSubscribe(t *testing.T) {
	testutil.CheckLeaks(t)
	opts := serverOpts()
	opts.SubscriptionParser = func(ctx context.Context, sock *server.Socket, channel string, query json.RawMessage) (*server.ChannelOptions, error) {
		if channel == "secret" {
			return nil, &protocol.Error{Name: "Forbidden", Message: "no", Code: "no_access"}
		}
		return nil, nil
	}
	s := startServer(t, nil, opts)
	c := dial(t, s.url(""), clientOpts())
	ctx := ctxT(t)

	t.Run("shared", func(t *testing.T) {
		s1, err := c.Subscribe(ctx, "news", map[string]string{"lang": "en"})
		if err != nil {
			t.Fatal(err)
		}
		s2, err := c.Subscribe(ctx, "news", nil)
		if err != nil {
			t.Fatal(err)
		}
		got1 := make(chan string, 8)
		got2 := make(chan string, 8)
		s1.On("t", func(msg json.RawMessage, uid string) { got1 <- string(msg) + "@" + uid })
		s2.On("", func(msg json.RawMessage, uid string) { got2 <- string(msg) + "@" + uid })
		u, err := s.srv.Publish(ctx, "news", "t", 1, server.PublishOptions{})
		if err != nil {
			t.Fatal(err)
		}
		want := "1@" + u.String()
		if g := recv(t, got1, "s1"); g != want {
			t.Errorf("s1 got %s, want %s", g, want)
		}
		if g := recv(t, got2, "s2"); g != want {
			t.Errorf("s2 got %s, want %s", g, want)
		}
		if s1.Status() != client.SubActive || s1.LastUID() != u.String() {
			t.Errorf("s1 status %v last %s", s1.Status(), s1.LastUID())
		}
		s1.Unsubscribe()
		if s1.Status() != client.SubUnsubscribed {
			t.Errorf("status after Unsubscribe %v", s1.Status())
		}
		u2, _ := s.srv.Publish(ctx, "news", "t", 2, server.PublishOptions{})
		if g := recv(t, got2, "s2 after s1 left"); g != "2@"+u2.String() {
			t.Errorf("s2 got %s", g)
		}
		if chs := s.srv.Channels(); len(chs) != 1 || chs[0] != "news" {
			t.Errorf("server channels %v, want [news] (one local subscription left)", chs)
		}
		s2.Unsubscribe()
		testutil.WaitFor(t, wait, func() bool { return len(s.srv.Channels()) == 0 }, "server subscription to end")
		select {
		case g := <-got1:
			t.Errorf("unsubscribed s1 got %s", g)
		default:
		}
	})
	t.Run("refused", func(t *testing.T) {
		_, err := c.Subscribe(ctx, "secret", nil)
		var perr *protocol.Error
		if !errors.Is(err, client.ErrSubscriptionRefused) || !errors.As(err, &perr) || perr.Code != "no_access" {
			t.Fatalf("Subscribe = %v", err)
		}
	})
	for _, name := range []string{"", "_user.x", "_x"} {
		t.Run("reserved "+name, func(t *testing.T) {
			if _, err := c.Subscribe(ctx, name, nil); !errors.Is(err, client.ErrReservedChannel) {
				t.Fatalf("Subscribe(%q) = %v", name, err)
			}
		})
	}
	t.Run("bad name", func(t *testing.T) {
		_, err := c.Subscribe(ctx, "a b", nil)
		var perr *protocol.Error
		if !errors.As(err, &perr) || perr.Code != protocol.CodeBadChannel {
			t.Fatalf("Subscribe = %v", err)
		}
	})
	t.Run("concurrent", func(t *testing.T) {
		var wg sync.WaitGroup
		subs := make([]*client.Subscription, 8)
		errs := make([]error, 8)
		for i := range subs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				subs[i], errs[i] = c.Subscribe(ctx, "busy", nil)
			}()
		}
		wg.Wait()
		got := make(chan struct{}, 16)
		for i, sub := range subs {
			if errs[i] != nil {
				t.Fatal(errs[i])
			}
			sub.On("x", func(json.RawMessage, string) { got <- struct{}{} })
		}
		if _, err := s.srv.Publish(ctx, "busy", "x", nil, server.PublishOptions{}); err != nil {
			t.Fatal(err)
		}
		for range subs {
			recv(t, got, "delivery to each subscription")
		}
	})
}

func TestUserSubscription(t *testing.T) {
	testutil.CheckLeaks(t)
	s := startServer(t, nil, serverOpts())
	anon := dial(t, s.url(""), clientOpts())
	if anon.UserSubscription() != nil {
		t.Error("anonymous client has a user subscription")
	}
	c := dial(t, s.url("user=carol"), clientOpts())
	us := c.UserSubscription()
	if us == nil || us.Channel() != protocol.UserChannel("carol") {
		t.Fatalf("user subscription %v", us)
	}
	got := make(chan string, 1)
	us.On("dm", func(msg json.RawMessage, uid string) { got <- string(msg) })
	if _, err := s.srv.Publish(ctxT(t), server.UserChannel("carol"), "dm", "hi carol", server.PublishOptions{}); err != nil {
		t.Fatal(err)
	}
	if g := recv(t, got, "user channel publication"); g != `"hi carol"` {
		t.Errorf("got %s", g)
	}
}

// statusLog records status changes in order.
type statusLog struct {
	mu  sync.Mutex
	got []client.Status
	ch  chan client.Status
}

func newStatusLog() *statusLog { return &statusLog{ch: make(chan client.Status, 64)} }

func (l *statusLog) fn(s, old client.Status) {
	l.mu.Lock()
	l.got = append(l.got, s)
	l.mu.Unlock()
	l.ch <- s
}

func (l *statusLog) waitFor(t *testing.T, want client.Status) {
	t.Helper()
	for {
		if s := recv(t, l.ch, "status "+want.String()); s == want {
			return
		}
	}
}

func TestStatusesAndClose(t *testing.T) {
	testutil.CheckLeaks(t)
	opts := serverOpts()
	closed := make(chan int, 1)
	opts.OnClose = func(sock *server.Socket, code int, reason string) { closed <- code }
	s := startServer(t, nil, opts)
	log := newStatusLog()
	co := clientOpts()
	co.Setup = func(c *client.Client) { c.OnStatusChange(log.fn) }
	c := dial(t, s.url(""), co)
	sub, err := c.Subscribe(ctxT(t), "room", nil)
	if err != nil {
		t.Fatal(err)
	}
	subStatus := make(chan client.SubStatus, 8)
	sub.OnStatusChange(func(st, old client.SubStatus, err error) { subStatus <- st })
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if code := recv(t, closed, "server close"); code != protocol.CloseByClient {
		t.Errorf("server saw close %d, want 4000", code)
	}
	<-c.Done()
	log.mu.Lock()
	got := append([]client.Status(nil), log.got...)
	log.mu.Unlock()
	want := []client.Status{client.StatusStarting, client.StatusBeginning, client.StatusReady, client.StatusClosed}
	if len(got) != len(want) {
		t.Fatalf("statuses %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("statuses %v, want %v", got, want)
		}
	}
	if st := recv(t, subStatus, "sub status"); st != client.SubClosed {
		t.Errorf("subscription status %v, want closed", st)
	}
	if err := c.Ask(context.Background(), "x", nil, nil); !errors.Is(err, client.ErrClosed) {
		t.Errorf("Ask after Close = %v", err)
	}
	if _, err := c.Subscribe(context.Background(), "x", nil); !errors.Is(err, client.ErrClosed) {
		t.Errorf("Subscribe after Close = %v", err)
	}
	// No reconnection (Done means the client's goroutines are gone): the
	// server ends with no socket.
	testutil.WaitFor(t, wait, func() bool { return s.srv.Stats().Sockets == 0 }, "no socket left")
	if err := c.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

func TestBoot(t *testing.T) {
	testutil.CheckLeaks(t)
	s := startServer(t, nil, serverOpts())
	reasons := make(chan string, 1)
	co := clientOpts()
	co.Setup = func(c *client.Client) { c.OnBoot(func(r string) { reasons <- r }) }
	c := dial(t, s.url("user=dave"), co)
	if err := s.srv.BootUser(ctxT(t), "dave", "bye dave"); err != nil {
		t.Fatal(err)
	}
	if r := recv(t, reasons, "boot"); r != "bye dave" {
		t.Errorf("boot reason %q", r)
	}
	<-c.Done()
	if c.Status() != client.StatusBooted || !errors.Is(c.Err(), client.ErrBooted) {
		t.Errorf("status %v err %v", c.Status(), c.Err())
	}
	testutil.WaitFor(t, wait, func() bool { return s.srv.Stats().Sockets == 0 }, "server to drop the socket")
	if n := s.srv.Stats().Sockets; n != 0 {
		t.Errorf("client reconnected after boot: %d sockets", n)
	}
}

func TestDialRefused(t *testing.T) {
	testutil.CheckLeaks(t)
	s := startServer(t, nil, serverOpts())
	opts403 := serverOpts()
	opts403.RefuseWithHTTP403 = true
	s403 := startServer(t, nil, opts403)
	for _, tc := range []struct{ name, url string }{
		{"close 4001", s.url("refuse=go+away")},
		{"http 403", s403.url("refuse=go+away")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			co := clientOpts()
			co.ReconnectAttempts = 0 // forever: a refusal must still end Dial
			_, err := client.Dial(ctxT(t), tc.url, co)
			if !errors.Is(err, client.ErrRefused) {
				t.Fatalf("Dial = %v, want ErrRefused", err)
			}
		})
	}
	t.Run("attempts exhausted", func(t *testing.T) {
		co := clientOpts()
		co.ReconnectAttempts = 2
		_, err := client.Dial(ctxT(t), "ws://"+deadAddr(t)+"/", co)
		if !errors.Is(err, client.ErrStartFailed) {
			t.Fatalf("Dial = %v, want ErrStartFailed", err)
		}
	})
	t.Run("context", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		_, err := client.Dial(ctx, "ws://"+deadAddr(t)+"/", clientOpts())
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Dial = %v, want deadline exceeded", err)
		}
	})
}

// deadAddr returns a loopback address where nothing listens.
func deadAddr(t *testing.T) string {
	return "127.0.0.1:" + strconv.Itoa(testutil.FreePort(t))
}

// TestDialOptions: headers, cookies (Jar) and TLS reach the session parser.
func TestDialOptions(t *testing.T) {
	testutil.CheckLeaks(t)
	opts := serverOpts()
	opts.SessionParser = func(r *http.Request) (*server.Session, error) {
		sid := ""
		if ck, err := r.Cookie("sid"); err == nil {
			sid = ck.Value
		}
		return &server.Session{User: r.Header.Get("X-User"), SessionID: sid}, nil
	}
	srv, err := server.New(context.Background(), nil, opts)
	if err != nil {
		t.Fatal(err)
	}
	srv.HandleAsk("whoami", func(ctx context.Context, sock *server.Socket, msg json.RawMessage) (any, error) {
		return sock.User() + "/" + sock.SessionID(), nil
	})
	ts := httptest.NewTLSServer(srv)
	t.Cleanup(func() {
		_ = srv.Shutdown(context.Background())
		ts.Close()
	})
	u, _ := url.Parse(ts.URL)
	jar, _ := cookiejar.New(nil)
	jar.SetCookies(u, []*http.Cookie{{Name: "sid", Value: "sess-42"}})
	co := clientOpts()
	co.Header = http.Header{"X-User": {"frank"}}
	co.Jar = jar
	co.TLSConfig = ts.Client().Transport.(*http.Transport).TLSClientConfig
	c := dial(t, "wss://"+u.Host+"/", co)
	var who string
	if err := c.Ask(ctxT(t), "whoami", nil, &who); err != nil {
		t.Fatal(err)
	}
	if who != "frank/sess-42" {
		t.Errorf("server saw %q, want frank/sess-42", who)
	}
	if us := c.UserSubscription(); us == nil || us.Channel() != protocol.UserChannel("frank") {
		t.Errorf("user subscription %v", us)
	}
	t.Run("bad scheme", func(t *testing.T) {
		if _, err := client.Dial(ctxT(t), "http://"+u.Host+"/", co); err == nil {
			t.Error("Dial accepted an http:// URL")
		}
	})
}

// TestCloseWaitsForCallbacks: Close returns only once the callback
// goroutine is gone (no goroutine of the client left), except when called
// from a callback, where waiting would deadlock.
func TestCloseWaitsForCallbacks(t *testing.T) {
	testutil.CheckLeaks(t)
	s := startServer(t, nil, serverOpts())

	t.Run("from outside", func(t *testing.T) {
		started, release := make(chan struct{}), make(chan struct{})
		var releaseOnce sync.Once
		unblock := func() { releaseOnce.Do(func() { close(release) }) }
		co := clientOpts()
		co.Setup = func(c *client.Client) {
			c.OnTell("block", func(json.RawMessage) {
				close(started)
				<-release
			})
		}
		c := dial(t, s.url("user=waiter"), co)
		t.Cleanup(unblock) // runs before dial's cleanup: a failed check must not leave the callback blocked
		if err := s.srv.TellUser(ctxT(t), "waiter", "block", nil); err != nil {
			t.Fatal(err)
		}
		recv(t, started, "callback start")
		closed := make(chan struct{})
		go func() { _ = c.Close(); close(closed) }()
		select {
		case <-closed:
			t.Fatal("Close returned while a callback was still running")
		case <-c.Done():
			t.Fatal("Done closed while a callback was still running")
		case <-time.After(100 * time.Millisecond): // a bound on a non-event
		}
		unblock()
		recv(t, closed, "Close to return")
		select {
		case <-c.Done():
		default:
			t.Fatal("Close returned before the callback goroutine ended")
		}
	})

	t.Run("from a callback", func(t *testing.T) {
		closedIn := make(chan struct{})
		co := clientOpts()
		var cl *client.Client
		co.Setup = func(c *client.Client) {
			cl = c
			c.OnTell("close", func(json.RawMessage) {
				_ = cl.Close()
				close(closedIn)
			})
		}
		c := dial(t, s.url("user=closer"), co)
		if err := s.srv.TellUser(ctxT(t), "closer", "close", nil); err != nil {
			t.Fatal(err)
		}
		recv(t, closedIn, "Close inside a callback to return")
		recv(t, c.Done(), "Done")
	})
}
