package server

import (
	"bytes"
	"context"
	"encoding/binary"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/sss-go/sss/protocol"
	"github.com/sss-go/sss/scaler"
)

// fakeConn records every Write; with a gate, Write blocks until the gate
// is closed.
type fakeConn struct {
	net.Conn
	mu     sync.Mutex
	writes [][]byte
	gate   chan struct{}
	closed chan struct{}
	once   sync.Once
	wrote  chan struct{} // signalled (non-blocking) after each write
}

func newFakeConn(gated bool) *fakeConn {
	c := &fakeConn{closed: make(chan struct{}), wrote: make(chan struct{}, 1)}
	if gated {
		c.gate = make(chan struct{})
	}
	return c
}

func (c *fakeConn) Write(p []byte) (int, error) {
	if c.gate != nil {
		select {
		case <-c.gate:
		case <-c.closed:
			return 0, net.ErrClosed
		}
	}
	c.mu.Lock()
	c.writes = append(c.writes, append([]byte(nil), p...))
	c.mu.Unlock()
	select {
	case c.wrote <- struct{}{}:
	default:
	}
	return len(p), nil
}

func (c *fakeConn) Close() error                     { c.once.Do(func() { close(c.closed) }); return nil }
func (c *fakeConn) SetWriteDeadline(time.Time) error { return nil }
func (c *fakeConn) SetDeadline(time.Time) error      { return nil }
func (c *fakeConn) SetReadDeadline(time.Time) error  { return nil }
func (c *fakeConn) RemoteAddr() net.Addr             { return &net.TCPAddr{} }
func (c *fakeConn) LocalAddr() net.Addr              { return &net.TCPAddr{} }
func (c *fakeConn) Read(p []byte) (int, error)       { <-c.closed; return 0, net.ErrClosed }
func (c *fakeConn) snapshot() (calls int, all []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, w := range c.writes {
		all = append(all, w...)
	}
	return len(c.writes), all
}

type wireFrame struct {
	op      byte
	payload string
}

// parseFrames splits unmasked server frames.
func parseFrames(t *testing.T, b []byte) []wireFrame {
	t.Helper()
	var out []wireFrame
	for len(b) > 0 {
		if len(b) < 2 || b[0]&0x80 == 0 || b[1]&0x80 != 0 {
			t.Fatalf("bad frame header % x", b[:min(len(b), 4)])
		}
		op, n, h := b[0]&0x0f, int(b[1]&0x7f), 2
		switch n {
		case 126:
			n, h = int(binary.BigEndian.Uint16(b[2:4])), 4
		case 127:
			n, h = int(binary.BigEndian.Uint64(b[2:10])), 10
		}
		out = append(out, wireFrame{op, string(b[h : h+n])})
		b = b[h+n:]
	}
	return out
}

// fakeSocket is a socket on a fake connection of a real server.
func fakeSocket(t *testing.T, opts Options, gated bool) (*Server, *Socket, *fakeConn) {
	t.Helper()
	if opts.HeartbeatInterval == 0 {
		opts.HeartbeatInterval = -1
	}
	opts.Logger = quietLogger()
	srv, err := New(context.Background(), nil, opts)
	if err != nil {
		t.Fatal(err)
	}
	fc := newFakeConn(gated)
	s := &Socket{srv: srv, id: "fake", nc: fc, connGone: make(chan struct{})}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	t.Cleanup(func() {
		fc.Close()
		s.cancel()
		ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
		defer cancel()
		_ = srv.Shutdown(ctx)
	})
	return srv, s, fc
}

// waitFrames waits until the connection got at least n frames.
func waitFrames(t *testing.T, fc *fakeConn, n int) []wireFrame {
	t.Helper()
	var frames []wireFrame
	waitFor(t, "frames", func() bool {
		_, all := fc.snapshot()
		frames = parseFrames(t, all)
		return len(frames) >= n
	})
	return frames
}

