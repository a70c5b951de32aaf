package server

import (
	"strconv"
	"testing"

	"github.com/sss-go/sss/protocol"
	"github.com/sss-go/sss/scaler"
)

func TestExclusionOrdering(t *testing.T) {
	_, s, fc := fakeSocket(t, Options{}, false)
	s.subs = map[string]ChannelOptions{"c": {}}
	pf := func(seq uint64) *pubFrame {
		return newPubFrame(scaler.Publication{Channel: "c", UID: protocol.UID{Epoch: "E", Seq: seq}, Topic: "t", Msg: []byte(strconv.Itoa(int(seq)))})
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
