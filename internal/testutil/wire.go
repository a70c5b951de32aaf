package testutil

import (
	"errors"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/gorilla/websocket"
)

// heartbeat is the text of a heartbeat frame of the sss protocol
// (protocol.Heartbeat; this package does not import protocol, whose own
// tests use this one).
const heartbeat = "h"

// WireOptions tunes DialWire. The zero value is a plain dial with a 20 s
// timeout.
type WireOptions struct {
	// Header is sent with the upgrade request (cookies, Origin).
	Header http.Header
	// Compression offers permessage-deflate.
	Compression bool
	// Timeout bounds the handshake and every wait of the connection's
	// methods. Default 20 s: a failure bound, generous for a loaded
	// machine running -race.
	Timeout time.Duration
}

// Frame is one data frame received: its type (websocket.TextMessage or
// websocket.BinaryMessage) and payload.
type Frame struct {
	Type int
	Data []byte
}

// WireConn is a raw WebSocket client for tests of the sss wire: it sends
// frames exactly as given and hands over every frame the server sends, in
// order and byte for byte, so tests can expect exact frames, close codes
// and reasons. A reader goroutine answers heartbeats ("h") unless told not
// to, counts them and keeps them out of the frames; it records the
// server's close frame without answering it, so a test sees whether the
// server closes the TCP connection itself. When the test ends, the
// connection is closed and the test fails if the server sent a text frame
// that is not valid UTF-8 (RFC 6455 §8.1: a browser fails the connection
// then).
//
// Methods that fail the test (Send, Next, Expect...) must be called from
// the test's goroutine; the others are safe from any goroutine.
type WireConn struct {
	t       testing.TB
	ws      *websocket.Conn
	timeout time.Duration

	wmu     sync.Mutex // serialises writes
	mu      sync.Mutex // guards queue and hbTimes
	queue   []Frame    // data frames not yet taken
	hbTimes []time.Time
	notify  chan struct{} // a frame was queued (or the reader stopped)
	done    chan struct{} // closed when the reader stops
	answerH atomic.Bool
	hbCount atomic.Int64
	hb      chan struct{}                 // one token per heartbeat (dropped when full)
	paused  atomic.Pointer[chan struct{}] // set while reading is paused
	pongs   chan string
	badUTF8 atomic.Int64

	// Set before done is closed.
	closeCode int // of the server's close frame; 1006 when there was none
	closeText string
	readErr   error
	closedAt  time.Time
}

// DialWire connects to a ws:// URL. It returns the handshake response and
// error as they are, so a test can check a refused upgrade; the connection
// is closed when the test ends.
func DialWire(t testing.TB, url string, opts WireOptions) (*WireConn, *http.Response, error) {
	t.Helper()
	if opts.Timeout <= 0 {
		opts.Timeout = 20 * time.Second
	}
	d := websocket.Dialer{HandshakeTimeout: opts.Timeout, EnableCompression: opts.Compression}
	ws, resp, err := d.Dial(url, opts.Header)
	if err != nil {
		return nil, resp, err
	}
	c := &WireConn{
		t:       t,
		ws:      ws,
		timeout: opts.Timeout,
		notify:  make(chan struct{}, 1),
		done:    make(chan struct{}),
		hb:      make(chan struct{}, 1024),
		pongs:   make(chan string, 16),
	}
	c.answerH.Store(true)
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
		c.ResumeReads()
		_ = ws.Close()
		<-c.done
		if n := c.badUTF8.Load(); n > 0 {
			t.Errorf("testutil: the server sent %d text frame(s) that are not valid UTF-8", n)
		}
	})
	return c, resp, nil
}

func (c *WireConn) readLoop() {
	defer close(c.done)
	defer c.poke()
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
		if typ == websocket.TextMessage && !utf8.Valid(data) {
			c.badUTF8.Add(1)
		}
		if typ == websocket.TextMessage && string(data) == heartbeat {
			c.heartbeat()
			continue
		}
		c.mu.Lock()
		c.queue = append(c.queue, Frame{Type: typ, Data: data})
		c.mu.Unlock()
		c.poke()
	}
}