func TestWriterBatchesFramesPerSyscall(t *testing.T) {
	_, s, fc := fakeSocket(t, Options{}, false)
	const n = 100
	s.mu.Lock()
	s.hbDue = true // heartbeats go ahead of queued data
	for i := 0; i < n; i++ {
		s.enqueueLocked(outItem{data: []byte(itoa(i)), op: opText})
	}
	s.mu.Unlock()
	frames := waitFrames(t, fc, n+1)
	calls, _ := fc.snapshot()
	if calls != 1 {
		t.Fatalf("%d frames took %d writes, want 1", n+1, calls)
	}
	if frames[0].payload != "h" {
		t.Fatalf("first frame %q, want the heartbeat", frames[0].payload)
	}
	for i, f := range frames[1:] {
		if f.op != opText || f.payload != itoa(i) {
			t.Fatalf("frame %d = %v", i, f)
		}
	}
	// The writer is gone once the queue is empty.
	waitFor(t, "writer idle", func() bool { s.mu.Lock(); defer s.mu.Unlock(); return !s.writing })
}

func TestWriterLargeFrames(t *testing.T) {
	_, s, fc := fakeSocket(t, Options{}, false)
	sizes := []int{125, 126, 65535, 65536, 100000}
	s.mu.Lock()
	for _, n := range sizes {
		s.enqueueLocked(outItem{data: bytes.Repeat([]byte("x"), n), op: opText})
	}
	s.mu.Unlock()
	frames := waitFrames(t, fc, len(sizes))
	for i, n := range sizes {
		if len(frames[i].payload) != n {
			t.Fatalf("frame %d has %d bytes, want %d", i, len(frames[i].payload), n)
		}
	}
}

func TestQueueOverflowCloses4002(t *testing.T) {
	tests := []struct {
		name string
		opts Options
		size int
	}{
		{"messages", Options{SendQueueMessages: 8}, 10},
		{"bytes", Options{SendQueueBytes: 1000}, 300},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv, s, fc := fakeSocket(t, tt.opts, true)
			var events []EventKind
			var emu sync.Mutex
			srv.opts.OnEvent = func(e Event) { emu.Lock(); events = append(events, e.Kind); emu.Unlock() }
			// The first frame is taken by the writer, which blocks in Write.
			s.sendText([]byte("first"))
			waitFor(t, "writer busy", func() bool { s.mu.Lock(); defer s.mu.Unlock(); return len(s.q) == 0 && s.writing })
			ok := true
			for i := 0; i < 20 && ok; i++ {
				ok = s.sendText(bytes.Repeat([]byte("y"), tt.size))
			}
			if ok {
				t.Fatal("queue never overflowed")
			}
			s.mu.Lock()
			code := s.closeCode
			s.mu.Unlock()
			if code != protocol.CloseSlowConsumer {
				t.Fatalf("close code %d, want 4002", code)
			}
			if got := srv.Stats().SlowConsumerCloses; got != 1 {
				t.Fatalf("SlowConsumerCloses %d", got)
			}
			if s.sendText([]byte("late")) {
				t.Fatal("a closing socket accepted a frame")
			}
			close(fc.gate)
			<-fc.closed // closed right after the close frame
			_, all := fc.snapshot()
			frames := parseFrames(t, all)
			last := frames[len(frames)-1]
			if last.op != opClose || binary.BigEndian.Uint16([]byte(last.payload)) != protocol.CloseSlowConsumer {
				t.Fatalf("last frame %v, want close 4002", last)
			}
			for _, f := range frames[1 : len(frames)-1] {
				t.Fatalf("queued frame %q written after the overflow", f.payload)
			}
			// The event is emitted off the socket's lock, so just after.
			waitFor(t, "the slow-consumer event", func() bool { emu.Lock(); defer emu.Unlock(); return len(events) > 0 })
			emu.Lock()
			defer emu.Unlock()
			if len(events) != 1 || events[0] != EventSlowConsumer {
				t.Fatalf("events %v", events)
			}
		})
	}
}

