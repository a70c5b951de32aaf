package server

import (
	"encoding/binary"
	"sync"
	"testing"
	"time"

	"github.com/sss-go/sss/internal/testutil"
	"github.com/sss-go/sss/protocol"
)

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
	testutil.WaitFor(t, testTimeout, func() bool {
		mu.Lock()
		defer mu.Unlock()
		for _, s := range socks {
			if len(beats[s]) < 4 {
				return false
			}
		}
		return true
	}, "beats")
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
