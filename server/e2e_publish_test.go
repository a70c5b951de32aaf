package server_test

// Publish as subscribers see it: the FEED (docs/protocol.md, "5.5 FEED"),
// UPDATESUB for an excluded publisher ("5.6 UPDATESUB"), idempotency keys,
// refused and uncertain publishes.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync/atomic"
	"testing"

	"github.com/sss-go/sss/protocol"
	"github.com/sss-go/sss/scaler"
	"github.com/sss-go/sss/server"
)

func TestE2EFeedShape(t *testing.T) {
	a := startE2E(t, nil, e2eOptions())
	c := a.dial(t, "")
	pos := c.subscribe("sport")
	msgs := []string{`{"title":"goal","n":[1,2.5,null,true]}`, `"héllo"`, `null`, `42`, `[]`, `{}`}
	for i, msg := range msgs {
		uid := a.publish("sport", "article", msg)
		if uid.Epoch != pos.Epoch || uid.Seq != pos.Seq+uint64(i)+1 {
			t.Fatalf("publication %d: uid %s after position %s", i, uid, pos)
		}
		c.expectFeed("sport", "article", msg, uid)
	}
	// Topics are any string, escaped as JSON without HTML escaping.
	topic := "t\"<&>é\n\\"
	uid := a.publish("sport", topic, `"<&>"`)
	c.expectExact(`{"sys":8,"topic":"t\"<&>é\n\\","msg":"<&>","channel":"sport","uid":"` + uid.String() + `"}`)
	// Values the server marshals itself.
	uid, err := a.srv.Publish(e2eCtx(t), "sport", "typed", map[string]string{"a": "<&>"}, server.PublishOptions{})
	if err != nil {
		t.Fatal(err)
	}
	c.expectFeed("sport", "typed", `{"a":"<&>"}`, uid)
}

// collectStream reads frames until it has n stream items (FEED or
// UPDATESUB of channel) and the wanted number of RESPONSEs; it returns the
// items and the responses' msgs by id.
func collectStream(t *testing.T, c *e2eConn, channel string, n, responses int) ([]e2eMsg, map[string]string) {
	t.Helper()
	var items []e2eMsg
	resp := map[string]string{}
	for len(items) < n || len(resp) < responses {
		m := c.nextMsg()
		switch m.sys() {
		case 8, 12:
			if m.str("channel") != channel {
				t.Fatalf("frame of another channel: %s", m.raw)
			}
			items = append(items, m)
		case 7:
			if m.has("err") {
				t.Fatalf("ask failed: %s", m.raw)
			}
			resp[string(m.fields["id"])] = m.str("msg")
		default:
			t.Fatalf("unexpected frame %s", m.raw)
		}
	}
	return items, resp
}

