package server

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/sss-go/sss/protocol"
	"github.com/sss-go/sss/scaler"
)

func TestCompression(t *testing.T) {
	ts := newTestServer(t, nil, Options{EnableCompression: true, HeartbeatInterval: -1})
	d := websocket.Dialer{EnableCompression: true}
	ws, res, err := d.Dial(ts.url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(res.Header.Get("Sec-Websocket-Extensions"), "permessage-deflate") {
		t.Fatalf("compression not negotiated: %q", res.Header.Get("Sec-Websocket-Extensions"))
	}
	c := &client{t: t, ws: ws}
	t.Cleanup(func() { ws.Close() })
	c.begin()
	c.subscribe("z", 1)
	big := strings.Repeat("abc", 1000)
	if _, err := ts.Publish(context.Background(), "z", "t", big, PublishOptions{}); err != nil {
		t.Fatal(err)
	}
	if m := c.readMsg(); m.Sys != protocol.SysFeed || string(m.Msg) != `"`+big+`"` {
		t.Fatalf("feed %v", m.Sys)
	}
	_ = ws.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(4000, "bye"))
	if code, reason := c.expectClose(); code != 4000 || reason != "bye" {
		t.Fatalf("close echo %d %q", code, reason)
	}
}

func TestSessionRefusal(t *testing.T) {
	parser := func(r *http.Request) (*Session, error) {
		switch r.URL.Query().Get("k") {
		case "app":
			return nil, &protocol.Error{Name: "Nope", Message: "go away", Code: "refused"}
		case "plain":
			return nil, errors.New("secret")
		case "baduser":
			return &Session{User: "bad\x01user"}, nil
		}
		return &Session{User: "u", SessionID: "sess", Values: map[string]any{"role": "x"}}, nil
	}
	tests := []struct {
		name, k, reason string
	}{
		{"protocol error", "app", "go away"},
		{"plain error", "plain", "refused"},
		{"invalid user id", "baduser", "invalid user id"},
	}
	ts := newTestServer(t, nil, Options{SessionParser: parser, HeartbeatInterval: -1})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := dial(t, ts.url+"?k="+tt.k)
			if code, reason := c.expectClose(); code != protocol.CloseBooted || reason != tt.reason {
				t.Fatalf("closed %d %q, want 4001 %q", code, reason, tt.reason)
			}
		})
	}
	t.Run("accepted", func(t *testing.T) {
		got := make(chan *Socket, 1)
		ts.HandleAsk("me", func(ctx context.Context, s *Socket, _ json.RawMessage) (any, error) {
			got <- s
			return []string{s.User(), s.SessionID(), s.Value("role").(string), s.Request().URL.Query().Get("k")}, nil
		})
		c := dial(t, ts.url+"?k=ok")
		c.begin()
		c.send(`{"sys":5,"topic":"me","id":1}`)
		if s := c.read(); s != `{"sys":7,"msg":["u","sess","x","ok"],"id":1}` {
			t.Fatalf("me = %s", s)
		}
		<-got
	})
	ts403 := newTestServer(t, nil, Options{SessionParser: parser, RefuseWithHTTP403: true})
	_, res, err := websocket.DefaultDialer.Dial(ts403.url+"?k=app", nil)
	if err == nil || res == nil || res.StatusCode != http.StatusForbidden {
		t.Fatalf("RefuseWithHTTP403: %v %v", err, res)
	}
}

func TestOriginCheck(t *testing.T) {
	ts := newTestServer(t, nil, Options{AllowedOrigins: []string{"https://good.example"}, HeartbeatInterval: -1})
	host := strings.TrimPrefix(ts.url, "ws://")
	for _, tt := range []struct {
		origin string
		ok     bool
	}{{"", true}, {"http://" + host, true}, {"https://good.example", true}, {"https://evil.example", false}} {
		h := http.Header{}
		if tt.origin != "" {
			h.Set("Origin", tt.origin)
		}
		ws, res, err := websocket.DefaultDialer.Dial(ts.url, h)
		if tt.ok != (err == nil) {
			t.Fatalf("origin %q: err %v", tt.origin, err)
		}
		if err == nil {
			ws.Close()
		} else if res.StatusCode != http.StatusForbidden {
			t.Fatalf("origin %q: status %d", tt.origin, res.StatusCode)
		}
	}
}

func TestPublisherAndControl(t *testing.T) {
	b := scaler.NewMemoryBackend(scaler.MemoryOptions{Logger: quietLogger()})
	sc := b.Instance()
	t.Cleanup(func() { _ = sc.Close(context.Background()) }) // after the server's shutdown
	ts := newTestServer(t, sc, Options{HeartbeatInterval: -1, BootGrace: 50 * time.Millisecond,
		SessionParser: func(r *http.Request) (*Session, error) {
			return &Session{User: r.URL.Query().Get("u"), SessionID: r.URL.Query().Get("s")}, nil
		}})
	pub, err := NewPublisher(b.Instance(), PublisherOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	alice := dial(t, ts.url+"?u=alice&s=s1")
	bob := dial(t, ts.url+"?u=bob&s=s2")
	alice.begin()
	bob.begin()
	bob.subscribe("room", 1)

	if _, err := pub.Publish(ctx, "room", "m", 1, PublishOptions{}); err != nil {
		t.Fatal(err)
	}
	if m := bob.readMsg(); m.Sys != protocol.SysFeed || string(m.Msg) != "1" {
		t.Fatalf("bob got %+v", m)
	}
	steps := []struct {
		name string
		do   func() error
		who  *client
		want string
	}{
		{"broadcast", func() error { return pub.Broadcast(ctx, "b", "x") }, alice, `{"sys":11,"topic":"b","msg":"x"}`},
		{"tell user", func() error { return pub.TellUser(ctx, "bob", "t", 2) }, bob, `{"sys":6,"topic":"t","msg":2}`},
		{"tell session", func() error { return pub.TellSession(ctx, "s1", "t", 3) }, alice, `{"sys":6,"topic":"t","msg":3}`},
		{"boot channel", func() error { return pub.BootChannel(ctx, "room") }, bob, `"code":"channel_booted","channel":"room"`},
		{"boot user", func() error { return pub.BootUser(ctx, "alice", "bye") }, alice, `{"sys":9,"reason":"bye"}`},
	}
	for _, st := range steps {
		if err := st.do(); err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		if st.name == "broadcast" {
			if got := bob.read(); got != st.want {
				t.Fatalf("broadcast to bob: %s", got)
			}
		}
		if got := st.who.read(); !strings.Contains(got, st.want) {
			t.Fatalf("%s: got %s, want %s", st.name, got, st.want)
		}
	}
	if code, reason := alice.expectClose(); code != protocol.CloseBooted || reason != "bye" {
		t.Fatalf("boot closed %d %q", code, reason)
	}
	waitFor(t, "room vacated", func() bool { return len(ts.Channels()) == 1 }) // only bob's user channel
	if _, err := pub.Publish(ctx, "_reserved", "m", 1, PublishOptions{}); !errors.Is(err, ErrBadChannel) {
		t.Fatalf("publish to a reserved channel: %v", err)
	}
	if err := pub.Close(ctx); err != nil {
		t.Fatal(err)
	}
}