func TestHubCopyOnWrite(t *testing.T) {
	srv, s1, _ := fakeSocket(t, Options{}, false)
	s2 := &Socket{srv: srv, id: "two", nc: newFakeConn(false), connGone: make(chan struct{})}
	ctx := context.Background()
	nop := func(*hubChannel, protocol.UID) {}
	if created, err := srv.hub.join(ctx, s1, "c", 0, nop); err != nil || !created {
		t.Fatalf("first join: %v %v", created, err)
	}
	ch := srv.hub.lookup("c")
	old := ch.subs
	if created, err := srv.hub.join(ctx, s2, "c", 0, nop); err != nil || created {
		t.Fatalf("second join: %v %v", created, err)
	}
	if len(old) != 1 || old[0] != s1 {
		t.Fatalf("the old subscriber slice changed: %v", old)
	}
	cur := ch.subs
	if len(cur) != 2 || &cur[0] == &old[0] {
		t.Fatal("join modified the slice in place")
	}
	// Joining again changes nothing.
	if _, err := srv.hub.join(ctx, s2, "c", 0, nop); err != nil || len(ch.subs) != 2 {
		t.Fatalf("rejoin: %v, %d subscribers", err, len(ch.subs))
	}
	if _, err := srv.hub.join(ctx, &Socket{srv: srv}, "c", 2, nop); err != errChannelFull {
		t.Fatalf("join past MaxSubscribers: %v", err)
	}
	if srv.hub.leave(ctx, s1, "c") {
		t.Fatal("leave reported vacated with a subscriber left")
	}
	if len(cur) != 2 || cur[0] != s1 || cur[1] != s2 {
		t.Fatalf("leave modified the slice in place: %v", cur)
	}
	if len(ch.subs) != 1 || ch.subs[0] != s2 {
		t.Fatalf("subs after leave %v", ch.subs)
	}
	if !srv.hub.leave(ctx, s2, "c") || srv.hub.lookup("c") != nil {
		t.Fatal("last leave did not vacate the channel")
	}
}

func TestHubBuffersWhileSubscribing(t *testing.T) {
	srv, s, fc := fakeSocket(t, Options{}, false)
	ctx := context.Background()
	// A publication delivered while the scaler Subscribe is pending is
	// buffered: pretend the stream delivers before Subscribe returns.
	sh := srv.hub.shard("b")
	ch := &hubChannel{name: "b", state: chanSubscribing, settled: make(chan struct{})}
	ch.win.init(8)
	sh.mu.Lock()
	sh.m["b"] = ch
	sh.mu.Unlock()
	pos, err := srv.sc.Subscribe(ctx, "b")
	if err != nil {
		t.Fatal(err)
	}
	for i := uint64(0); i <= 2; i++ { // seq pos.Seq (dropped), +1, +2
		srv.hub.publication(scaler.Publication{Channel: "b", UID: protocol.UID{Epoch: pos.Epoch, Seq: pos.Seq + i}, Topic: "t", Msg: []byte(itoa(int(i)))})
	}
	ch.mu.Lock()
	ch.last = pos
	ch.state = chanLive
	for _, p := range ch.pending {
		srv.hub.deliverLocked(ch, p)
	}
	ch.pending = nil
	ch.subs = []*Socket{s}
	last := ch.last
	close(ch.settled)
	ch.settled = nil
	ch.mu.Unlock()
	if last.Seq != pos.Seq+2 {
		t.Fatalf("position after the buffered ones %v, want seq %d", last, pos.Seq+2)
	}
	srv.hub.publication(scaler.Publication{Channel: "b", UID: protocol.UID{Epoch: pos.Epoch, Seq: pos.Seq + 3}, Topic: "t", Msg: []byte("3")})
	frames := waitFrames(t, fc, 1)
	if len(frames) != 1 || !bytes.Contains([]byte(frames[0].payload), []byte(`"msg":3`)) {
		t.Fatalf("frames %v", frames)
	}
	recs, ok := ch.win.since(pos)
	if !ok || len(recs) != 3 {
		t.Fatalf("window since %v: %d %v", pos, len(recs), ok)
	}
}

