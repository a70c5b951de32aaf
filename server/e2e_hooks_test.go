package server_test

// User hooks: each is called when it should be, and Stats and Channels
// agree; hooks that panic are recovered and logged with the socket id, the
// process lives, other sockets go on, nothing leaks; a panic in OnOpen
// closes that socket with 1011. No hook runs under an internal lock:
// OnEvent may call Stats. With Options.Logger set, nothing logs elsewhere.

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sss-go/sss/internal/testutil"
	"github.com/sss-go/sss/protocol"
	"github.com/sss-go/sss/server"
)

// logRecorder is a slog.Handler keeping every record's message and
// attributes (as text).
type logRecorder struct {
	mu   sync.Mutex
	recs []map[string]string
}

func (l *logRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (l *logRecorder) WithAttrs([]slog.Attr) slog.Handler       { return l }
func (l *logRecorder) WithGroup(string) slog.Handler            { return l }
func (l *logRecorder) Handle(_ context.Context, r slog.Record) error {
	m := map[string]string{"msg": r.Message}
	r.Attrs(func(a slog.Attr) bool {
		m[a.Key] = a.Value.String()
		return true
	})
	l.mu.Lock()
	l.recs = append(l.recs, m)
	l.mu.Unlock()
	return nil
}

// find returns the first record with the given attribute values.
func (l *logRecorder) find(want map[string]string) map[string]string {
	l.mu.Lock()
	defer l.mu.Unlock()
next:
	for _, r := range l.recs {
		for k, v := range want {
			if r[k] != v {
				continue next
			}
		}
		return r
	}
	return nil
}

// boom is what the hooks of these tests panic with.
const boom = "boom from a hook"

func TestHookPanicsRecovered(t *testing.T) {
	for _, tc := range []struct {
		name string
		// set installs a hook that panics for user "boom" or channel
		// "boom", storing the socket id (if any) in id.
		set     func(o *server.Options, id *atomic.Value)
		trigger func(t *testing.T, a *e2eApp)
		socket  bool // the log names a socket
	}{
		{"OnOpen", func(o *server.Options, id *atomic.Value) {
			o.OnOpen = func(s *server.Socket) {
				if s.User() == "boom" {
					id.Store(s.ID())
					panic(boom)
				}
			}
		}, func(t *testing.T, a *e2eApp) {
			c := a.dial(t, "user=boom")
			c.ExpectClose(protocol.CloseInternalError)
		}, true},
		{"OnClose", func(o *server.Options, id *atomic.Value) {
			o.OnClose = func(s *server.Socket, code int, reason string) {
				if s.User() == "boom" {
					id.Store(s.ID())
					panic(boom)
				}
			}
		}, func(t *testing.T, a *e2eApp) {
			c := a.dial(t, "user=boom")
			c.SendClose(protocol.CloseByClient, "bye")
			c.WaitClosed()
		}, true},
		{"OnSubscribe", func(o *server.Options, id *atomic.Value) {
			o.OnSubscribe = func(s *server.Socket, ch string) {
				if ch == "boom" {
					id.Store(s.ID())
					panic(boom)
				}
			}
		}, func(t *testing.T, a *e2eApp) {
			c := a.dial(t, "")
			c.subscribe("boom")
			c.expectOpen()
		}, true},
		{"OnUnsubscribe", func(o *server.Options, id *atomic.Value) {
			o.OnUnsubscribe = func(s *server.Socket, ch string) {
				if ch == "boom" {
					id.Store(s.ID())
					panic(boom)
				}
			}
		}, func(t *testing.T, a *e2eApp) {
			c := a.dial(t, "")
			c.subscribe("boom")
			c.Send(`{"sys":2,"channel":"boom"}`)
			c.expectOpen()
		}, true},
		{"OnChannelOccupied", func(o *server.Options, id *atomic.Value) {
			o.OnChannelOccupied = func(ch string) {
				if ch == "boom" {
					panic(boom)
				}
			}
		}, func(t *testing.T, a *e2eApp) {
			c := a.dial(t, "")
			c.subscribe("boom")
			c.expectOpen()
		}, false},
		{"OnChannelVacated", func(o *server.Options, id *atomic.Value) {
			o.OnChannelVacated = func(ch string) {
				if ch == "boom" {
					panic(boom)
				}
			}
		}, func(t *testing.T, a *e2eApp) {
			c := a.dial(t, "")
			c.subscribe("boom")
			c.Send(`{"sys":2,"channel":"boom"}`)
			c.expectOpen()
		}, false},
		{"OnEvent", func(o *server.Options, id *atomic.Value) {
			o.OnEvent = func(e server.Event) {
				if e.Channel == "boom" {
					panic(boom)
				}
			}
		}, func(t *testing.T, a *e2eApp) {
			c := a.dial(t, "")
			c.subscribe("boom")
			u := a.publish("boom", "t", "1") // publish and delivery events
			c.expectFeed("boom", "t", "1", u)
		}, false},
		{"SessionParser", func(o *server.Options, id *atomic.Value) {
			o.SessionParser = func(r *http.Request) (*server.Session, error) {
				if r.URL.Query().Get("user") == "boom" {
					panic(boom)
				}
				return e2eSessionParser(r)
			}
		}, func(t *testing.T, a *e2eApp) {
			_, resp, err := a.dialRaw(t, "user=boom", nil)
			if err == nil || resp == nil || resp.StatusCode != http.StatusInternalServerError {
				t.Fatalf("upgrade with a panicking session parser: %v, %v; want HTTP 500", err, resp)
			}
		}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			testutil.CheckLeaks(t)
			logs := &logRecorder{}
			o := e2eOptions()
			o.Logger = slog.New(logs)
			var id atomic.Value
			tc.set(&o, &id)
			a := startE2E(t, nil, o)
			w := a.dial(t, "")
			w.subscribe("news")
			tc.trigger(t, a)
			// The process lives and other sockets still get their FEEDs.
			u := a.publish("news", "t", `"after"`)
			w.expectFeed("news", "t", `"after"`, u)
			// Some hooks run after the client saw their effect (OnClose
			// runs once the server closed the connection): read the
			// socket id the hook stored when it has run.
			testutil.WaitFor(t, e2eTimeout, func() bool {
				want := map[string]string{"panic": boom}
				if tc.socket {
					sid, _ := id.Load().(string)
					if sid == "" {
						return false
					}
					want["socket"] = sid
				}
				return logs.find(want) != nil
			}, "the panic logged")
		})
	}
}

