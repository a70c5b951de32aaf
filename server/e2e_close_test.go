package server_test

// Closing (docs/protocol.md, "9.2 Who closes, and the echo rule"): the
// client's close frame echoed, odd close frames, pings.

import (
	"fmt"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/sss-go/sss/server"
)

func TestE2ECloseEcho(t *testing.T) {
	closes := make(chan string, 8)
	o := e2eOptions()
	o.OnClose = func(sock *server.Socket, code int, reason string) { closes <- fmt.Sprintf("%d %s", code, reason) }
	a := startE2E(t, nil, o)
	for _, tc := range []struct {
		code   int
		reason string
	}{{4000, "bye"}, {4000, "Connection closed by client"}, {1000, ""}} {
		t.Run(fmt.Sprintf("%d %s", tc.code, tc.reason), func(t *testing.T) {
			c := a.dial(t, "")
			c.begin()
			c.SendClose(tc.code, tc.reason)
			if r := c.ExpectClose(tc.code); r != tc.reason {
				t.Errorf("echoed reason %q, want %q", r, tc.reason)
			}
			c.ExpectTCPClosed()
			select {
			case got := <-closes:
				if want := fmt.Sprintf("%d %s", tc.code, tc.reason); got != want {
					t.Errorf("OnClose(%s), want %s", got, want)
				}
			case <-time.After(e2eTimeout):
				t.Error("OnClose not called")
			}
		})
	}
}

func TestE2ECloseOddFrames(t *testing.T) {
	a := startE2E(t, nil, e2eOptions())
	t.Run("close without code", func(t *testing.T) {
		c := a.dial(t, "")
		c.begin()
		c.SendControl(websocket.CloseMessage, nil)
		c.ExpectClose(websocket.CloseNoStatusReceived) // an empty close frame echoed
		c.ExpectTCPClosed()
	})
	t.Run("invalid close code", func(t *testing.T) {
		c := a.dial(t, "")
		c.begin()
		c.SendClose(5000, "nope")
		code, _ := c.WaitClosed()
		if code == 5000 {
			t.Errorf("server echoed the invalid close code 5000")
		}
		c.ExpectTCPClosed()
	})
	t.Run("ping gets pong", func(t *testing.T) {
		c := a.dial(t, "")
		c.begin()
		c.SendControl(websocket.PingMessage, []byte("abc"))
		select {
		case p := <-c.Pongs():
			if p != "abc" {
				t.Errorf("pong %q, want abc", p)
			}
		case <-time.After(e2eTimeout):
			t.Fatal("no pong")
		}
		c.expectOpen()
	})
}
