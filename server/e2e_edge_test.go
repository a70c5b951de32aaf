package server_test

// Edge cases around the protocol: slow consumers, races between the last
// unsubscribe and a new subscribe, compression, hooks, the Publisher,
// idempotent publishes, bad results and payloads, rate limits, relay
// faults, repeated SYNCs, plain HTTP requests and custom limits.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sss-go/sss/internal/testutil"
	"github.com/sss-go/sss/protocol"
	"github.com/sss-go/sss/scaler"
	"github.com/sss-go/sss/server"
)

func TestE2ESlowConsumer(t *testing.T) {
	for _, tc := range []struct {
		name        string
		msgs, bytes int
	}{{"frames bound", 16, 0}, {"bytes bound", 100000, 256 << 10}} {
		t.Run(tc.name, func(t *testing.T) {
			o := e2eOptions()
			o.SendQueueMessages = tc.msgs
			o.SendQueueBytes = tc.bytes
			e2eSlowConsumer(t, o)
		})
	}
}

// e2eSlowConsumer: a socket that stops reading is closed with 4002 once
// its queue overflows, gets what was written before, and recovers the rest
// by SYNC; a socket that reads is not affected.
func e2eSlowConsumer(t *testing.T, o server.Options) {
	a := startE2E(t, nil, o)
	slow := a.dial(t, "")
	from := slow.subscribe("slow")
	fast := a.dial(t, "")
	fast.subscribe("slow")
	slow.PauseReads()
	big := `"` + strings.Repeat("z", 64<<10) + `"`
	var last protocol.UID
	start := time.Now()
	for i := 0; a.srv.Stats().SlowConsumerCloses == 0; i++ {
		if i == 2000 {
			t.Fatal("no slow-consumer close after 2000 publications of 64 KiB to a socket that does not read")
		}
		last = a.publish("slow", "t", big)
		// The socket that reads has each one before the next is
		// published, so that even on a loaded machine only the one
		// that does not read overflows.
		if m := fast.Next(); !strings.Contains(m, `"uid":"`+last.String()+`"`) {
			t.Fatalf("fast reader got %.100s, want %v", m, last)
		}
	}
	t.Logf("slow consumer closed after %d publications, %v", last.Seq-from.Seq, time.Since(start))
	// The slow one gets what was written, in order, then 4002 (its reader
	// resumes well within the server's write timeout).
	slow.ResumeReads()
	got := from
	for {
		f, ok := slow.NextFrame(e2eTimeout)
		if !ok {
			break
		}
		m := e2eParse(t, string(f.Data))
		if m.sys() != 8 || m.str("uid") != got.Next().String() {
			t.Fatalf("slow reader got %.100s after %s", m.raw, got)
		}
		got = got.Next()
	}
	if slow.CloseCode() != protocol.CloseSlowConsumer {
		t.Fatalf("slow reader closed with %d %q after %v, want 4002", slow.CloseCode(), slow.CloseReason(), time.Since(start))
	}
	// The socket that reads is not affected (it had every publication).
	fast.expectOpen()
	// It recovers the rest by SYNC (or is told it cannot, when the
	// records would not fit its send queue: TestE2ESyncReplyOverQueueBytes).
	c := a.dial(t, "")
	r := c.sync(e2eSyncFrame(e2eEntry("slow", e2eQ(got), "null")))
	if r.result["slow"] {
		if uint64(len(r.records)) != last.Seq-got.Seq {
			t.Fatalf("%d records after %s, want %d", len(r.records), got, last.Seq-got.Seq)
		}
	} else {
		r.expectOutcome(t, "slow", false, protocol.CodeNotRecoverable)
		c.expectExact(e2eUpdateSub("slow", last))
	}
	c.expectOpen()
}

