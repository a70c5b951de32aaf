package server

import (
	"bytes"
	"context"
	"strconv"
	"testing"

	"github.com/sss-go/sss/protocol"
	"github.com/sss-go/sss/scaler"
)

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
		srv.hub.publication(scaler.Publication{Channel: "b", UID: protocol.UID{Epoch: pos.Epoch, Seq: pos.Seq + i}, Topic: "t", Msg: []byte(strconv.Itoa(int(i)))})
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