func TestExclusionOrdering(t *testing.T) {
	_, s, fc := fakeSocket(t, Options{}, false)
	s.subs = map[string]ChannelOptions{"c": {}}
	pf := func(seq uint64) *pubFrame {
		return newPubFrame(scaler.Publication{Channel: "c", UID: protocol.UID{Epoch: "E", Seq: seq}, Topic: "t", Msg: []byte(itoa(int(seq)))})
	}
	// Held while the publish is in flight: the stream delivers 1, 2, 3
	// before Publish returns uid 2.
	s.hold("c")
	for i := uint64(1); i <= 3; i++ {
		s.deliver(pf(i))
	}
	if calls, _ := fc.snapshot(); calls != 0 {
		t.Fatal("held frames were written")
	}
	s.mu.Lock()
	s.excl = map[string][]protocol.UID{"c": {{Epoch: "E", Seq: 2}}}
	s.updateSlowLocked()
	s.releaseLocked("c", nil)
	// Publish returned uid 5 before the stream delivered it.
	s.excl["c"] = append(s.excl["c"], protocol.UID{Epoch: "E", Seq: 5})
	s.updateSlowLocked()
	s.mu.Unlock()
	for i := uint64(4); i <= 6; i++ {
		s.deliver(pf(i))
	}
	frames := waitFrames(t, fc, 6)
	want := []string{
		`{"sys":8,"topic":"t","msg":1,"channel":"c","uid":"E.1"}`,
		`{"sys":12,"channel":"c","uid":"E.2"}`,
		`{"sys":8,"topic":"t","msg":3,"channel":"c","uid":"E.3"}`,
		`{"sys":8,"topic":"t","msg":4,"channel":"c","uid":"E.4"}`,
		`{"sys":12,"channel":"c","uid":"E.5"}`,
		`{"sys":8,"topic":"t","msg":6,"channel":"c","uid":"E.6"}`,
	}
	for i, w := range want {
		if frames[i].payload != w {
			t.Fatalf("frame %d = %s, want %s", i, frames[i].payload, w)
		}
	}
	if s.slow.Load() != 0 {
		t.Fatalf("slow path still on: %d", s.slow.Load())
	}
}

func TestWheel(t *testing.T) {
	const interval = 80 * time.Millisecond
	var mu sync.Mutex
	beats := map[*Socket][]time.Time{}
	drop := &Socket{}
	w := newWheel(interval, func(s *Socket) bool {
		mu.Lock()
		defer mu.Unlock()
		beats[s] = append(beats[s], time.Now())
		return s != drop
	})
	defer w.close()
	socks := []*Socket{{}, {}, {}}
	for _, s := range socks {
		w.add(s)
	}
	w.add(drop)
	waitFor(t, "beats", func() bool {
		mu.Lock()
		defer mu.Unlock()
		for _, s := range socks {
			if len(beats[s]) < 4 {
				return false
			}
		}
		return true
	})
	mu.Lock()
	defer mu.Unlock()
	for _, s := range socks {
		b := beats[s]
		for i := 1; i < len(b); i++ {
			if d := b[i].Sub(b[i-1]); d < interval-w.tick {
				t.Fatalf("beats %v apart, interval %v", d, interval)
			}
		}
	}
	if len(beats[drop]) != 1 {
		t.Fatalf("a dropped socket beat %d times", len(beats[drop]))
	}
	if w.tick > maxTick {
		t.Fatalf("tick %v", w.tick)
	}
}

func TestHeartbeatBeat(t *testing.T) {
	_, s, fc := fakeSocket(t, Options{}, false)
	if !heartbeat(s) {
		t.Fatal("first beat dropped the socket")
	}
	frames := waitFrames(t, fc, 1)
	if frames[0].payload != "h" {
		t.Fatalf("frame %v", frames[0])
	}
	s.hbOutstanding.Store(false) // the client answered
	if !heartbeat(s) {
		t.Fatal("answered socket dropped")
	}
	if heartbeat(s) { // not answered
		t.Fatal("unanswered socket kept")
	}
	frames = waitFrames(t, fc, 3)
	last := frames[2]
	if last.op != opClose || binary.BigEndian.Uint16([]byte(last.payload)) != protocol.CloseHeartbeatTimeout {
		t.Fatalf("last frame %v, want close 4003", last)
	}
}
