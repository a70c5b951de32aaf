package server

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/sss-go/sss/protocol"
)

func TestBegin(t *testing.T) {
	tests := []struct {
		name     string
		user     string
		hb       bool
		wantProt string
	}{
		{"no user, heartbeats", "", true, `"prot":{"v":1,"hb":true,"hbInterval":30000,"hbThreshold":2500}`},
		{"user, no heartbeats", "alice", false, `"prot":{"v":1}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			opts := Options{SessionParser: func(r *http.Request) (*Session, error) {
				return &Session{User: r.URL.Query().Get("user")}, nil
			}}
			if !tt.hb {
				opts.HeartbeatInterval = -1
			}
			ts := newTestServer(t, nil, opts)
			c := dial(t, ts.url+"?user="+tt.user)
			c.send(`{"sys":3}`)
			raw := c.read()
			if !strings.HasPrefix(raw, `{"sys":3,`) || !strings.Contains(raw, tt.wantProt) {
				t.Fatalf("BEGIN reply %s, want prot %s", raw, tt.wantProt)
			}
			m, _ := protocol.DecodeServer([]byte(raw), protocol.Limits{})
			if tt.user == "" && (m.Channel != "" || m.LastUID != "") {
				t.Fatalf("reply without user has channel: %s", raw)
			}
			if tt.user != "" {
				if m.Channel != "_user."+tt.user {
					t.Fatalf("channel %q", m.Channel)
				}
				if _, err := protocol.ParseUID(m.LastUID); err != nil {
					t.Fatalf("lastUid %q: %v", m.LastUID, err)
				}
				// The user channel is live: a publication arrives as FEED.
				if _, err := ts.Publish(context.Background(), m.Channel, "dm", "hi", PublishOptions{}); err != nil {
					t.Fatal(err)
				}
				f := c.readMsg()
				if f.Sys != protocol.SysFeed || f.Channel != m.Channel || string(f.Msg) != `"hi"` {
					t.Fatalf("feed %+v", f)
				}
			}
		})
	}
}

func TestAsk(t *testing.T) {
	ts := newTestServer(t, nil, Options{HeartbeatInterval: -1})
	ts.HandleAsk("echo", func(ctx context.Context, s *Socket, msg json.RawMessage) (any, error) {
		return msg, nil
	})
	ts.HandleAsk("html", func(ctx context.Context, s *Socket, msg json.RawMessage) (any, error) {
		return map[string]string{"a": "<b>&"}, nil
	})
	ts.HandleAsk("fail", func(ctx context.Context, s *Socket, msg json.RawMessage) (any, error) {
		return nil, errors.New("secret detail")
	})
	ts.HandleAsk("apperr", func(ctx context.Context, s *Socket, msg json.RawMessage) (any, error) {
		return nil, &protocol.Error{Name: "Nope", Message: "no way"}
	})
	ts.HandleAsk("panic", func(ctx context.Context, s *Socket, msg json.RawMessage) (any, error) {
		panic("boom")
	})
	c := dial(t, ts.url)
	c.begin()
	tests := []struct {
		name, req, want string
	}{
		{"echo object", `{"sys":5,"topic":"echo","msg":{"a":[1,null]},"id":1}`, `{"sys":7,"msg":{"a":[1,null]},"id":1}`},
		{"echo string id", `{"sys":5,"topic":"echo","msg":"x","id":"q 1"}`, `{"sys":7,"msg":"x","id":"q 1"}`},
		{"missing msg", `{"sys":5,"topic":"echo","id":0}`, `{"sys":7,"msg":null,"id":0}`},
		{"no html escape", `{"sys":5,"topic":"html","id":2}`, `{"sys":7,"msg":{"a":"<b>&"},"id":2}`},
		{"unknown topic", `{"sys":5,"topic":"nope","id":3}`, `"code":"unknown_topic"`},
		{"error", `{"sys":5,"topic":"fail","id":4}`, `"code":"internal"`},
		{"app error", `{"sys":5,"topic":"apperr","id":5}`, `{"sys":7,"err":{"name":"Nope","message":"no way","code":"app_error"},"id":5}`},
		{"panic", `{"sys":5,"topic":"panic","id":6}`, `"code":"internal"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c.t = t
			c.send(tt.req)
			got := c.read()
			if !strings.Contains(got, tt.want) {
				t.Fatalf("got %s, want %s", got, tt.want)
			}
			if strings.Contains(got, "secret") {
				t.Fatalf("error details leaked: %s", got)
			}
		})
	}
}