// TestOnEventMayCallStats: OnEvent runs under no internal lock, so it may
// call srv.Stats() during a fan-out and during a slow-consumer overflow.
func TestOnEventMayCallStats(t *testing.T) {
	// start starts a server whose OnEvent calls Stats on events of kind
	// k and reports them on the returned channel.
	start := func(t *testing.T, k server.EventKind) (*e2eApp, <-chan struct{}) {
		var srv atomic.Pointer[server.Server]
		seen := make(chan struct{}, 1)
		o := e2eOptions()
		o.SendQueueMessages = 8
		o.OnEvent = func(e server.Event) {
			if e.Kind != k {
				return
			}
			if s := srv.Load(); s != nil {
				_ = s.Stats()
			}
			select {
			case seen <- struct{}{}:
			default:
			}
		}
		a := startE2E(t, nil, o)
		srv.Store(a.srv)
		return a, seen
	}
	waitSeen := func(t *testing.T, seen <-chan struct{}, what string) {
		t.Helper()
		select {
		case <-seen:
		case <-time.After(10 * time.Second): // bounded: a deadlock fails here
			t.Fatalf("no %s event that called Stats within 10 s (deadlocked?)", what)
		}
	}
	t.Run("fan-out", func(t *testing.T) {
		testutil.CheckLeaks(t)
		a, seen := start(t, server.EventDelivery)
		w := a.dial(t, "")
		w.subscribe("fan")
		u := a.publish("fan", "t", "1")
		waitSeen(t, seen, "delivery")
		w.expectFeed("fan", "t", "1", u)
	})
	t.Run("overflow", func(t *testing.T) {
		testutil.CheckLeaks(t)
		a, seen := start(t, server.EventSlowConsumer)
		w := a.dial(t, "")
		w.subscribe("fan")
		slow := a.dial(t, "")
		slow.subscribe("fan")
		slow.PauseReads()
		big := fmt.Sprintf(`"%060000d"`, 0)
		overflowed := false
		for i := 0; i < 1000 && !overflowed; i++ {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			u, err := a.srv.Publish(ctx, "fan", "big", json.RawMessage(big), server.PublishOptions{})
			cancel()
			if err != nil {
				t.Fatal(err)
			}
			// The socket that reads has each one before the next, so
			// that only the other one overflows on a loaded machine.
			if m := w.Next(); !strings.Contains(m, `"uid":"`+u.String()+`"`) {
				t.Fatalf("reader got %.100s, want %v", m, u)
			}
			select {
			case <-seen:
				overflowed = true
			default:
			}
		}
		if !overflowed {
			waitSeen(t, seen, "slow consumer")
		}
		slow.ResumeReads()
		if code, _ := slow.WaitClosed(); code != protocol.CloseSlowConsumer {
			t.Errorf("slow consumer closed with %d, want 4002", code)
		}
		u := a.publish("fan", "t", "2")
		w.expectFeed("fan", "t", "2", u)
	})
}