// TestE2ESyncReplyOverQueueBytes: a SYNC whose records outgrow the send
// queue's byte bound (default 4 MiB) must still be answered, with the
// records or "not recoverable"; closing with 4002 would make the client
// reconnect and send the same SYNC forever.
func TestE2ESyncReplyOverQueueBytes(t *testing.T) {
	o := e2eOptions()
	a := startE2E(t, nil, o)
	from := a.position("big")
	big := `"` + strings.Repeat("b", 60<<10) + `"`
	var last protocol.UID
	for i := 0; i < 100; i++ { // 6 MB of missed publications, within MaxRecovery
		last = a.publish("big", "t", big)
	}
	c := a.dial(t, "")
	c.Send(e2eSyncFrame(e2eEntry("big", e2eQ(from), "null")))
	f, ok := c.NextFrame(e2eTimeout)
	if !ok {
		t.Fatalf("SYNC of 100 publications of 60 KiB: closed with %d %q instead of a reply", c.CloseCode(), c.CloseReason())
	}
	m := e2eParse(t, string(f.Data))
	if m.sys() != 4 {
		t.Fatalf("got %.200s, want the SYNC reply", m.raw)
	}
	var res map[string]bool
	_ = json.Unmarshal(m.fields["result"], &res)
	if !res["big"] {
		var errs map[string]json.RawMessage
		_ = json.Unmarshal(m.fields["errors"], &errs)
		if e2eErrField(errs["big"], "code") != protocol.CodeNotRecoverable {
			t.Fatalf("SYNC reply %.300s: false without not_recoverable", m.raw)
		}
		c.expectExact(e2eUpdateSub("big", last))
	}
	c.expectOpen()
}

// TestE2EPublishOverQueueBytes: a publication bigger than a socket's send
// queue can hold is refused by Publish, or delivered; it must not close
// every subscriber with 4002 (their SYNC would fail the same way, forever).
func TestE2EPublishOverQueueBytes(t *testing.T) {
	o := e2eOptions()
	o.SendQueueBytes = 64 << 10
	a := startE2E(t, nil, o)
	c := a.dial(t, "")
	pos := c.subscribe("huge")
	huge := `"` + strings.Repeat("h", 100<<10) + `"`
	u, err := a.srv.Publish(e2eCtx(t), "huge", "t", json.RawMessage(huge), server.PublishOptions{})
	if err != nil {
		t.Logf("Publish refused: %v", err)
		c.expectOpen()
		return
	}
	if u.Seq != pos.Seq+1 {
		t.Fatalf("uid %s after %s", u, pos)
	}
	f, ok := c.NextFrame(e2eTimeout)
	if !ok {
		t.Fatalf("subscriber closed with %d %q by a publication of 100 KiB (SendQueueBytes 64 KiB)", c.CloseCode(), c.CloseReason())
	}
	if string(f.Data) != e2eFeed("huge", "t", huge, u) {
		t.Fatalf("got %.100s, want the FEED", f.Data)
	}
}

func TestE2ESubscribeRacingLastUnsubscribe(t *testing.T) {
	a := startE2E(t, nil, e2eOptions())
	x := a.dial(t, "")
	y := a.dial(t, "")
	for i := 0; i < 60; i++ {
		ch := "flip" + strconv.Itoa(i%3)
		x.subscribe(ch)
		// X's UNSUBSCRIBE (the last local subscriber leaving) and Y's
		// SUBSCRIBE race in two reader goroutines.
		x.Send(`{"sys":2,"channel":"` + ch + `"}`)
		pos := y.subscribe(ch)
		u := a.publish(ch, "t", strconv.Itoa(i))
		if u.Epoch != pos.Epoch || u.Seq != pos.Seq+1 {
			t.Fatalf("round %d: uid %s after lastUid %s", i, u, pos)
		}
		y.expectFeed(ch, "t", strconv.Itoa(i), u)
		y.Send(`{"sys":2,"channel":"` + ch + `"}`)
		// X may still get that FEED: UNSUBSCRIBE has no reply, so it
		// takes effect at some point after it was sent.
		x.drainOpen()
		y.expectOpen()
	}
	testutil.WaitFor(t, e2eTimeout, func() bool { return len(a.srv.Channels()) == 0 }, "no channel left")
}