func TestTell(t *testing.T) {
	ts := newTestServer(t, nil, Options{HeartbeatInterval: -1})
	got := make(chan string, 1)
	ts.HandleTell("t", func(ctx context.Context, s *Socket, msg json.RawMessage) {
		got <- string(msg)
		_ = s.Tell("back", msg)
	})
	c := dial(t, ts.url)
	c.begin()
	c.send(`{"sys":6,"topic":"t","msg":[1]}`)
	if s := c.read(); s != `{"sys":6,"topic":"back","msg":[1]}` {
		t.Fatalf("tell back %s", s)
	}
	if s := <-got; s != `[1]` {
		t.Fatalf("handler got %s", s)
	}
	c.send(`{"sys":6,"topic":"none"}`)
	if s := c.read(); !strings.Contains(s, `"code":"unknown_topic"`) || !strings.HasPrefix(s, `{"err":`) {
		t.Fatalf("unknown tell answered %s", s)
	}
}

func TestSubscribePublishFanout(t *testing.T) {
	ts := newTestServer(t, nil, Options{HeartbeatInterval: -1})
	ctx := context.Background()
	a, b := dial(t, ts.url), dial(t, ts.url)
	a.begin()
	b.begin()
	ra := a.subscribe("room", 1)
	if _, err := ts.Publish(ctx, "room", "m", 1, PublishOptions{}); err != nil {
		t.Fatal(err)
	}
	f := a.readMsg()
	if f.Sys != protocol.SysFeed || string(f.Msg) != "1" {
		t.Fatalf("feed %+v", f)
	}
	pa, _ := protocol.ParseUID(ra.LastUID)
	pf, _ := protocol.ParseUID(f.UID)
	if pf.Seq != pa.Seq+1 || pf.Epoch != pa.Epoch {
		t.Fatalf("feed uid %s after position %s", f.UID, ra.LastUID)
	}
	rb := b.subscribe("room", 1)
	if rb.LastUID != f.UID {
		t.Fatalf("second subscriber position %s, want %s", rb.LastUID, f.UID)
	}
	for i := 2; i <= 20; i++ {
		if _, err := ts.Publish(ctx, "room", "m", i, PublishOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range []*client{a, b} {
		for i := 2; i <= 20; i++ {
			f := c.readMsg()
			if f.Sys != protocol.SysFeed || string(f.Msg) != itoa(i) {
				t.Fatalf("feed %d: %+v", i, f)
			}
		}
	}
	if got := ts.Channels(); len(got) != 1 || got[0] != "room" {
		t.Fatalf("Channels %v", got)
	}
	waitFor(t, "2 subscriptions", func() bool { return ts.Stats().Subscriptions == 2 })
	// Unsubscribe stops the feed.
	b.send(`{"sys":2,"channel":"room"}`)
	waitFor(t, "unsubscribe", func() bool { return ts.Stats().Subscriptions == 1 })
	if _, err := ts.Publish(ctx, "room", "m", 21, PublishOptions{}); err != nil {
		t.Fatal(err)
	}
	if f := a.readMsg(); string(f.Msg) != "21" {
		t.Fatalf("a got %+v", f)
	}
	b.send(`{"sys":5,"topic":"x","id":9}`)
	if m := b.readMsg(); m.Sys != protocol.SysResponse {
		t.Fatalf("b got %+v after unsubscribe", m)
	}
}

func TestExcludeGetsUpdateSub(t *testing.T) {
	ts := newTestServer(t, nil, Options{HeartbeatInterval: -1})
	ts.HandleTell("post", func(ctx context.Context, s *Socket, msg json.RawMessage) {
		var p struct {
			Echo bool `json:"echo"`
		}
		_ = json.Unmarshal(msg, &p)
		opts := PublishOptions{}
		if !p.Echo {
			opts.Exclude = s
		}
		if _, err := ts.Publish(ctx, "room", "m", msg, opts); err != nil {
			t.Error(err)
		}
	})
	a, b := dial(t, ts.url), dial(t, ts.url)
	a.begin()
	b.begin()
	a.subscribe("room", 1)
	b.subscribe("room", 1)
	for i := 0; i < 50; i++ {
		echo := i%3 == 0
		a.send(`{"sys":6,"topic":"post","msg":{"echo":` + map[bool]string{true: "true", false: "false"}[echo] + `,"i":` + itoa(i) + `}}`)
	}
	last := uint64(0)
	for i := 0; i < 50; i++ {
		fa, fb := a.readMsg(), b.readMsg()
		if fb.Sys != protocol.SysFeed {
			t.Fatalf("b got %+v", fb)
		}
		want := protocol.SysUpdateSub
		if i%3 == 0 {
			want = protocol.SysFeed
		}
		if fa.Sys != want || fa.UID != fb.UID {
			t.Fatalf("publication %d: a got sys %d uid %s, b uid %s", i, fa.Sys, fa.UID, fb.UID)
		}
		u, _ := protocol.ParseUID(fa.UID)
		if u.Seq <= last {
			t.Fatalf("out of order: %d after %d", u.Seq, last)
		}
		last = u.Seq
	}
}