// heartbeat records a heartbeat and answers it unless told not to.
func (c *WireConn) heartbeat() {
	c.mu.Lock()
	c.hbTimes = append(c.hbTimes, time.Now())
	c.mu.Unlock()
	c.hbCount.Add(1)
	select {
	case c.hb <- struct{}{}:
	default:
	}
	if c.answerH.Load() {
		c.wmu.Lock()
		_ = c.ws.WriteMessage(websocket.TextMessage, []byte(heartbeat))
		c.wmu.Unlock()
	}
}

func (c *WireConn) poke() {
	select {
	case c.notify <- struct{}{}:
	default:
	}
}

// Timeout returns the bound of the connection's waits.
func (c *WireConn) Timeout() time.Duration { return c.timeout }

// Send writes one text frame.
func (c *WireConn) Send(frame string) {
	c.t.Helper()
	c.SendType(websocket.TextMessage, []byte(frame))
}

// SendType writes one data frame of the given type.
func (c *WireConn) SendType(typ int, data []byte) {
	c.t.Helper()
	if err := c.write(typ, data); err != nil {
		c.t.Fatalf("testutil: write frame %.80q: %v", data, err)
	}
}

// Write writes one text frame and returns the error, for callers that
// are not the test's goroutine or expect the write to fail.
func (c *WireConn) Write(frame string) error {
	return c.write(websocket.TextMessage, []byte(frame))
}

func (c *WireConn) write(typ int, data []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	_ = c.ws.SetWriteDeadline(time.Now().Add(c.timeout))
	return c.ws.WriteMessage(typ, data)
}

// SendClose writes a close frame with code and reason.
func (c *WireConn) SendClose(code int, reason string) {
	c.t.Helper()
	c.SendControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, reason))
}

// SendControl writes a control frame (websocket.CloseMessage,
// PingMessage, PongMessage) with the payload as given (nil: empty).
func (c *WireConn) SendControl(typ int, data []byte) {
	c.t.Helper()
	c.wmu.Lock()
	err := c.ws.WriteControl(typ, data, time.Now().Add(c.timeout))
	c.wmu.Unlock()
	if err != nil {
		c.t.Fatalf("testutil: write control frame %d: %v", typ, err)
	}
}

// Close closes the connection politely: a close frame with code 1000,
// then a wait, bounded by 5 s, for the server to end the connection
// (after its echo), then the TCP close. Safe to call more than once and
// from any goroutine.
func (c *WireConn) Close() {
	c.wmu.Lock()
	_ = c.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
	c.wmu.Unlock()
	c.ResumeReads()
	select {
	case <-c.done:
	case <-time.After(5 * time.Second):
	}
	_ = c.ws.Close()
	<-c.done
}

// Drop closes the TCP connection at once, without a close frame: to the
// server the connection broke.
func (c *WireConn) Drop() { _ = c.ws.NetConn().Close() }

// PauseReads stops the reader before its next read, so the server's
// writes back up (the reader may still finish the read it is in).
func (c *WireConn) PauseReads() {
	ch := make(chan struct{})
	c.paused.Store(&ch)
}

// ResumeReads lets the reader go on.
func (c *WireConn) ResumeReads() {
	if ch := c.paused.Swap(nil); ch != nil {
		close(*ch)
	}
}

// AnswerHeartbeats sets whether the reader answers heartbeats (it does
// until told not to).
func (c *WireConn) AnswerHeartbeats(on bool) { c.answerH.Store(on) }

// Heartbeats returns a channel that gets a token per heartbeat received
// (up to 1024 not taken).
func (c *WireConn) Heartbeats() <-chan struct{} { return c.hb }

// HeartbeatCount returns the number of heartbeats received.
func (c *WireConn) HeartbeatCount() int64 { return c.hbCount.Load() }

// HeartbeatTimes returns when each heartbeat arrived.
func (c *WireConn) HeartbeatTimes() []time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]time.Time(nil), c.hbTimes...)
}

// Pongs returns a channel of the payloads of the pongs received.
func (c *WireConn) Pongs() <-chan string { return c.pongs }