func TestE2EUpdateSub(t *testing.T) {
	a := startE2E(t, nil, e2eOptions())
	t.Run("in stream order", func(t *testing.T) {
		s := a.dial(t, "")
		o := a.dial(t, "")
		pos := s.subscribe("ex")
		o.subscribe("ex")
		u1 := a.publish("ex", "t", `1`)
		s.Send(`{"sys":5,"topic":"pub","msg":{"channel":"ex","topic":"mine","msg":{"v":2},"exclude":true},"id":"x"}`)
		items, resp := collectStream(t, s, "ex", 2, 1)
		u2 := e2eMustUID(t, resp[`"x"`])
		u3 := a.publish("ex", "t", `3`)
		more, _ := collectStream(t, s, "ex", 1, 0)
		items = append(items, more...)
		want := []string{e2eFeed("ex", "t", `1`, u1), e2eUpdateSub("ex", u2), e2eFeed("ex", "t", `3`, u3)}
		for i, w := range want {
			if items[i].raw != w {
				t.Errorf("socket publishing with exclusion, item %d: got %s, want %s", i, items[i].raw, w)
			}
		}
		if u1.Seq != pos.Seq+1 || u2.Seq != u1.Seq+1 || u3.Seq != u2.Seq+1 {
			t.Errorf("uids %s %s %s after %s", u1, u2, u3, pos)
		}
		o.expectFeed("ex", "t", `1`, u1)
		o.expectFeed("ex", "mine", `{"v":2}`, u2)
		o.expectFeed("ex", "t", `3`, u3)
		s.expectOpen()
	})
	t.Run("user channel", func(t *testing.T) {
		s := a.dial(t, "user=xavier")
		s.begin()
		o := a.dial(t, "user=xavier")
		o.begin()
		s.Send(`{"sys":5,"topic":"pub","msg":{"channel":"_user.xavier","topic":"note","msg":"self","exclude":true},"id":"u"}`)
		items, resp := collectStream(t, s, "_user.xavier", 1, 1)
		u := e2eMustUID(t, resp[`"u"`])
		if items[0].raw != e2eUpdateSub("_user.xavier", u) {
			t.Fatalf("got %s, want the UPDATESUB of %s", items[0].raw, u)
		}
		o.expectFeed("_user.xavier", "note", `"self"`, u)
	})
	t.Run("from a tell handler", func(t *testing.T) {
		// Tells are handled in order, so the publications are too: every
		// third one includes the sender (FEED), the others exclude it
		// (UPDATESUB); a subscriber that did not publish gets FEEDs.
		const n = 50
		s := a.dial(t, "")
		o := a.dial(t, "")
		pos := s.subscribe("extell")
		o.subscribe("extell")
		for i := 0; i < n; i++ {
			s.Send(fmt.Sprintf(`{"sys":6,"topic":"pub","msg":{"channel":"extell","topic":"t","msg":%d,"exclude":%v}}`, i, i%3 != 0))
		}
		items, _ := collectStream(t, s, "extell", n, 0)
		for i, m := range items {
			u := protocol.UID{Epoch: pos.Epoch, Seq: pos.Seq + uint64(i) + 1}
			want := e2eUpdateSub("extell", u)
			if i%3 == 0 {
				want = e2eFeed("extell", "t", strconv.Itoa(i), u)
			}
			if m.raw != want {
				t.Fatalf("publication %d: got %s, want %s", i, m.raw, want)
			}
			o.expectFeed("extell", "t", strconv.Itoa(i), u)
		}
		s.expectOpen()
	})
	t.Run("not subscribed: nothing", func(t *testing.T) {
		s := a.dial(t, "")
		o := a.dial(t, "")
		o.subscribe("ex2")
		m := s.askRaw("pub", `{"channel":"ex2","topic":"mine","msg":1,"exclude":true}`)
		u := e2eMustUID(t, m.str("msg"))
		o.expectFeed("ex2", "mine", `1`, u)
		s.expectOpen()
	})
	t.Run("concurrent publishers", func(t *testing.T) {
		const others, mine = 150, 30
		s := a.dial(t, "")
		o := a.dial(t, "")
		pos := s.subscribe("exs")
		o.subscribe("exs")
		errc := make(chan error, 1)
		ctx := e2eCtx(t)
		go func() {
			for i := 0; i < others; i++ {
				if _, err := a.srv.Publish(ctx, "exs", "other", json.RawMessage(strconv.Itoa(i)), server.PublishOptions{}); err != nil {
					errc <- err
					return
				}
			}
			errc <- nil
		}()
		for i := 0; i < mine; i++ {
			s.Send(fmt.Sprintf(`{"sys":5,"topic":"pub","msg":{"channel":"exs","topic":"mine","msg":%d,"exclude":true},"id":%d}`, i, i))
		}
		items, resp := collectStream(t, s, "exs", others+mine, mine)
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
		excluded := map[string]bool{}
		for _, u := range resp {
			excluded[u] = true
		}
		for i, m := range items {
			want := protocol.UID{Epoch: pos.Epoch, Seq: pos.Seq + uint64(i) + 1}.String()
			if m.str("uid") != want {
				t.Fatalf("item %d: %s, want uid %s (stream order, gap-free)", i, m.raw, want)
			}
			if excluded[want] != (m.sys() == 12) {
				t.Fatalf("item %d: %s; the socket's own publications must be UPDATESUB, others FEED", i, m.raw)
			}
			if m.sys() == 12 && len(m.keys) != 3 {
				t.Fatalf("UPDATESUB has keys %q, want sys, channel, uid", m.keys)
			}
		}
		oi, _ := collectStream(t, o, "exs", others+mine, 0)
		for i, m := range oi {
			if m.sys() != 8 || m.str("uid") != items[i].str("uid") {
				t.Fatalf("other subscriber item %d: %s", i, m.raw)
			}
		}
		s.expectOpen()
	})
}

