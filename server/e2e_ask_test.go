package server_test

// ASK and TELL over a real WebSocket (docs/protocol.md, "6. Ask and
// tell"): answers, errors, limits, and what handlers may do.

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"testing"

	"github.com/sss-go/sss/protocol"
	"github.com/sss-go/sss/server"
)

func TestE2EAsk(t *testing.T) {
	a := startE2E(t, nil, e2eOptions())
	c := a.dial(t, "")
	t.Run("ok", func(t *testing.T) {
		for _, msg := range []string{`{"a":1,"b":[true,null,"x"],"c":{"d":2.5}}`, `"hello"`, `null`, `0`, `[]`} {
			id := c.id()
			c.Send(`{"sys":5,"topic":"echo","msg":` + msg + `,"id":` + id + `}`)
			c.expectExact(`{"sys":7,"msg":` + msg + `,"id":` + id + `}`)
		}
		id := c.id()
		c.Send(`{"sys":5,"topic":"echo","id":` + id + `}`) // no msg key: null
		c.expectExact(`{"sys":7,"msg":null,"id":` + id + `}`)
		// A result the server marshals is not HTML-escaped.
		id = c.id()
		c.Send(`{"sys":5,"topic":"html","id":` + id + `}`)
		c.expectExact(`{"sys":7,"msg":{"a":"<b>&"},"id":` + id + `}`)
	})
	errCases := []struct {
		name, topic, code, errName, message string
	}{
		{"unknown topic", "no-such-topic", protocol.CodeUnknownTopic, "", ""},
		{"handler error", "fail", protocol.CodeInternal, "", ""},
		{"handler panic", "panic", protocol.CodeInternal, "", ""},
		{"protocol.Error without code", "apperr", protocol.CodeAppError, "Nope", "nope says the app"},
		{"protocol.Error with code", "coded", "teapot", "Teapot", "short and stout"},
	}
	for _, tc := range errCases {
		t.Run(tc.name, func(t *testing.T) {
			m := c.askRaw(tc.topic, `{"x":1}`)
			if m.errCode() != tc.code {
				t.Fatalf("ask %q: %s, want err code %q", tc.topic, m.raw, tc.code)
			}
			if len(m.keys) != 3 || m.keys[1] != "err" || m.keys[2] != "id" {
				t.Errorf("error RESPONSE keys %q, want sys, err, id", m.keys)
			}
			if tc.errName != "" && (m.errField("name") != tc.errName || m.errField("message") != tc.message) {
				t.Errorf("ask %q: err %s, want name %q message %q", tc.topic, m.fields["err"], tc.errName, tc.message)
			}
			if strings.Contains(m.raw, "secret") {
				t.Errorf("RESPONSE leaks handler details: %s", m.raw)
			}
			c.expectOpen()
		})
	}
	t.Run("pipelined asks answered exactly once", func(t *testing.T) {
		const n = 50
		for i := 0; i < n; i++ {
			c.Send(fmt.Sprintf(`{"sys":5,"topic":"echo","msg":%d,"id":"p%d"}`, i, i))
		}
		seen := map[string]bool{}
		for i := 0; i < n; i++ {
			m := c.nextMsg()
			var id string
			_ = json.Unmarshal(m.fields["id"], &id)
			if m.sys() != 7 || seen[id] || "p"+string(m.fields["msg"]) != id {
				t.Fatalf("response %d: %s (duplicate or wrong)", i, m.raw)
			}
			seen[id] = true
		}
		c.expectOpen()
	})
}

