package server_test

// End-to-end test helpers: a raw WebSocket client speaking the wire protocol
// byte for byte (PROTOCOL.md), and a test application around server.Server
// with a fixed set of ask and tell handlers and parsers.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"

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
	srv, err := server.New(sc, opts)
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

// e2ePubRequest is the msg of the "pub" ask: publish from the socket,
// excluding it when Exclude is set.
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
		var req e2ePubRequest
		if err := json.Unmarshal(msg, &req); err != nil {
			return nil, err
		}
		var opts server.PublishOptions
		if req.Exclude {
			opts.Exclude = sock
		}
		uid, err := s.Publish(ctx, req.Channel, req.Topic, req.Msg, opts)
		if err != nil {
			return nil, err
		}
		return uid.String(), nil
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

// e2eWaitFor polls cond until it holds or the timeout ends; for state the
// test does not control (e.g. control messages crossing the scaler).
func e2eWaitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(e2eTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond) // polling interval, not synchronisation
	}
}

// ---- the raw client ----

// e2eFrame is one data frame the client received.
type e2eFrame struct {
	typ  int
	data []byte
}

// e2eConn is a raw protocol client: it sends frames as given and exposes
// every frame the server sends, in order. A reader goroutine answers "h"
// when answerH is set (the default) and counts heartbeats.
type e2eConn struct {
	t  *testing.T
	ws *websocket.Conn

	wmu     sync.Mutex // serialises data writes
	frames  chan e2eFrame
	done    chan struct{} // closed when the reader stops
	answerH atomic.Bool
	hbCount atomic.Int64
	hb      chan struct{} // one token per heartbeat (dropped when full)
	nextID  atomic.Int64
	paused  atomic.Pointer[chan struct{}] // set while reading is paused
	pongs   chan string                   // payloads of pongs received
	hbMu    sync.Mutex                    // guards hbTimes
	hbTimes []time.Time                   // arrival of each heartbeat

	// Set before done is closed.
	closeCode int       // close code of the server's close frame, 1006 if none
	closeText string    // its reason
	readErr   error     // the error that ended the reader
	closedAt  time.Time // when the reader saw the close
}

// dial connects to the app with the given raw query string (may be "").
func (a *e2eApp) dial(t *testing.T, query string) *e2eConn {
	t.Helper()
	c, resp, err := a.dialRaw(t, query, nil)
	if err != nil {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		t.Fatalf("dial %s?%s: %v (HTTP %d)", a.url, query, err, status)
	}
	return c
}

// dialRaw connects and returns the handshake response and error as they are.
func (a *e2eApp) dialRaw(t *testing.T, query string, hdr http.Header) (*e2eConn, *http.Response, error) {
	t.Helper()
	return e2eDialURL(t, a.url, query, hdr)
}

// e2eDialOpts tunes e2eDialURL.
type e2eDialOpts struct {
	compression bool // offer permessage-deflate
}

func e2eDialURL(t *testing.T, base, query string, hdr http.Header, opts ...e2eDialOpts) (*e2eConn, *http.Response, error) {
	t.Helper()
	u := base
	if query != "" {
		u += "?" + query
	}
	var o e2eDialOpts
	if len(opts) > 0 {
		o = opts[0]
	}
	d := websocket.Dialer{HandshakeTimeout: e2eTimeout, EnableCompression: o.compression}
	ws, resp, err := d.Dial(u, hdr)
	if err != nil {
		return nil, resp, err
	}
	c := &e2eConn{
		t:      t,
		ws:     ws,
		frames: make(chan e2eFrame, 1<<16),
		done:   make(chan struct{}),
		hb:     make(chan struct{}, 1024),
		pongs:  make(chan string, 16),
	}
	c.answerH.Store(true)
	// Record the server's close frame without answering it, so tests see
	// whether the server itself closes the TCP connection.
	ws.SetCloseHandler(func(code int, text string) error { return nil })
	ws.SetPongHandler(func(data string) error {
		select {
		case c.pongs <- data:
		default:
		}
		return nil
	})
	go c.readLoop()
	t.Cleanup(func() {
		c.resumeReads()
		_ = ws.Close()
		<-c.done
	})
	return c, resp, nil
}

