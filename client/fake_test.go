package client

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/gorilla/websocket"

	"github.com/sss-go/sss/internal/testutil"
	"github.com/sss-go/sss/protocol"
)

// The tests in this file run the client against a scripted server: the test
// plays the server frame by frame, to provoke what a correct server never
// sends (live frames before the SYNC reply, duplicates) and to check the
// exact frames the client sends.

const waitLong = 20 * time.Second

// fakeServer hands every accepted WebSocket connection to the test.
type fakeServer struct {
	t     *testing.T
	srv   *httptest.Server
	conns chan *fakeConn
	mu    sync.Mutex
	all   []*fakeConn
}

type fakeConn struct {
	t  *testing.T
	ws *websocket.Conn
	in chan fakeFrame // frames the client sent, in order
}

type fakeFrame struct {
	text      string
	closeCode int // != 0: the client's close frame
	closeText string
	err       error // read ended
}

func newFakeServer(t *testing.T) *fakeServer {
	t.Helper()
	f := &fakeServer{t: t, conns: make(chan *fakeConn, 16)}
	up := websocket.Upgrader{}
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		fc := &fakeConn{t: t, ws: ws, in: make(chan fakeFrame, 256)}
		// Echo close frames with their reason, as docs/protocol.md §9.2 asks.
		ws.SetCloseHandler(func(code int, text string) error {
			fc.in <- fakeFrame{closeCode: code, closeText: text}
			_ = ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, text), time.Now().Add(time.Second))
			return nil
		})
		f.mu.Lock()
		f.all = append(f.all, fc)
		f.mu.Unlock()
		go func() {
			defer close(fc.in)
			for {
				_, data, err := ws.ReadMessage()
				if err != nil {
					fc.in <- fakeFrame{err: err}
					_ = ws.Close()
					return
				}
				fc.in <- fakeFrame{text: string(data)}
			}
		}()
		f.conns <- fc
	}))
	t.Cleanup(func() {
		f.srv.CloseClientConnections()
		f.mu.Lock()
		for _, fc := range f.all {
			_ = fc.ws.Close()
		}
		f.mu.Unlock()
		f.srv.Close()
	})
	return f
}

func (f *fakeServer) url() string { return "ws" + strings.TrimPrefix(f.srv.URL, "http") }

func (f *fakeServer) accept() *fakeConn {
	f.t.Helper()
	select {
	case fc := <-f.conns:
		return fc
	case <-time.After(waitLong):
		f.t.Fatal("fake server: no connection")
		return nil
	}
}

// next returns the next frame from the client, skipping heartbeat answers
// when skipH.
func (fc *fakeConn) next(skipH bool) fakeFrame {
	fc.t.Helper()
	for {
		select {
		case fr, ok := <-fc.in:
			if !ok {
				fc.t.Fatal("fake server: connection ended")
			}
			if skipH && fr.text == "h" {
				continue
			}
			return fr
		case <-time.After(waitLong):
			fc.t.Fatal("fake server: no frame from the client")
			return fakeFrame{}
		}
	}
}

func (fc *fakeConn) expect(want string) {
	fc.t.Helper()
	if got := fc.next(true); got.text != want {
		fc.t.Fatalf("client sent %+v, want %s", got, want)
	}
}

func (fc *fakeConn) send(b []byte) {
	fc.t.Helper()
	if err := fc.ws.WriteMessage(websocket.TextMessage, b); err != nil {
		fc.t.Fatalf("fake server: write: %v", err)
	}
}

func uid(e string, n uint64) protocol.UID { return protocol.UID{Epoch: e, Seq: n} }

func feed(ch string, n uint64) []byte {
	msg, _ := json.Marshal(n)
	return protocol.AppendFeed(nil, ch, "n", msg, uid("E", n))
}

// recorder collects the numbers delivered to a subscription.
type recorder struct {
	mu   sync.Mutex
	got  []int
	uids []string
	ch   chan struct{}
}

func newRecorder() *recorder { return &recorder{ch: make(chan struct{}, 1<<16)} }

func (r *recorder) on(msg json.RawMessage, uid string) {
	var n int
	_ = json.Unmarshal(msg, &n)
	r.mu.Lock()
	r.got = append(r.got, n)
	r.uids = append(r.uids, uid)
	r.mu.Unlock()
	r.ch <- struct{}{}
}