func TestE2EAskBadResults(t *testing.T) {
	a := startE2E(t, nil, e2eOptions())
	a.srv.HandleAsk("badraw", func(ctx context.Context, sock *server.Socket, msg json.RawMessage) (any, error) {
		return json.RawMessage(`{bad`), nil
	})
	a.srv.HandleAsk("unmarshalable", func(ctx context.Context, sock *server.Socket, msg json.RawMessage) (any, error) {
		return make(chan int), nil
	})
	a.srv.HandleAsk("nilerr", func(ctx context.Context, sock *server.Socket, msg json.RawMessage) (any, error) {
		var pe *protocol.Error
		return nil, pe // a typed nil error
	})
	a.srv.HandleAsk("closeme", func(ctx context.Context, sock *server.Socket, msg json.RawMessage) (any, error) {
		if err := sock.Tell("last", json.RawMessage(`"words"`)); err != nil {
			return nil, err
		}
		sock.Close(4005, "closed by the app")
		return "too late", nil
	})
	c := a.dial(t, "")
	for _, topic := range []string{"badraw", "unmarshalable"} {
		m := c.askRaw(topic, "1")
		if m.errCode() != protocol.CodeInternal {
			t.Errorf("ask %s: %s, want err internal", topic, m.raw)
		}
	}
	m := c.askRaw("nilerr", "1")
	if !m.has("err") && !m.has("msg") {
		t.Errorf("ask nilerr: %s", m.raw)
	}
	c.expectOpen()
	t.Run("Socket.Close from a handler", func(t *testing.T) {
		d := a.dial(t, "")
		d.Send(`{"sys":5,"topic":"closeme","id":1}`)
		d.expectExact(`{"sys":6,"topic":"last","msg":"words"}`) // queued before the close
		if r := d.ExpectClose(4005); r != "closed by the app" {
			t.Errorf("close reason %q", r)
		}
		d.ExpectTCPClosed()
	})
	t.Run("setup mistakes panic", func(t *testing.T) {
		for _, tc := range []struct {
			name string
			fn   func()
		}{
			{"nil ask handler", func() { a.srv.HandleAsk("x1", nil) }},
			{"empty ask topic", func() {
				a.srv.HandleAsk("", func(context.Context, *server.Socket, json.RawMessage) (any, error) { return nil, nil })
			}},
			{"duplicate ask topic", func() {
				a.srv.HandleAsk("echo", func(context.Context, *server.Socket, json.RawMessage) (any, error) { return nil, nil })
			}},
			{"nil tell handler", func() { a.srv.HandleTell("x2", nil) }},
		} {
			t.Run(tc.name, func(t *testing.T) {
				defer func() {
					if recover() == nil {
						t.Error("no panic")
					}
				}()
				tc.fn()
			})
		}
	})
}

func TestE2ETell(t *testing.T) {
	a := startE2E(t, nil, e2eOptions())
	c := a.dial(t, "user=alice")
	c.begin()
	id := c.whoami()
	t.Run("client to server", func(t *testing.T) {
		c.Send(`{"sys":6,"topic":"post","msg":{"room":"room1","text":"hi"}}`)
		tl := a.waitTell()
		if tl.Topic != "post" || tl.Msg != `{"room":"room1","text":"hi"}` || tl.Socket != id || tl.User != "alice" {
			t.Fatalf("tell handler got %+v", tl)
		}
		c.expectOpen() // no reply
		c.Send(`{"sys":6,"topic":"nothing"}`)
		tl = a.waitTell()
		if tl.Topic != "nothing" || (tl.Msg != "" && tl.Msg != "null") {
			t.Fatalf("tell without msg: handler got %+v, want a nil or null msg", tl)
		}
	})
	t.Run("server to client from a handler", func(t *testing.T) {
		c.Send(`{"sys":5,"topic":"tellme","msg":{"x":[1,"y"]},"id":"t1"}`)
		got := []string{c.Next(), c.Next()}
		want := []string{`{"sys":6,"topic":"told","msg":{"x":[1,"y"]}}`, `{"sys":7,"msg":"ok","id":"t1"}`}
		if !(got[0] == want[0] && got[1] == want[1]) && !(got[0] == want[1] && got[1] == want[0]) {
			t.Fatalf("got %q, want %q (any order)", got, want)
		}
	})
	t.Run("TellSocket", func(t *testing.T) {
		if err := a.srv.TellSocket(e2eCtx(t), id, "direct", json.RawMessage(`{"k":"v"}`)); err != nil {
			t.Fatal(err)
		}
		c.expectExact(`{"sys":6,"topic":"direct","msg":{"k":"v"}}`)
	})
	t.Run("TellSession", func(t *testing.T) {
		s1 := a.dial(t, "session=sess-1")
		s2 := a.dial(t, "session=sess-1")
		other := a.dial(t, "session=sess-2")
		for _, s := range []*e2eConn{s1, s2, other} {
			s.begin()
		}
		if err := a.srv.TellSession(e2eCtx(t), "sess-1", "sess", json.RawMessage(`1`)); err != nil {
			t.Fatal(err)
		}
		s1.expectExact(`{"sys":6,"topic":"sess","msg":1}`)
		s2.expectExact(`{"sys":6,"topic":"sess","msg":1}`)
		// The session channel never reaches a client as a FEED.
		s1.expectOpen()
		other.expectOpen()
	})
}

