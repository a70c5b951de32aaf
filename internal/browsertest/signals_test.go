package browsertest

import (
	"errors"
	"net"
	"net/http"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/sss-go/sss/internal/testutil"
)

// openSockets opens n WebSockets to the chat (BEGIN sent), closed when
// the test ends.
func openSockets(t *testing.T, p *chatProc, n int) []*websocket.Conn {
	t.Helper()
	var out []*websocket.Conn
	for i := 0; i < n; i++ {
		ws, _, err := websocket.DefaultDialer.Dial("ws://"+p.addr+"/ws?user=tab", http.Header{})
		if err != nil {
			t.Fatalf("dial: %v", err)
		}
		t.Cleanup(func() { ws.Close() })
		if err := ws.WriteMessage(websocket.TextMessage, []byte(`{"sys":3}`)); err != nil {
			t.Fatal(err)
		}
		_ = ws.SetReadDeadline(time.Now().Add(wait))
		if _, _, err := ws.ReadMessage(); err != nil {
			t.Fatalf("BEGIN reply: %v", err)
		}
		out = append(out, ws)
	}
	return out
}

// TestChatSIGINT: with three tabs open, SIGINT frees the port at once (a
// restart on the same port works right away), closes the sockets with
// 1001 within the default shutdown spread (1 s) and exits 0 soon after.
func TestChatSIGINT(t *testing.T) {
	bin := buildChat(t)
	owner := newProcOwner(t)
	chat := startChat(t, owner, bin, "chat", nil)
	socks := openSockets(t, chat, 3)
	start := time.Now()
	if err := chat.cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	// The port is free at once: bind it (and let go).
	var ln net.Listener
	deadline := time.Now().Add(2 * time.Second)
	for {
		var err error
		if ln, err = net.Listen("tcp", chat.addr); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("port %s still taken %v after SIGINT: %v", chat.addr, time.Since(start), err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	freed := time.Since(start)
	ln.Close()
	for i, ws := range socks {
		_ = ws.SetReadDeadline(time.Now().Add(wait))
		for {
			_, _, err := ws.ReadMessage()
			var ce *websocket.CloseError
			if errors.As(err, &ce) {
				if ce.Code != 1001 {
					t.Fatalf("socket %d closed with %d, want 1001", i, ce.Code)
				}
				break
			}
			if err != nil {
				t.Fatalf("socket %d: %v, want close 1001", i, err)
			}
		}
	}
	closed := time.Since(start)
	select {
	case <-chat.exited:
	case <-time.After(wait):
		t.Fatalf("chat still running %v after SIGINT", wait)
	}
	exited := time.Since(start)
	if chat.waitErr != nil {
		t.Fatalf("chat exited with %v after SIGINT\n%s", chat.waitErr, chat.logTail())
	}
	t.Logf("SIGINT with 3 sockets: port free after %v, sockets closed after %v, exited after %v", freed, closed, exited)
	if closed > 3*time.Second || exited > 5*time.Second {
		t.Fatalf("shutdown too slow for one development instance: sockets closed after %v, exit after %v", closed, exited)
	}
}

// TestChatSecondSignal: a second SIGINT during a long drain exits at once.
func TestChatSecondSignal(t *testing.T) {
	bin := buildChat(t)
	owner := newProcOwner(t)
	chat := startChat(t, owner, bin, "chat", nil, "-shutdown-spread", "1m")
	openSockets(t, chat, 3)
	if err := chat.cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, wait, func() bool { return strings.Contains(chat.logTail(), "shutting down") }, "the first signal's drain")
	start := time.Now()
	if err := chat.cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	select {
	case <-chat.exited:
	case <-time.After(10 * time.Second):
		t.Fatalf("chat still running 10s after a second SIGINT\n%s", chat.logTail())
	}
	var ee *exec.ExitError
	if !errors.As(chat.waitErr, &ee) || ee.ExitCode() != 1 {
		t.Fatalf("after a second SIGINT the chat exited with %v, want status 1", chat.waitErr)
	}
	t.Logf("second SIGINT: exited after %v", time.Since(start))
}