func TestE2EIdempotentPublish(t *testing.T) {
	a := startE2E(t, nil, e2eOptions())
	c := a.dial(t, "")
	c.subscribe("idem")
	ctx := e2eCtx(t)
	u1, err := a.srv.Publish(ctx, "idem", "t", json.RawMessage(`1`), server.PublishOptions{IdempotencyKey: "k1"})
	if err != nil {
		t.Fatal(err)
	}
	u2, err := a.srv.Publish(ctx, "idem", "t", json.RawMessage(`1`), server.PublishOptions{IdempotencyKey: "k1"})
	if err != nil {
		t.Fatal(err)
	}
	if u1 != u2 {
		t.Fatalf("retried publish got %s, first %s", u2, u1)
	}
	c.expectFeed("idem", "t", "1", u1)
	u3 := a.publish("idem", "t", "2")
	c.expectFeed("idem", "t", "2", u3) // no second FEED of k1 before it
}

func TestE2EPublishErrors(t *testing.T) {
	a := startE2E(t, nil, e2eOptions())
	c := a.dial(t, "")
	c.subscribe("pe")
	ctx := e2eCtx(t)
	for _, tc := range []struct {
		name, channel, topic string
		msg                  any
	}{
		{"invalid channel", "a b", "t", 1},
		{"empty channel", "", "t", 1},
		{"reserved channel", "_x", "t", 1},
		{"empty topic", "pe", "", 1},
		{"invalid raw JSON", "pe", "t", json.RawMessage(`{bad`)},
		{"unmarshalable value", "pe", "t", make(chan int)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if u, err := a.srv.Publish(ctx, tc.channel, tc.topic, tc.msg, server.PublishOptions{}); err == nil {
				t.Fatalf("Publish succeeded with uid %s", u)
			}
		})
	}
	if err := a.srv.Broadcast(ctx, "t", json.RawMessage(`{bad`)); err == nil {
		t.Error("Broadcast of invalid JSON succeeded")
	}
	if err := a.srv.TellSocket(ctx, c.whoami(), "t", json.RawMessage(`[`)); err == nil {
		t.Error("TellSocket of invalid JSON succeeded")
	}
	// Nothing reached the subscriber, and every frame stayed valid JSON.
	u := a.publish("pe", "t", `"ok"`)
	c.expectFeed("pe", "t", `"ok"`, u)
}

// uncertainScaler's Publish stores nothing and reports ErrUncertain.
type uncertainScaler struct{ scaler.Scaler }

func (u uncertainScaler) Publish(ctx context.Context, channel, topic string, msg json.RawMessage, opts scaler.PublishOptions) (protocol.UID, error) {
	return protocol.UID{}, fmt.Errorf("test publish %q: %w", channel, scaler.ErrUncertain)
}

// TestPublishUncertain: an uncertain scaler publish reaches callers of
// Server.Publish and Publisher.Publish, and EventPublish, as an error
// satisfying errors.Is(err, scaler.ErrUncertain) (not ErrUnavailable).
func TestPublishUncertain(t *testing.T) {
	sc := uncertainScaler{scaler.NewMemory(scaler.MemoryOptions{Logger: e2eLogger()})}
	var evErr atomic.Value
	o := e2eOptions()
	o.OnEvent = func(e server.Event) {
		if e.Kind == server.EventPublish && e.Err != nil {
			evErr.Store(e.Err)
		}
	}
	a := startE2E(t, sc, o)
	_, err := a.srv.Publish(e2eCtx(t), "ch", "t", 1, server.PublishOptions{IdempotencyKey: "k"})
	if !errors.Is(err, scaler.ErrUncertain) || errors.Is(err, scaler.ErrUnavailable) {
		t.Errorf("Server.Publish = %v, want an error wrapping scaler.ErrUncertain", err)
	}
	if e, _ := evErr.Load().(error); !errors.Is(e, scaler.ErrUncertain) {
		t.Errorf("EventPublish.Err = %v, want scaler.ErrUncertain", e)
	}
	p, err := server.NewPublisher(sc, server.PublisherOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Publish(e2eCtx(t), "ch", "t", 1, server.PublishOptions{IdempotencyKey: "k"}); !errors.Is(err, scaler.ErrUncertain) {
		t.Errorf("Publisher.Publish = %v, want an error wrapping scaler.ErrUncertain", err)
	}
}
