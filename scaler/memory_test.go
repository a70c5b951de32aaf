package scaler_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/sss-go/sss/protocol"
	"github.com/sss-go/sss/scaler"
	"github.com/sss-go/sss/scaler/scalertest"
)

// rec records what a Handler receives.
type rec struct {
	mu       sync.Mutex
	pubs     map[string][]scaler.Publication
	resets   []resetCall
	controls []scaler.Control
	events   []scaler.Event
	sig      chan struct{}
}

type resetCall struct {
	channel string
	pos     protocol.UID
	err     error
}

func newRec() *rec {
	return &rec{pubs: make(map[string][]scaler.Publication), sig: make(chan struct{})}
}

func (r *rec) changed() {
	close(r.sig)
	r.sig = make(chan struct{})
}

func (r *rec) handler() scaler.Handler {
	return scaler.Handler{
		Publication: func(p scaler.Publication) {
			r.mu.Lock()
			r.pubs[p.Channel] = append(r.pubs[p.Channel], p)
			r.changed()
			r.mu.Unlock()
		},
		Reset: func(ch string, pos protocol.UID, err error) {
			r.mu.Lock()
			r.resets = append(r.resets, resetCall{ch, pos, err})
			r.changed()
			r.mu.Unlock()
		},
		Control: func(c scaler.Control) {
			r.mu.Lock()
			r.controls = append(r.controls, c)
			r.changed()
			r.mu.Unlock()
		},
		Event: func(e scaler.Event) {
			r.mu.Lock()
			r.events = append(r.events, e)
			r.changed()
			r.mu.Unlock()
		},
	}
}

// wait blocks until cond (called with r.mu held) holds, failing after 15 s.
func (r *rec) wait(t *testing.T, what string, cond func(r *rec) bool) {
	t.Helper()
	timeout := time.NewTimer(15 * time.Second)
	defer timeout.Stop()
	for {
		r.mu.Lock()
		ok := cond(r)
		sig := r.sig
		r.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-sig:
		case <-timeout.C:
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

func (r *rec) hasEvent(k scaler.EventKind, ch string) bool {
	for _, e := range r.events {
		if e.Kind == k && e.Channel == ch {
			return true
		}
	}
	return false
}

func start(t *testing.T, b *scaler.MemoryBackend) (*scaler.Memory, *rec) {
	t.Helper()
	m := b.Instance()
	r := newRec()
	if err := m.Start(context.Background(), r.handler()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := m.Close(ctx); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	return m, r
}

func msg(i int) json.RawMessage { return json.RawMessage(fmt.Sprintf(`{"i":%d}`, i)) }

func TestMemorySmoke(t *testing.T) {
	ctx := context.Background()
	b := scaler.NewMemoryBackend(scaler.MemoryOptions{CheckInterval: 20 * time.Millisecond, LeaseTTL: 300 * time.Millisecond})
	a, _ := start(t, b)
	c, rc := start(t, b)
	pos, err := c.Subscribe(ctx, "ch")
	if err != nil || pos.Seq != 0 || !protocol.ValidEpoch(pos.Epoch) {
		t.Fatalf("subscribe: %v %v", pos, err)
	}
	for i := 1; i <= 10; i++ {
		uid, err := a.Publish(ctx, "ch", "t", msg(i), scaler.PublishOptions{})
		if err != nil || uid.Seq != uint64(i) || uid.Epoch != pos.Epoch {
			t.Fatalf("publish %d: %v %v", i, uid, err)
		}
	}
	rc.wait(t, "10 publications", func(r *rec) bool { return len(r.pubs["ch"]) == 10 })
	for i, p := range rc.pubs["ch"] {
		if p.UID.Seq != uint64(i+1) || string(p.Msg) != string(msg(i+1)) {
			t.Fatalf("pub %d: %+v", i, p)
		}
	}
}

func TestMemoryRetentionByCount(t *testing.T) {
	ctx := context.Background()
	b := scaler.NewMemoryBackend(scaler.MemoryOptions{
		Retention: func(ch string) scaler.Retention {
			if ch == "short" {
				return scaler.Retention{MaxCount: 3}
			}
			return scaler.Retention{}
		},
	})
	a, ra := start(t, b)
	for i := 1; i <= 5; i++ {
		for _, ch := range []string{"short", "long"} {
			if _, err := a.Publish(ctx, ch, "t", msg(i), scaler.PublishOptions{}); err != nil {
				t.Fatal(err)
			}
		}
	}
	h, err := a.History(ctx, "short", 0)
	if err != nil || len(h) != 3 || h[0].UID.Seq != 3 {
		t.Fatalf("history short: %v %v", h, err)
	}
	h, err = a.History(ctx, "long", 0)
	if err != nil || len(h) != 5 {
		t.Fatalf("history long: %v %v", len(h), err)
	}
	pos, _ := a.Position(ctx, "short")
	if _, err := a.Since(ctx, "short", protocol.UID{Epoch: pos.Epoch, Seq: 1}, 0); !errors.Is(err, scaler.ErrTrimmed) {
		t.Fatalf("since trimmed: %v", err)
	}
	got, err := a.Since(ctx, "short", protocol.UID{Epoch: pos.Epoch, Seq: 2}, 0)
	if err != nil || len(got) != 3 {
		t.Fatalf("since 2: %v %v", got, err)
	}
	ra.wait(t, "trimmed event", func(r *rec) bool { return r.hasEvent(scaler.EventTrimmed, "short") })
}

func TestConformance(t *testing.T) {
	scalertest.Run(t, func(t *testing.T) func() scaler.Scaler {
		b := scaler.NewMemoryBackend(scaler.MemoryOptions{
			LeaseTTL:      300 * time.Millisecond,
			CheckInterval: 50 * time.Millisecond,
			Logger:        slog.New(slog.DiscardHandler),
		})
		return func() scaler.Scaler { return b.Instance() }
	})
}