func TestE2EHooksAndStats(t *testing.T) {
	var mu sync.Mutex
	var events []string
	rec := func(s string) {
		mu.Lock()
		events = append(events, s)
		mu.Unlock()
	}
	count := func(s string) int {
		mu.Lock()
		defer mu.Unlock()
		n := 0
		for _, e := range events {
			if e == s {
				n++
			}
		}
		return n
	}
	o := e2eOptions()
	o.OnOpen = func(sock *server.Socket) { rec("open " + sock.User()) }
	o.OnClose = func(sock *server.Socket, code int, reason string) { rec(fmt.Sprintf("close %s %d", sock.User(), code)) }
	o.OnSubscribe = func(sock *server.Socket, ch string) { rec("sub " + sock.User() + " " + ch) }
	o.OnUnsubscribe = func(sock *server.Socket, ch string) { rec("unsub " + sock.User() + " " + ch) }
	o.OnChannelOccupied = func(ch string) { rec("occupied " + ch) }
	o.OnChannelVacated = func(ch string) { rec("vacated " + ch) }
	a := startE2E(t, nil, o)
	c1 := a.dial(t, "user=u1")
	c2 := a.dial(t, "user=u2")
	c1.subscribe("hk")
	c2.subscribe("hk")
	c2.subscribe("hk2")
	if got := a.srv.Channels(); strings.Join(got, ",") != "hk,hk2" {
		t.Errorf("Channels() = %q, want [hk hk2] (sorted)", got)
	}
	st := a.srv.Stats()
	if st.Sockets != 2 || st.Channels != 2 || st.Subscriptions != 3 {
		t.Errorf("Stats %+v, want 2 sockets, 2 channels, 3 subscriptions", st)
	}
	u := a.publish("hk", "t", "1")
	c1.expectFeed("hk", "t", "1", u)
	c2.expectFeed("hk", "t", "1", u)
	c1.Send(`{"sys":2,"channel":"hk"}`)
	c1.expectOpen()
	c2.SendClose(protocol.CloseByClient, "")
	c2.WaitClosed()
	testutil.WaitFor(t, e2eTimeout, func() bool {
		return count("open u1") == 1 && count("open u2") == 1 && count("sub u1 hk") == 1 && count("sub u2 hk") == 1 &&
			count("unsub u1 hk") == 1 && count("unsub u2 hk") == 1 && count("unsub u2 hk2") == 1 &&
			count("occupied hk") == 1 && count("occupied hk2") == 1 && count("vacated hk") == 1 && count("vacated hk2") == 1 &&
			count("close u2 4000") == 1
	}, "hooks")
	st = a.srv.Stats()
	if st.Sockets != 1 || st.Channels != 0 || st.Subscriptions != 0 || st.Published < 1 || st.Delivered < 2 {
		t.Errorf("Stats %+v after the leaves", st)
	}
	if len(a.srv.Channels()) != 0 {
		t.Errorf("Channels() = %q, want none", a.srv.Channels())
	}
}

// e2eRecordHandler counts the records logged through it.
type e2eRecordHandler struct {
	mu   sync.Mutex
	msgs []string
}

func (h *e2eRecordHandler) Enabled(context.Context, slog.Level) bool { return true }

func (h *e2eRecordHandler) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	h.msgs = append(h.msgs, r.Message)
	h.mu.Unlock()
	return nil
}

func (h *e2eRecordHandler) WithAttrs([]slog.Attr) slog.Handler { return h }

func (h *e2eRecordHandler) WithGroup(string) slog.Handler { return h }

// TestE2ELoggerOption: with Options.Logger set, nothing the server starts
// (its own memory scaler included) logs to slog.Default().
func TestE2ELoggerOption(t *testing.T) {
	rec := &e2eRecordHandler{}
	old := slog.Default()
	slog.SetDefault(slog.New(rec))
	defer slog.SetDefault(old)
	func() {
		a := startE2E(t, nil, e2eOptions())
		c := a.dial(t, "")
		c.subscribe("log")
		ctx, cancel := context.WithTimeout(context.Background(), e2eTimeout)
		defer cancel()
		if err := a.srv.Shutdown(ctx); err != nil {
			t.Fatal(err)
		}
		c.WaitClosed()
	}()
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.msgs) > 0 {
		t.Errorf("with Options.Logger set, %d records went to slog.Default(): %q", len(rec.msgs), rec.msgs)
	}
}