// pauseReads stops the reader before its next read, so the server's writes
// back up (the reader may still finish the read it is in).
func (c *e2eConn) pauseReads() {
	ch := make(chan struct{})
	c.paused.Store(&ch)
}

// resumeReads lets the reader go on.
func (c *e2eConn) resumeReads() {
	if ch := c.paused.Swap(nil); ch != nil {
		close(*ch)
	}
}

func (c *e2eConn) readLoop() {
	defer close(c.done)
	for {
		if ch := c.paused.Load(); ch != nil {
			<-*ch
		}
		typ, data, err := c.ws.ReadMessage()
		if err != nil {
			var ce *websocket.CloseError
			if errors.As(err, &ce) {
				c.closeCode, c.closeText = ce.Code, ce.Text
			} else {
				c.closeCode = websocket.CloseAbnormalClosure
			}
			c.readErr = err
			c.closedAt = time.Now()
			return
		}
		if typ == websocket.TextMessage && string(data) == protocol.Heartbeat {
			c.hbMu.Lock()
			c.hbTimes = append(c.hbTimes, time.Now())
			c.hbMu.Unlock()
			c.hbCount.Add(1)
			select {
			case c.hb <- struct{}{}:
			default:
			}
			if c.answerH.Load() {
				c.wmu.Lock()
				_ = c.ws.WriteMessage(websocket.TextMessage, []byte(protocol.Heartbeat))
				c.wmu.Unlock()
			}
			continue
		}
		c.frames <- e2eFrame{typ: typ, data: data}
	}
}

// send writes one text frame.
func (c *e2eConn) send(frame string) {
	c.t.Helper()
	c.sendType(websocket.TextMessage, []byte(frame))
}

// sendType writes one frame of the given type.
func (c *e2eConn) sendType(typ int, data []byte) {
	c.t.Helper()
	c.wmu.Lock()
	defer c.wmu.Unlock()
	_ = c.ws.SetWriteDeadline(time.Now().Add(e2eTimeout))
	if err := c.ws.WriteMessage(typ, data); err != nil {
		c.t.Fatalf("write frame %.80q: %v", data, err)
	}
}

// sendClose sends a close frame with code and reason.
func (c *e2eConn) sendClose(code int, reason string) {
	c.t.Helper()
	err := c.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, reason), time.Now().Add(e2eTimeout))
	if err != nil {
		c.t.Fatalf("write close %d: %v", code, err)
	}
}

// id returns a fresh request id (as JSON text).
func (c *e2eConn) id() string { return strconv.FormatInt(c.nextID.Add(1), 10) }

// next returns the next data frame's text; it fails the test on timeout,
// on a close, or on a non-text frame.
func (c *e2eConn) next() string {
	c.t.Helper()
	f, ok := c.nextFrame(e2eTimeout)
	if !ok {
		select {
		case <-c.done:
			c.t.Fatalf("connection closed while waiting for a frame: code %d %q (%v)", c.closeCode, c.closeText, c.readErr)
		default:
			c.t.Fatal("timed out waiting for a frame")
		}
	}
	if f.typ != websocket.TextMessage {
		c.t.Fatalf("got a frame of type %d, want text: %q", f.typ, f.data)
	}
	return string(f.data)
}

// nextFrame returns the next frame, or false on timeout or close (frames
// received before the close are returned first).
func (c *e2eConn) nextFrame(timeout time.Duration) (e2eFrame, bool) {
	select {
	case f := <-c.frames:
		return f, true
	default:
	}
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case f := <-c.frames:
		return f, true
	case <-c.done:
		select {
		case f := <-c.frames:
			return f, true
		default:
			return e2eFrame{}, false
		}
	case <-timer.C:
		return e2eFrame{}, false
	}
}

// e2eMsg is a decoded server frame: its keys with their raw JSON values, and
// the frame's text.
type e2eMsg struct {
	raw    string
	fields map[string]json.RawMessage
	keys   []string // in frame order
}