func (r *recorder) waitN(t *testing.T, n int) []int {
	t.Helper()
	deadline := time.After(waitLong)
	for {
		r.mu.Lock()
		got := append([]int(nil), r.got...)
		r.mu.Unlock()
		if len(got) >= n {
			return got
		}
		select {
		case <-r.ch:
		case <-deadline:
			t.Fatalf("received %d of %d messages: %v", len(got), n, got)
		}
	}
}

func fastOpts() Options {
	return Options{ReconnectBase: 5 * time.Millisecond, ReconnectCap: 50 * time.Millisecond, CloseTimeout: 2 * time.Second}
}

// dialFake dials the fake server and plays BEGIN with prot.
func dialFake(t *testing.T, f *fakeServer, opts Options, prot protocol.Prot, user string) (*Client, *fakeConn) {
	t.Helper()
	type res struct {
		c   *Client
		err error
	}
	done := make(chan res, 1)
	go func() {
		c, err := Dial(context.Background(), f.url(), opts)
		done <- res{c, err}
	}()
	fc := f.accept()
	fc.expect(`{"sys":3}`)
	uc := ""
	if user != "" {
		uc = protocol.UserChannel(user)
	}
	fc.send(protocol.AppendBeginReply(nil, prot, uc, uid("E", 0)))
	r := <-done
	if r.err != nil {
		t.Fatalf("Dial: %v", r.err)
	}
	t.Cleanup(func() { _ = r.c.Close() })
	return r.c, fc
}

// subscribeFake subscribes through the fake server, granting at position
// E.pos.
func subscribeFake(t *testing.T, c *Client, fc *fakeConn, name string, pos uint64) *Subscription {
	t.Helper()
	type res struct {
		s   *Subscription
		err error
	}
	done := make(chan res, 1)
	go func() {
		s, err := c.Subscribe(context.Background(), name, nil)
		done <- res{s, err}
	}()
	fr := fc.next(true)
	m, err := protocol.DecodeClient([]byte(fr.text), protocol.DefaultLimits())
	if err != nil || m.Sys != protocol.SysSubscribe || m.Channel != name {
		t.Fatalf("client sent %q (%v), want SUBSCRIBE %s", fr.text, err, name)
	}
	fc.send(protocol.AppendSubscribeOK(nil, m.ID, name, uid("E", pos)))
	r := <-done
	if r.err != nil {
		t.Fatalf("Subscribe: %v", r.err)
	}
	return r.s
}

// TestSyncQueuesLiveFramesAndDropsDuplicates: live FEEDs that arrive before
// the SYNC reply are handled after its records, and FEEDs at or before the
// last applied uid are dropped, so the app sees every number once, in order.
func TestSyncQueuesLiveFramesAndDropsDuplicates(t *testing.T) {
	testutil.CheckLeaks(t)
	f := newFakeServer(t)
	c, fc := dialFake(t, f, fastOpts(), protocol.Prot{V: 1}, "")
	rec := newRecorder()
	sub := subscribeFake(t, c, fc, "room", 0)
	sub.On("n", rec.on)
	fc.send(feed("room", 1))
	fc.send(feed("room", 2))
	rec.waitN(t, 2)

	_ = fc.ws.NetConn().Close() // drop without a close frame
	fc2 := f.accept()
	fc2.expect(`{"sys":4,"subscriptions":[{"channel":"room","lastUid":"E.2","query":null}]}`)
	if s := c.Status(); s != StatusSyncing {
		t.Errorf("status while syncing = %v, want syncing", s)
	}
	fc2.send(feed("room", 5)) // live, before the reply: must wait for the records
	fc2.send(feed("room", 6))
	fc2.send(protocol.AppendSyncReply(nil, nil, []protocol.SyncResult{{Channel: "room", OK: true}},
		[][]byte{feed("room", 3), feed("room", 4), feed("room", 5)}))
	fc2.send(feed("room", 6)) // duplicate
	fc2.send(feed("room", 7))
	got := rec.waitN(t, 7)
	want := []int{1, 2, 3, 4, 5, 6, 7}
	if len(got) != len(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("got %v, want %v", got, want)
		}
	}
	st := c.Stats()
	if st.Recovered != 3 || st.Duplicates != 2 || st.Reconnects != 1 {
		t.Errorf("stats = %+v, want Recovered 3, Duplicates 2, Reconnects 1", st)
	}
	if sub.LastUID() != "E.7" {
		t.Errorf("LastUID = %q, want E.7", sub.LastUID())
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if fr := fc2.next(true); fr.closeCode != protocol.CloseByClient {
		t.Errorf("close frame = %+v, want 4000", fr)
	}
	waitDone(t, c)
}

