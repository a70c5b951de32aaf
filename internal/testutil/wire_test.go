package testutil

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// wireServer serves fn on each WebSocket upgraded at its ws:// URL.
func wireServer(t *testing.T, fn func(ws *websocket.Conn)) string {
	t.Helper()
	var wg sync.WaitGroup
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, err := (&websocket.Upgrader{}).Upgrade(w, r, nil)
		if err != nil {
			return
		}
		wg.Add(1)
		defer wg.Done()
		defer ws.Close()
		fn(ws)
	}))
	t.Cleanup(func() {
		hs.Close()
		wg.Wait()
	})
	return "ws" + strings.TrimPrefix(hs.URL, "http")
}

// recordTB records the errors a WireConn reports at cleanup.
type recordTB struct {
	testing.TB
	mu       sync.Mutex
	errs     []string
	cleanups []func()
}

func (r *recordTB) Errorf(format string, args ...any) {
	r.mu.Lock()
	r.errs = append(r.errs, format)
	r.mu.Unlock()
}
func (r *recordTB) Cleanup(fn func()) { r.cleanups = append(r.cleanups, fn) }
func (r *recordTB) runCleanups() {
	for i := len(r.cleanups) - 1; i >= 0; i-- {
		r.cleanups[i]()
	}
}

// TestWireConn: frames in order byte for byte, heartbeats answered and
// kept out of the frames, the close code and reason, and the server's
// TCP close seen.
func TestWireConn(t *testing.T) {
	CheckLeaks(t)
	answered := make(chan string, 1)
	url := wireServer(t, func(ws *websocket.Conn) {
		_, first, err := ws.ReadMessage()
		if err != nil {
			return
		}
		_ = ws.WriteMessage(websocket.TextMessage, []byte("h"))
		_, ans, _ := ws.ReadMessage()
		answered <- string(ans)
		_ = ws.WriteMessage(websocket.TextMessage, append([]byte("echo "), first...))
		_ = ws.WriteMessage(websocket.TextMessage, []byte(`{"b":2}`))
		_ = ws.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(4001, "bye"))
	})
	c, _, err := DialWire(t, url, WireOptions{Timeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	c.Send(`{"a":1}`)
	if got := <-answered; got != "h" {
		t.Fatalf("heartbeat answered with %q", got)
	}
	if got := c.Next(); got != `echo {"a":1}` {
		t.Fatalf("first frame %q", got)
	}
	if got := c.Next(); got != `{"b":2}` {
		t.Fatalf("second frame %q", got)
	}
	if r := c.ExpectClose(4001); r != "bye" {
		t.Fatalf("close reason %q", r)
	}
	c.ExpectTCPClosed()
	if n := c.HeartbeatCount(); n != 1 || len(c.HeartbeatTimes()) != 1 {
		t.Fatalf("%d heartbeats counted", n)
	}
	if code, reason := c.CloseCode(), c.CloseReason(); code != 4001 || reason != "bye" || c.ClosedAt().IsZero() || c.Err() == nil {
		t.Fatalf("closed with %d %q at %v (%v)", code, reason, c.ClosedAt(), c.Err())
	}
}

// TestWireConnInvalidUTF8: a text frame that is not valid UTF-8 fails the
// test at cleanup.
func TestWireConnInvalidUTF8(t *testing.T) {
	url := wireServer(t, func(ws *websocket.Conn) {
		_ = ws.WriteMessage(websocket.TextMessage, []byte("\"\xff\""))
		_, _, _ = ws.ReadMessage() // until the client closes
	})
	rec := &recordTB{TB: t}
	c, _, err := DialWire(rec, url, WireOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if f, ok := c.NextFrame(10 * time.Second); !ok || string(f.Data) != "\"\xff\"" {
		t.Fatalf("frame %q, %v", f.Data, ok)
	}
	rec.runCleanups()
	if len(rec.errs) != 1 || !strings.Contains(rec.errs[0], "not valid UTF-8") {
		t.Fatalf("errors at cleanup: %q, want one about UTF-8", rec.errs)
	}
}