func TestE2ECompression(t *testing.T) {
	t.Run("declined by default", func(t *testing.T) {
		a := startE2E(t, nil, e2eOptions())
		c, resp, err := e2eDialURL(t, a.url, "", testutil.WireOptions{Compression: true})
		if err != nil {
			t.Fatal(err)
		}
		if ext := resp.Header.Get("Sec-WebSocket-Extensions"); ext != "" {
			t.Errorf("server accepted %q with compression off", ext)
		}
		c.begin()
	})
	t.Run("on", func(t *testing.T) {
		o := e2eOptions()
		o.EnableCompression = true
		a := startE2E(t, nil, o)
		c, resp, err := e2eDialURL(t, a.url, "user=alice", testutil.WireOptions{Compression: true})
		if err != nil {
			t.Fatal(err)
		}
		if ext := resp.Header.Get("Sec-WebSocket-Extensions"); !strings.Contains(ext, "permessage-deflate") {
			t.Errorf("extensions %q, want permessage-deflate", ext)
		}
		m := c.begin()
		if m.str("channel") != "_user.alice" {
			t.Fatalf("BEGIN %s", m.raw)
		}
		pos := c.subscribe("zip")
		msg := `{"text":"` + strings.Repeat("compress me ", 200) + `"}`
		u := a.publish("zip", "t", msg)
		if u.Seq != pos.Seq+1 {
			t.Fatalf("uid %s after %s", u, pos)
		}
		c.expectFeed("zip", "t", msg, u)
		c.Send(`{"sys":5,"topic":"echo","msg":` + msg + `,"id":1}`)
		c.expectExact(`{"sys":7,"msg":` + msg + `,"id":1}`)
		c.SendClose(protocol.CloseByClient, "bye")
		if r := c.ExpectClose(protocol.CloseByClient); r != "bye" {
			t.Errorf("echo reason %q", r)
		}
		c.ExpectTCPClosed()
		// BOOT on a compressed socket.
		b, _, err := e2eDialURL(t, a.url, "", testutil.WireOptions{Compression: true})
		if err != nil {
			t.Fatal(err)
		}
		if err := a.srv.BootSocket(e2eCtx(t), b.whoami(), "zipped"); err != nil {
			t.Fatal(err)
		}
		b.expectExact(`{"sys":9,"reason":"zipped"}`)
		if r := b.ExpectClose(protocol.CloseBooted); r != "zipped" {
			t.Errorf("close reason %q", r)
		}
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

func TestE2EPublisher(t *testing.T) {
	be := scaler.NewMemoryBackend(scaler.MemoryOptions{Logger: e2eLogger()})
	a := startE2E(t, be.Instance(), e2eOptions())
	psc := be.Instance()
	p, err := server.NewPublisher(psc, server.PublisherOptions{Logger: e2eLogger()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = p.Close(context.Background())
		_ = psc.Close(context.Background())
	})
	c := a.dial(t, "user=alice")
	c.begin()
	pos := c.subscribe("jobs")
	ctx := e2eCtx(t)
	u, err := p.Publish(ctx, "jobs", "done", json.RawMessage(`{"job":1}`), server.PublishOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if u.Seq != pos.Seq+1 {
		t.Fatalf("uid %s after %s", u, pos)
	}
	c.expectFeed("jobs", "done", `{"job":1}`, u)
	// A Publisher has no sockets to exclude, and a Server excludes only
	// its own: both are refused, and nothing is published.
	var sock *server.Socket
	a.srv.HandleAsk("grab", func(ctx context.Context, s *server.Socket, msg json.RawMessage) (any, error) {
		sock = s
		return nil, nil
	})
	c.ask("grab", "1")
	if _, err := p.Publish(ctx, "jobs", "done", 2, server.PublishOptions{Exclude: sock}); !errors.Is(err, server.ErrBadOptions) {
		t.Errorf("Publisher.Publish with Exclude = %v, want ErrBadOptions", err)
	}
	other := startE2E(t, be.Instance(), e2eOptions())
	if _, err := other.srv.Publish(ctx, "jobs", "done", 3, server.PublishOptions{Exclude: sock}); !errors.Is(err, server.ErrBadOptions) {
		t.Errorf("Server.Publish excluding another server's socket = %v, want ErrBadOptions", err)
	}
	if err := p.TellUser(ctx, "alice", "hey", json.RawMessage(`1`)); err != nil {
		t.Fatal(err)
	}
	c.expectExact(`{"sys":6,"topic":"hey","msg":1}`)
	if err := p.Broadcast(ctx, "all", json.RawMessage(`2`)); err != nil {
		t.Fatal(err)
	}
	c.expectExact(`{"sys":11,"topic":"all","msg":2}`)
	sess := a.dial(t, "session=worker-s")
	sess.begin()
	if err := p.TellSession(ctx, "worker-s", "t", 3); err != nil {
		t.Fatal(err)
	}
	sess.expectExact(`{"sys":6,"topic":"t","msg":3}`)
	if err := p.TellSocket(ctx, sess.whoami(), "t", 4); err != nil {
		t.Fatal(err)
	}
	sess.expectExact(`{"sys":6,"topic":"t","msg":4}`)
	if err := p.BootChannel(ctx, "jobs"); err != nil {
		t.Fatal(err)
	}
	c.expectExact(`{"err":{"name":"ChannelBooted","message":"removed from channel jobs","code":"channel_booted","channel":"jobs"}}`)
	testutil.WaitFor(t, e2eTimeout, func() bool {
		chs := a.srv.Channels()
		return len(chs) == 1 && chs[0] == "_user.alice"
	}, "jobs vacated")
	if _, err := p.Publish(ctx, "_reserved", "m", 1, server.PublishOptions{}); !errors.Is(err, server.ErrBadChannel) {
		t.Errorf("Publisher.Publish to a reserved channel: %v, want ErrBadChannel", err)
	}
	if err := p.BootUser(ctx, "alice", "worker says bye"); err != nil {
		t.Fatal(err)
	}
	c.expectExact(`{"sys":9,"reason":"worker says bye"}`)
	if r := c.ExpectClose(protocol.CloseBooted); r != "worker says bye" {
		t.Errorf("close reason %q", r)
	}
	for i := 0; i < 2; i++ { // Close is idempotent
		if err := p.Close(ctx); err != nil {
			t.Fatalf("Close #%d: %v", i+1, err)
		}
	}
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

func TestE2ERelayFaults(t *testing.T) {
	be := scaler.NewMemoryBackend(scaler.MemoryOptions{Logger: e2eLogger(), CheckInterval: 100 * time.Millisecond})
	A := startE2E(t, be.Instance(), e2eOptions())
	B := startE2E(t, be.Instance(), e2eOptions())
	c := B.dial(t, "")
	pos := c.subscribe("faulty")
	fi, ok := B.sc.(scaler.FaultInjector)
	if !ok {
		t.Fatalf("%T is no FaultInjector", B.sc)
	}
	fi.DropNextRelay("faulty")
	var uids []protocol.UID
	for i := 0; i < 3; i++ {
		uids = append(uids, A.publish("faulty", "t", strconv.Itoa(i)))
	}
	fi.DelayNextRelay("faulty", 200*time.Millisecond)
	for i := 3; i < 6; i++ {
		uids = append(uids, A.publish("faulty", "t", strconv.Itoa(i)))
	}
	fi.DropNextRelay("faulty") // the last one: found by the position check
	uids = append(uids, A.publish("faulty", "t", "6"))
	for i, u := range uids {
		if u.Seq != pos.Seq+uint64(i)+1 {
			t.Fatalf("uid %s", u)
		}
		c.expectFeed("faulty", "t", strconv.Itoa(i), u)
	}
	c.expectOpen()
}

func TestE2ESyncAgain(t *testing.T) {
	a := startE2E(t, nil, e2eOptions())
	c := a.dial(t, "")
	pos := c.subscribe("again")
	u1 := a.publish("again", "t", "1")
	c.expectFeed("again", "t", "1", u1)
	// A second SYNC for a channel the socket already holds, from before
	// a FEED the socket was sent: recovered, and no FEED twice (the
	// records start after what the socket was sent; the SSS client does
	// not de-duplicate).
	r := c.sync(e2eSyncFrame(e2eEntry("again", e2eQ(pos), "null")))
	r.expectOutcome(t, "again", true, "")
	if len(r.records) != 0 {
		t.Fatalf("records %q, want none: FEED %v was sent already", r.records, u1)
	}
	u2 := a.publish("again", "t", "2")
	c.expectFeed("again", "t", "2", u2)
	c.expectOpen()
	// A repeated entry in one SYNC counts once.
	r = c.sync(e2eSyncFrame(e2eEntry("again", e2eQ(u2), "null"), e2eEntry("again", e2eQ(u2), "null")))
	r.expectOutcome(t, "again", true, "")
	if len(r.records) != 0 {
		t.Fatalf("records %q", r.records)
	}
	u3 := a.publish("again", "t", "3")
	c.expectFeed("again", "t", "3", u3)
	c.expectOpen()
}

func TestE2EPlainHTTP(t *testing.T) {
	a := startE2E(t, nil, e2eOptions())
	for _, method := range []string{http.MethodGet, http.MethodPost, http.MethodHead} {
		req, _ := http.NewRequest(method, a.hs.URL+"/", nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode < 400 || resp.StatusCode >= 500 {
			t.Errorf("%s without upgrade: HTTP %d, want a 4xx", method, resp.StatusCode)
		}
	}
	c := a.dial(t, "")
	c.expectOpen()
}

func TestE2ECustomLimits(t *testing.T) {
	o := e2eOptions()
	o.MaxFrameBytes = 1024
	o.MaxDepth = 4
	o.MaxChannelLen = 10
	a := startE2E(t, nil, o)
	c := a.dial(t, "")
	c.Send(`{"sys":5,"topic":"echo","msg":` + e2eNested(3) + `,"id":1}`)
	c.expectExact(`{"sys":7,"msg":` + e2eNested(3) + `,"id":1}`)
	c.Send(`{"sys":5,"topic":"echo","msg":` + e2eNested(4) + `,"id":1}`)
	c.expectErrFrame(protocol.CodeBadFrame)
	c.subscribe(strings.Repeat("a", 10))
	c.expectSubscribeFail(strings.Repeat("a", 11), protocol.CodeBadChannel)
	c.Send(`{"sys":5,"topic":"echo","msg":"` + strings.Repeat("x", 1024) + `","id":2}`)
	c.ExpectClose(protocol.CloseTooLarge)
}

func TestE2EMaxSubscribersPerChannel(t *testing.T) {
	o := e2eOptions()
	o.Channels = []server.ChannelRule{{Pattern: "small-*", Options: server.ChannelOptions{MaxSubscribers: 2}}}
	a := startE2E(t, nil, o)
	c1, c2, c3 := a.dial(t, ""), a.dial(t, ""), a.dial(t, "")
	c1.subscribe("small-1")
	c2.subscribe("small-1")
	m := c3.subscribeRaw("small-1", "null")
	if string(m.fields["result"]) != "false" || m.errCode() == "" {
		t.Fatalf("third subscriber of a 2-subscriber channel: %s, want result false", m.raw)
	}
	c3.subscribe("other-1")
	c1.Send(`{"sys":2,"channel":"small-1"}`)
	c1.expectOpen()
	c3.subscribe("small-1")
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
func (h *e2eRecordHandler) WithGroup(string) slog.Handler      { return h }

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

// TestE2ESyncReplyOverQueueBytesManyChannels: the byte bound holds for the
// whole SYNC reply, not per channel.
func TestE2ESyncReplyOverQueueBytesManyChannels(t *testing.T) {
	a := startE2E(t, nil, e2eOptions())
	big := `"` + strings.Repeat("b", 60<<10) + `"`
	var entries []string
	for k := 0; k < 4; k++ {
		ch := fmt.Sprintf("big%d", k)
		entries = append(entries, e2eEntry(ch, e2eQ(a.position(ch)), "null"))
		for i := 0; i < 25; i++ { // 1.5 MB each, 6 MB in all
			a.publish(ch, "t", big)
		}
	}
	c := a.dial(t, "")
	c.Send(e2eSyncFrame(entries...))
	f, ok := c.NextFrame(e2eTimeout)
	if !ok {
		t.Fatalf("SYNC of 4 channels x 1.5 MB: closed with %d %q instead of a reply", c.CloseCode(), c.CloseReason())
	}
	m := e2eParse(t, string(f.Data))
	if m.sys() != 4 {
		t.Fatalf("got %.200s, want the SYNC reply", m.raw)
	}
	var res map[string]bool
	var recs []json.RawMessage
	_ = json.Unmarshal(m.fields["result"], &res)
	_ = json.Unmarshal(m.fields["records"], &recs)
	okN := 0
	for _, ok := range res {
		if ok {
			okN++
		}
	}
	if len(res) != 4 || len(recs) != 25*okN {
		t.Fatalf("result %v with %d records, want 25 records per recovered channel", res, len(recs))
	}
	t.Logf("%d of 4 channels recovered, reply of %d bytes", okN, len(f.Data))
	c.drainOpen()
}