// e2eParse decodes one frame as a JSON object and checks that it is a
// single compact object whose first key is "sys" (or, for error frames,
// whose only key is "err").
func e2eParse(t *testing.T, frame string) e2eMsg {
	t.Helper()
	m := e2eMsg{raw: frame, fields: map[string]json.RawMessage{}}
	if err := json.Unmarshal([]byte(frame), &m.fields); err != nil {
		t.Fatalf("server frame is not a JSON object: %v: %.300q", err, frame)
	}
	dec := json.NewDecoder(strings.NewReader(frame))
	if _, err := dec.Token(); err != nil { // {
		t.Fatalf("frame %q: %v", frame, err)
	}
	for dec.More() {
		k, err := dec.Token()
		if err != nil {
			t.Fatalf("frame %q: %v", frame, err)
		}
		m.keys = append(m.keys, k.(string))
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			t.Fatalf("frame %q: %v", frame, err)
		}
	}
	if _, err := dec.Token(); err != nil { // }
		t.Fatalf("frame %q: %v", frame, err)
	}
	if dec.More() {
		t.Fatalf("frame holds more than one JSON value: %.300q", frame)
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, []byte(frame)); err != nil || buf.String() != frame {
		t.Errorf("frame is not compact JSON: %.300q", frame)
	}
	switch {
	case len(m.keys) > 0 && m.keys[0] == "sys":
	case len(m.keys) == 1 && m.keys[0] == "err":
		m.checkErrObject(t, "err")
	default:
		t.Fatalf("frame's first key is not \"sys\" (and it is not an error frame): %.300q", frame)
	}
	if _, ok := m.fields["err"]; ok && m.keys[0] == "sys" {
		m.checkErrObject(t, "err")
	}
	return m
}

// checkErrObject checks that fields[key] is {"name","message","code"} with
// all three strings present.
func (m e2eMsg) checkErrObject(t *testing.T, key string) {
	t.Helper()
	var e map[string]any
	if err := json.Unmarshal(m.fields[key], &e); err != nil || e == nil {
		t.Fatalf("%q is not an error object in %s", key, m.raw)
	}
	for _, k := range []string{"name", "message", "code"} {
		if _, ok := e[k].(string); !ok {
			t.Errorf("error object %s lacks string %q (PROTOCOL.md: all three always present) in %s", m.fields[key], k, m.raw)
		}
	}
}

// nextMsg returns the next frame decoded.
func (c *e2eConn) nextMsg() e2eMsg {
	c.t.Helper()
	return e2eParse(c.t, c.next())
}

// sys returns the frame's sys code (0 for error frames).
func (m e2eMsg) sys() int {
	raw, ok := m.fields["sys"]
	if !ok {
		return 0
	}
	n, err := strconv.Atoi(string(raw))
	if err != nil {
		return -1
	}
	return n
}

// str returns a string field ("" when absent or not a string).
func (m e2eMsg) str(key string) string {
	var s string
	if raw, ok := m.fields[key]; ok {
		_ = json.Unmarshal(raw, &s)
	}
	return s
}

// has reports whether the frame has key.
func (m e2eMsg) has(key string) bool { _, ok := m.fields[key]; return ok }

// errCode returns the code of the frame's err object ("" if none).
func (m e2eMsg) errCode() string { return e2eErrField(m.fields["err"], "code") }

// errField returns a field of the frame's err object.
func (m e2eMsg) errField(f string) string { return e2eErrField(m.fields["err"], f) }

func e2eErrField(raw json.RawMessage, f string) string {
	var e map[string]any
	if raw == nil || json.Unmarshal(raw, &e) != nil {
		return ""
	}
	s, _ := e[f].(string)
	return s
}

// e2eJSONEqual reports whether two JSON texts hold equal values.
func e2eJSONEqual(a, b string) bool {
	var va, vb any
	da := json.NewDecoder(strings.NewReader(a))
	da.UseNumber()
	db := json.NewDecoder(strings.NewReader(b))
	db.UseNumber()
	if da.Decode(&va) != nil || db.Decode(&vb) != nil {
		return false
	}
	return reflect.DeepEqual(va, vb)
}