// NextFrame returns the next data frame, or false on timeout or once the
// connection ended (frames received before the end come first).
func (c *WireConn) NextFrame(timeout time.Duration) (Frame, bool) {
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		if f, ok := c.take(); ok {
			return f, true
		}
		select {
		case <-c.notify:
		case <-c.done:
			return c.take()
		case <-timer.C:
			return Frame{}, false
		}
	}
}

func (c *WireConn) take() (Frame, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.queue) == 0 {
		return Frame{}, false
	}
	f := c.queue[0]
	c.queue[0] = Frame{}
	c.queue = c.queue[1:]
	return f, true
}

// Next returns the next data frame's text; it fails the test on timeout,
// when the connection ends first, or on a binary frame.
func (c *WireConn) Next() string {
	c.t.Helper()
	f, ok := c.NextFrame(c.timeout)
	if !ok {
		select {
		case <-c.done:
			c.t.Fatalf("testutil: connection closed while waiting for a frame: code %d %q (%v)", c.closeCode, c.closeText, c.readErr)
		default:
			c.t.Fatalf("testutil: timed out after %v waiting for a frame", c.timeout)
		}
	}
	if f.Type != websocket.TextMessage {
		c.t.Fatalf("testutil: got a frame of type %d, want text: %q", f.Type, f.Data)
	}
	return string(f.Data)
}

// Done returns a channel closed once the connection ended (the server's
// close frame came, or it broke).
func (c *WireConn) Done() <-chan struct{} { return c.done }

// CloseCode returns the code of the server's close frame (1006 when the
// connection broke without one), or 0 while the connection is open.
func (c *WireConn) CloseCode() int {
	select {
	case <-c.done:
		return c.closeCode
	default:
		return 0
	}
}

// CloseReason returns the reason of the server's close frame; "" while the
// connection is open.
func (c *WireConn) CloseReason() string {
	select {
	case <-c.done:
		return c.closeText
	default:
		return ""
	}
}

// ClosedAt returns when the connection ended; zero while it is open.
func (c *WireConn) ClosedAt() time.Time {
	select {
	case <-c.done:
		return c.closedAt
	default:
		return time.Time{}
	}
}

// Err returns the read error that ended the connection; nil while it is
// open.
func (c *WireConn) Err() error {
	select {
	case <-c.done:
		return c.readErr
	default:
		return nil
	}
}

// ExpectClose waits for the end of the connection, failing if a data
// frame comes first or the code is not code, and returns the reason.
func (c *WireConn) ExpectClose(code int) string {
	c.t.Helper()
	if f, ok := c.NextFrame(c.timeout); ok {
		c.t.Fatalf("testutil: got frame %.300q, want close %d", f.Data, code)
	}
	select {
	case <-c.done:
	default:
		c.t.Fatalf("testutil: timed out after %v waiting for close %d", c.timeout, code)
	}
	if c.closeCode != code {
		c.t.Fatalf("testutil: closed with %d %q (%v), want %d", c.closeCode, c.closeText, c.readErr, code)
	}
	return c.closeText
}

// WaitClosed waits for the end of the connection, leaving data frames
// queued, and returns the close code and reason.
func (c *WireConn) WaitClosed() (int, string) {
	c.t.Helper()
	select {
	case <-c.done:
		return c.closeCode, c.closeText
	case <-time.After(c.timeout):
		c.t.Fatalf("testutil: timed out after %v waiting for the connection to close", c.timeout)
		return 0, ""
	}
}

// ExpectTCPClosed requires the server to close the TCP connection after
// its close frame, without the client closing it.
func (c *WireConn) ExpectTCPClosed() {
	c.t.Helper()
	c.WaitClosed()
	nc := c.ws.NetConn()
	_ = nc.SetReadDeadline(time.Now().Add(c.timeout))
	var buf [64]byte
	n, err := nc.Read(buf[:])
	if err == nil || n > 0 {
		c.t.Fatalf("testutil: after the close frame, read %d more bytes (%v), want the TCP connection closed", n, err)
	}
	var ne interface{ Timeout() bool }
	if errors.As(err, &ne) && ne.Timeout() {
		c.t.Fatal("testutil: the server did not close the TCP connection after its close frame")
	}
}