func waitDone(t *testing.T, c *Client) {
	t.Helper()
	select {
	case <-c.Done():
	case <-time.After(waitLong):
		t.Fatal("client not done")
	}
}

// TestSyncRequestShape: the user channel comes first with a null query,
// then channels in first-subscription order, with their last uid and query.
func TestSyncRequestShape(t *testing.T) {
	testutil.CheckLeaks(t)
	f := newFakeServer(t)
	c, fc := dialFake(t, f, fastOpts(), protocol.Prot{V: 1}, "alice")
	if c.UserSubscription() == nil {
		t.Fatal("no user subscription")
	}
	go func() { _, _ = c.Subscribe(context.Background(), "zeta", map[string]int{"a": 1}) }()
	fr := fc.next(true)
	m, _ := protocol.DecodeClient([]byte(fr.text), protocol.DefaultLimits())
	if string(m.Query) != `{"a":1}` {
		t.Fatalf("SUBSCRIBE query = %s", m.Query)
	}
	fc.send(protocol.AppendSubscribeOK(nil, m.ID, "zeta", uid("E", 9)))
	subscribeFake(t, c, fc, "alpha", 3)
	fc.send(protocol.AppendUpdateSub(nil, "alpha", uid("E", 4)))
	// Wait until the UPDATESUB is applied: a tell sent after it is
	// handled after it.
	told := make(chan struct{})
	c.OnTell("x", func(json.RawMessage) { close(told) })
	fc.send(protocol.AppendTell(nil, "x", nil))
	<-told
	_ = fc.ws.NetConn().Close()
	fc2 := f.accept()
	fc2.expect(`{"sys":4,"subscriptions":[{"channel":"_user.alice","lastUid":"E.0","query":null},{"channel":"zeta","lastUid":"E.9","query":{"a":1}},{"channel":"alpha","lastUid":"E.4","query":null}]}`)
}

// TestHeartbeat: "h" is answered; when no "h" comes for interval +
// threshold the client closes with 4100 and recovers with SYNC.
func TestHeartbeat(t *testing.T) {
	testutil.CheckLeaks(t)
	f := newFakeServer(t)
	c, fc := dialFake(t, f, fastOpts(), protocol.Prot{V: 1, HB: true, HBInterval: 150, HBThreshold: 100}, "")
	fc.send([]byte("h"))
	if fr := fc.next(false); fr.text != "h" {
		t.Fatalf("heartbeat answer = %+v, want h", fr)
	}
	// Keep the connection alive past the timeout by sending h in time.
	for i := 0; i < 3; i++ {
		fc.send([]byte("h"))
		if fr := fc.next(false); fr.text != "h" {
			t.Fatalf("heartbeat answer = %+v, want h", fr)
		}
	}
	start := time.Now()
	fr := fc.next(true) // silence: the client gives up
	if fr.closeCode != protocol.CloseHeartbeatLost {
		t.Fatalf("client sent %+v, want close 4100", fr)
	}
	if d := time.Since(start); d < 200*time.Millisecond {
		t.Errorf("heartbeat lost after %v, want >= interval+threshold (250ms)", d)
	}
	fc2 := f.accept()
	fc2.expect(`{"sys":4,"subscriptions":[]}`)
	fc2.send(protocol.AppendSyncReply(nil, nil, nil, nil))
	waitStatus(t, c, StatusReady)
}

func waitStatus(t *testing.T, c *Client, want Status) {
	t.Helper()
	testutil.WaitFor(t, waitLong, func() bool { return c.Status() == want }, "status "+want.String())
}