// expectExact reads the next frame and requires it byte for byte.
func (c *e2eConn) expectExact(want string) {
	c.t.Helper()
	got := c.next()
	if got != want {
		c.t.Fatalf("frame mismatch\n got: %.400s\nwant: %.400s", got, want)
	}
	if got != protocol.Heartbeat {
		e2eParse(c.t, got)
	}
}

// expectJSON reads the next frame and requires it to equal want as JSON
// (any key order), with "sys" first.
func (c *e2eConn) expectJSON(want string) e2eMsg {
	c.t.Helper()
	m := c.nextMsg()
	if !e2eJSONEqual(m.raw, want) {
		c.t.Fatalf("frame mismatch\n got: %.400s\nwant: %.400s", m.raw, want)
	}
	return m
}

// expectErrFrame reads the next frame and requires {"err":{...code...}}.
func (c *e2eConn) expectErrFrame(code string) e2eMsg {
	c.t.Helper()
	m := c.nextMsg()
	if m.has("sys") || m.errCode() != code {
		c.t.Fatalf("got %s, want an error frame {\"err\":{...\"code\":%q}}", m.raw, code)
	}
	return m
}

// expectClose waits for the server's close frame, failing if a data frame
// comes first, and returns its reason; the code must be code.
func (c *e2eConn) expectClose(code int) string {
	c.t.Helper()
	if f, ok := c.nextFrame(e2eTimeout); ok {
		c.t.Fatalf("got frame %.300q, want close %d", f.data, code)
	}
	select {
	case <-c.done:
	default:
		c.t.Fatalf("timed out waiting for close %d", code)
	}
	if c.closeCode != code {
		c.t.Fatalf("closed with %d %q (%v), want %d", c.closeCode, c.closeText, c.readErr, code)
	}
	return c.closeText
}

// waitClosed waits for the close, skipping data frames, and returns the
// code and reason.
func (c *e2eConn) waitClosed() (int, string) {
	c.t.Helper()
	select {
	case <-c.done:
		return c.closeCode, c.closeText
	case <-time.After(e2eTimeout):
		c.t.Fatal("timed out waiting for the connection to close")
		return 0, ""
	}
}

// expectTCPClosed requires the server to have closed the TCP connection
// (after its close frame), without the client closing it.
func (c *e2eConn) expectTCPClosed() {
	c.t.Helper()
	<-c.done
	nc := c.ws.NetConn()
	_ = nc.SetReadDeadline(time.Now().Add(e2eTimeout))
	var buf [64]byte
	n, err := nc.Read(buf[:])
	if err == nil || n > 0 {
		c.t.Fatalf("after the close frame, read %d more bytes (%v), want the TCP connection closed", n, err)
	}
	var ne interface{ Timeout() bool }
	if errors.As(err, &ne) && ne.Timeout() {
		c.t.Fatal("server did not close the TCP connection after its close frame")
	}
}

// expectOpen requires the socket to be open and to have nothing queued for
// the client before an echo ask's response (a quiet check: frames of
// something the socket must not receive would come first when the server
// already queued them).
func (c *e2eConn) expectOpen() {
	c.t.Helper()
	c.ask("echo", `"ping-`+c.id()+`"`)
}

// drainOpen sends an echo ask and skips every frame before its response:
// the socket is open, whatever it had queued.
func (c *e2eConn) drainOpen() {
	c.t.Helper()
	id := c.id()
	c.send(`{"sys":5,"topic":"echo","msg":"drain","id":` + id + `}`)
	for {
		m := c.nextMsg()
		if m.sys() == 7 && string(m.fields["id"]) == id {
			return
		}
	}
}

// ask sends an ASK and requires the next frame to be its RESPONSE with a
// msg; it returns the msg.
func (c *e2eConn) ask(topic, msg string) string {
	c.t.Helper()
	m := c.askRaw(topic, msg)
	if m.has("err") {
		c.t.Fatalf("ask %q: got error response %s", topic, m.raw)
	}
	return string(m.fields["msg"])
}