// TestE2EMaxConcurrentAsks: past Options.MaxConcurrentAsks running asks, an
// ask is answered rate_limited; the running ones still answer.
func TestE2EMaxConcurrentAsks(t *testing.T) {
	o := e2eOptions()
	o.MaxConcurrentAsks = 2
	a := startE2E(t, nil, o)
	healthy := a.dial(t, "")
	c := a.dial(t, "")
	c.Send(`{"sys":5,"topic":"slow","id":1}`)
	c.Send(`{"sys":5,"topic":"slow","id":2}`)
	a.waitSlowStarted()
	a.waitSlowStarted()
	c.Send(`{"sys":5,"topic":"echo","msg":3,"id":3}`)
	m := c.nextMsg()
	if m.sys() != 7 || string(m.fields["id"]) != "3" || m.errCode() != protocol.CodeRateLimited {
		t.Fatalf("third concurrent ask: %s, want RESPONSE err rate_limited id 3", m.raw)
	}
	healthy.expectOpen()
	a.release()
	got := map[string]bool{c.Next(): true, c.Next(): true}
	for _, w := range []string{`{"sys":7,"msg":"slow done","id":1}`, `{"sys":7,"msg":"slow done","id":2}`} {
		if !got[w] {
			t.Fatalf("got %v, want %s", got, w)
		}
	}
	c.expectOpen()
}

func TestE2ERateLimit(t *testing.T) {
	o := e2eOptions()
	o.RateLimit = 5
	a := startE2E(t, nil, o)
	healthy := a.dial(t, "")
	c := a.dial(t, "")
	const n = 30
	for i := 0; i < n; i++ {
		c.Send(`{"sys":5,"topic":"echo","msg":1,"id":` + strconv.Itoa(i) + `}`)
	}
	limited := 0
	seen := map[string]bool{}
	for i := 0; i < n; i++ {
		m := c.nextMsg()
		id := string(m.fields["id"])
		if m.sys() != 7 || seen[id] {
			t.Fatalf("got %s", m.raw)
		}
		seen[id] = true
		if m.errCode() == protocol.CodeRateLimited {
			limited++
		} else if m.has("err") {
			t.Fatalf("got %s", m.raw)
		}
	}
	if limited == 0 || limited == n {
		t.Fatalf("%d of %d asks rate limited at 5/s", limited, n)
	}
	for i := 0; i < 20; i++ {
		c.Send(`{"sys":6,"topic":"post","msg":1}`)
	}
	m := c.nextMsg()
	if m.has("sys") || m.errCode() != protocol.CodeRateLimited {
		t.Fatalf("tells past the rate: %s, want {\"err\":{rate_limited}}", m.raw)
	}
	for i := 0; i < 20; i++ {
		c.Send(`{"sys":1,"channel":"rl","id":"s` + strconv.Itoa(i) + `"}`)
	}
	for {
		m := c.nextMsg()
		if m.sys() == 1 && m.errCode() == protocol.CodeRateLimited {
			if m.str("channel") != "rl" {
				t.Errorf("rate-limited SUBSCRIBE reply %s lacks its channel", m.raw)
			}
			break
		}
		if m.sys() != 1 && m.has("sys") {
			t.Fatalf("got %s", m.raw)
		}
	}
	healthy.expectOpen()
}
