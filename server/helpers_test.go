package server

import (
	"context"
	"encoding/binary"
	"io"
	"log/slog"
	"net"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sss-go/sss/internal/testutil"
	"github.com/sss-go/sss/scaler"
)

const testTimeout = 20 * time.Second

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// newBenchHTTP serves srv on loopback and returns its ws:// URL.
func newBenchHTTP(b *testing.B, srv *Server) string {
	hs := httptest.NewServer(srv)
	b.Cleanup(hs.Close)
	return "ws" + strings.TrimPrefix(hs.URL, "http")
}

// testServer is a Server behind an httptest.Server.
type testServer struct {
	*Server
	hs  *httptest.Server
	url string
}

func newTestServer(t *testing.T, sc scaler.Scaler, opts Options) *testServer {
	t.Helper()
	if opts.ShutdownSpread == 0 {
		opts.ShutdownSpread = -1
	}
	srv, err := New(context.Background(), sc, opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	hs := httptest.NewServer(srv)
	ts := &testServer{Server: srv, hs: hs, url: "ws" + strings.TrimPrefix(hs.URL, "http")}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		hs.Close()
	})
	return ts
}

// A socket of a real server on a fake connection, for the tests of the
// writer, the send queue and heartbeats.

// fakeConn records every Write; with a gate, Write blocks until the gate
// is closed.
type fakeConn struct {
	net.Conn
	mu     sync.Mutex
	writes [][]byte
	gate   chan struct{}
	closed chan struct{}
	once   sync.Once
	wrote  chan struct{} // signalled (non-blocking) after each write
}

func newFakeConn(gated bool) *fakeConn {
	c := &fakeConn{closed: make(chan struct{}), wrote: make(chan struct{}, 1)}
	if gated {
		c.gate = make(chan struct{})
	}
	return c
}

func (c *fakeConn) Write(p []byte) (int, error) {
	if c.gate != nil {
		select {
		case <-c.gate:
		case <-c.closed:
			return 0, net.ErrClosed
		}
	}
	c.mu.Lock()
	c.writes = append(c.writes, append([]byte(nil), p...))
	c.mu.Unlock()
	select {
	case c.wrote <- struct{}{}:
	default:
	}
	return len(p), nil
}

func (c *fakeConn) Close() error                     { c.once.Do(func() { close(c.closed) }); return nil }
func (c *fakeConn) SetWriteDeadline(time.Time) error { return nil }
func (c *fakeConn) SetDeadline(time.Time) error      { return nil }
func (c *fakeConn) SetReadDeadline(time.Time) error  { return nil }
func (c *fakeConn) RemoteAddr() net.Addr             { return &net.TCPAddr{} }
func (c *fakeConn) LocalAddr() net.Addr              { return &net.TCPAddr{} }
func (c *fakeConn) Read(p []byte) (int, error)       { <-c.closed; return 0, net.ErrClosed }
func (c *fakeConn) snapshot() (calls int, all []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, w := range c.writes {
		all = append(all, w...)
	}
	return len(c.writes), all
}

type wireFrame struct {
	op      byte
	payload string
}

// parseFrames splits unmasked server frames.
func parseFrames(t *testing.T, b []byte) []wireFrame {
	t.Helper()
	var out []wireFrame
	for len(b) > 0 {
		if len(b) < 2 || b[0]&0x80 == 0 || b[1]&0x80 != 0 {
			t.Fatalf("bad frame header % x", b[:min(len(b), 4)])
		}
		op, n, h := b[0]&0x0f, int(b[1]&0x7f), 2
		switch n {
		case 126:
			n, h = int(binary.BigEndian.Uint16(b[2:4])), 4
		case 127:
			n, h = int(binary.BigEndian.Uint64(b[2:10])), 10
		}
		out = append(out, wireFrame{op, string(b[h : h+n])})
		b = b[h+n:]
	}
	return out
}

// fakeSocket is a socket on a fake connection of a real server.
func fakeSocket(t *testing.T, opts Options, gated bool) (*Server, *Socket, *fakeConn) {
	t.Helper()
	if opts.HeartbeatInterval == 0 {
		opts.HeartbeatInterval = -1
	}
	opts.Logger = quietLogger()
	srv, err := New(context.Background(), nil, opts)
	if err != nil {
		t.Fatal(err)
	}
	fc := newFakeConn(gated)
	s := &Socket{srv: srv, id: "fake", nc: fc, connGone: make(chan struct{})}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	t.Cleanup(func() {
		fc.Close()
		s.cancel()
		ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
		defer cancel()
		_ = srv.Shutdown(ctx)
	})
	return srv, s, fc
}

// waitFrames waits until the connection got at least n frames.
func waitFrames(t *testing.T, fc *fakeConn, n int) []wireFrame {
	t.Helper()
	var frames []wireFrame
	testutil.WaitFor(t, testTimeout, func() bool {
		_, all := fc.snapshot()
		frames = parseFrames(t, all)
		return len(frames) >= n
	}, "frames")
	return frames
}