// askRaw sends an ASK (msg "" = no msg key) and returns the response frame,
// which must be the next frame, carry the id and have sys 7.
func (c *e2eConn) askRaw(topic, msg string) e2eMsg {
	c.t.Helper()
	id := c.id()
	if msg == "" {
		c.send(`{"sys":5,"topic":` + strconv.Quote(topic) + `,"id":` + id + `}`)
	} else {
		c.send(`{"sys":5,"topic":` + strconv.Quote(topic) + `,"msg":` + msg + `,"id":` + id + `}`)
	}
	m := c.nextMsg()
	if m.sys() != 7 || string(m.fields["id"]) != id {
		c.t.Fatalf("ask %q id %s: got %s, want its RESPONSE", topic, id, m.raw)
	}
	if m.has("err") == m.has("msg") {
		c.t.Fatalf("RESPONSE must hold exactly one of msg and err: %s", m.raw)
	}
	return m
}

// begin sends BEGIN and returns the reply.
func (c *e2eConn) begin() e2eMsg {
	c.t.Helper()
	c.send(`{"sys":3}`)
	m := c.nextMsg()
	if m.sys() != 3 {
		c.t.Fatalf("BEGIN: got %s, want a BEGIN reply", m.raw)
	}
	return m
}

// subscribe subscribes to channel and requires success; it returns lastUid.
func (c *e2eConn) subscribe(channel string) protocol.UID {
	c.t.Helper()
	m := c.subscribeRaw(channel, "")
	if string(m.fields["result"]) != "true" {
		c.t.Fatalf("SUBSCRIBE %q: got %s, want result true", channel, m.raw)
	}
	uid, err := protocol.ParseUID(m.str("lastUid"))
	if err != nil {
		c.t.Fatalf("SUBSCRIBE %q: lastUid %s is not a uid: %v", channel, m.fields["lastUid"], err)
	}
	return uid
}

// subscribeRaw sends a SUBSCRIBE (query "" = no query key) and returns the
// reply, which must be the next frame and carry the id.
func (c *e2eConn) subscribeRaw(channel, query string) e2eMsg {
	c.t.Helper()
	id := c.id()
	f := `{"sys":1,"channel":` + strconv.Quote(channel)
	if query != "" {
		f += `,"query":` + query
	}
	c.send(f + `,"id":` + id + `}`)
	m := c.nextMsg()
	if m.sys() != 1 || string(m.fields["id"]) != id {
		c.t.Fatalf("SUBSCRIBE %q id %s: got %s, want its reply", channel, id, m.raw)
	}
	return m
}

// whoami returns the socket's id as the server knows it.
func (c *e2eConn) whoami() string {
	c.t.Helper()
	var w struct{ ID string }
	if err := json.Unmarshal([]byte(c.ask("whoami", "")), &w); err != nil || w.ID == "" {
		c.t.Fatalf("whoami: bad answer: %v", err)
	}
	return w.ID
}

// expectFeed reads the next frame and requires exactly the FEED
// {"sys":8,"topic":...,"msg":...,"channel":...,"uid":...}, byte for byte.
func (c *e2eConn) expectFeed(channel, topic, msg string, uid protocol.UID) {
	c.t.Helper()
	c.expectExact(e2eFeed(channel, topic, msg, uid))
}

// e2eFeed is the exact FEED frame of PROTOCOL.md.
func e2eFeed(channel, topic, msg string, uid protocol.UID) string {
	return `{"sys":8,"topic":` + strconv.Quote(topic) + `,"msg":` + msg + `,"channel":` + strconv.Quote(channel) + `,"uid":"` + uid.String() + `"}`
}

// e2eUpdateSub is the exact UPDATESUB frame of PROTOCOL.md.
func e2eUpdateSub(channel string, uid protocol.UID) string {
	return `{"sys":12,"channel":` + strconv.Quote(channel) + `,"uid":"` + uid.String() + `"}`
}

// e2eMustUID parses a uid or fails.
func e2eMustUID(t *testing.T, s string) protocol.UID {
	t.Helper()
	u, err := protocol.ParseUID(s)
	if err != nil {
		t.Fatalf("%q is not a uid: %v", s, err)
	}
	return u
}

// e2eCtx returns a context bounded by e2eTimeout.
func e2eCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), e2eTimeout)
	t.Cleanup(cancel)
	return ctx
}