// TestBootFromFake: BOOT is answered with close 4001 and its reason; the
// client ends booted, calls OnBoot with the echoed reason and does not
// reconnect.
func TestBootFromFake(t *testing.T) {
	testutil.CheckLeaks(t)
	f := newFakeServer(t)
	reasons := make(chan string, 1)
	opts := fastOpts()
	opts.Setup = func(c *Client) { c.OnBoot(func(r string) { reasons <- r }) }
	c, fc := dialFake(t, f, opts, protocol.Prot{V: 1}, "")
	sub := subscribeFake(t, c, fc, "room", 0)
	fc.send(protocol.AppendBoot(nil, "you asked for it"))
	fr := fc.next(true)
	if fr.closeCode != protocol.CloseBooted || fr.closeText != "you asked for it" {
		t.Fatalf("client sent %+v, want close 4001 with the reason", fr)
	}
	select {
	case r := <-reasons:
		if r != "you asked for it" {
			t.Errorf("OnBoot reason %q", r)
		}
	case <-time.After(waitLong):
		t.Fatal("OnBoot not called")
	}
	waitDone(t, c)
	if c.Status() != StatusBooted || !errors.Is(c.Err(), ErrBooted) {
		t.Errorf("status %v err %v, want booted", c.Status(), c.Err())
	}
	if sub.Status() != SubBooted {
		t.Errorf("subscription status %v, want booted", sub.Status())
	}
	select {
	case <-f.conns:
		t.Error("client reconnected after a boot")
	default:
	}
	if err := c.Ask(context.Background(), "x", nil, nil); !errors.Is(err, ErrBooted) {
		t.Errorf("Ask after boot = %v, want ErrBooted", err)
	}
}

// TestBadServerFrames: frames a correct server never sends are ignored
// without harm; the connection stays usable.
func TestBadServerFrames(t *testing.T) {
	testutil.CheckLeaks(t)
	f := newFakeServer(t)
	c, fc := dialFake(t, f, fastOpts(), protocol.Prot{V: 1}, "")
	for _, frame := range []string{
		`not json`, `[]`, `{"sys":"x"}`, `{"sys":99}`, `{"sys":5,"topic":"x","id":1}`,
		`{"sys":7,"id":12345,"msg":1}`, `{"sys":1,"result":true,"channel":"c","id":777,"lastUid":"E.1"}`,
		`{"sys":8,"topic":"t","msg":1,"channel":"unknown","uid":"E.1"}`, `{"sys":8,"topic":1}`,
		`{"sys":12,"channel":"unknown","uid":"x"}`, `{"sys":6,"topic":"_presence","msg":"not an object"}`,
		`{"sys":6,"topic":"nohandler","msg":{}}`, `{"err":"not an object"}`, `{"sys":4,"result":null}`,
		`{"sys":3,"prot":{"v":1}}`, `{"sys":11}`, "h\n",
	} {
		fc.send([]byte(frame))
	}
	if err := fc.ws.WriteMessage(websocket.BinaryMessage, []byte{1, 2, 3}); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	var got string
	go func() { done <- c.Ask(context.Background(), "echo", "still here", &got) }()
	fr := fc.next(true)
	m, err := protocol.DecodeClient([]byte(fr.text), protocol.DefaultLimits())
	if err != nil || m.Sys != protocol.SysAsk {
		t.Fatalf("client sent %q, want ASK", fr.text)
	}
	fc.send(protocol.AppendResponse(nil, m.ID, m.Msg))
	select {
	case err := <-done:
		if err != nil || got != "still here" {
			t.Fatalf("Ask after bad frames: %q %v", got, err)
		}
	case <-time.After(waitLong):
		t.Fatal("Ask after bad frames: no result")
	}
	if c.Status() != StatusReady {
		t.Errorf("status %v", c.Status())
	}
}

// TestBootLongReasonCutOnRune: the client echoes a BOOT's reason in its
// close frame cut to 123 bytes on a rune boundary, so the frame stays
// valid UTF-8 (a server would fail the connection otherwise).
func TestBootLongReasonCutOnRune(t *testing.T) {
	testutil.CheckLeaks(t)
	f := newFakeServer(t)
	c, fc := dialFake(t, f, fastOpts(), protocol.Prot{V: 1}, "")
	long := strings.Repeat("é", 100) // 200 bytes: byte 123 is inside a rune
	fc.send([]byte(`{"sys":9,"reason":"` + long + `"}`))
	fr := fc.next(true)
	if fr.closeCode != protocol.CloseBooted || !utf8.ValidString(fr.closeText) ||
		len(fr.closeText) > protocol.MaxReasonLen || fr.closeText != strings.Repeat("é", 61) {
		t.Fatalf("client sent %+v, want close 4001 with the reason cut to 61 runes", fr)
	}
	waitDone(t, c)
}
