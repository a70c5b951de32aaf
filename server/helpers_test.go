package server

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/sss-go/sss/protocol"
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

// client is a raw test client.
type client struct {
	t  *testing.T
	ws *websocket.Conn
}

func dial(t *testing.T, url string) *client {
	t.Helper()
	ws, _, err := websocket.DefaultDialer.Dial(url, nil)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { ws.Close() })
	return &client{t: t, ws: ws}
}

func (c *client) send(s string) {
	c.t.Helper()
	if err := c.ws.WriteMessage(websocket.TextMessage, []byte(s)); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

// read returns the next frame that is not a heartbeat.
func (c *client) read() string {
	c.t.Helper()
	for {
		_ = c.ws.SetReadDeadline(time.Now().Add(testTimeout))
		_, data, err := c.ws.ReadMessage()
		if err != nil {
			c.t.Fatalf("read: %v", err)
		}
		if string(data) == "h" {
			continue
		}
		return string(data)
	}
}

// readMsg decodes the next frame.
func (c *client) readMsg() *protocol.Message {
	c.t.Helper()
	s := c.read()
	m, err := protocol.DecodeServer([]byte(s), protocol.Limits{})
	if err != nil {
		c.t.Fatalf("decode %s: %v", s, err)
	}
	return m
}

// expectClose reads until the connection closes and returns the close
// code and reason.
func (c *client) expectClose() (int, string) {
	c.t.Helper()
	for {
		_ = c.ws.SetReadDeadline(time.Now().Add(testTimeout))
		_, _, err := c.ws.ReadMessage()
		if err != nil {
			var ce *websocket.CloseError
			if errors.As(err, &ce) {
				return ce.Code, ce.Text
			}
			c.t.Fatalf("expected close frame, got %v", err)
		}
	}
}

func (c *client) begin() *protocol.Message {
	c.t.Helper()
	c.send(`{"sys":3}`)
	m := c.readMsg()
	if m.Sys != protocol.SysBegin {
		c.t.Fatalf("BEGIN reply sys = %d", m.Sys)
	}
	return m
}

func (c *client) subscribe(channel string, id int) *protocol.Message {
	c.t.Helper()
	c.send(`{"sys":1,"channel":"` + channel + `","id":` + itoa(id) + `}`)
	m := c.readMsg()
	if m.Sys != protocol.SysSubscribe || m.Channel != channel || !m.Result {
		c.t.Fatalf("SUBSCRIBE reply %+v", m)
	}
	return m
}

func itoa(i int) string {
	b, _ := json.Marshal(i)
	return string(b)
}

// waitFor polls cond until true or the deadline.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(testTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
