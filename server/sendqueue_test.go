package server

import (
	"bytes"
	"encoding/binary"
	"sync"
	"testing"

	"github.com/sss-go/sss/internal/testutil"
	"github.com/sss-go/sss/protocol"
)

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
			testutil.WaitFor(t, testTimeout, func() bool { s.mu.Lock(); defer s.mu.Unlock(); return len(s.q) == 0 && s.writing }, "writer busy")
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
			testutil.WaitFor(t, testTimeout, func() bool { emu.Lock(); defer emu.Unlock(); return len(events) > 0 }, "the slow-consumer event")
			emu.Lock()
			defer emu.Unlock()
			if len(events) != 1 || events[0] != EventSlowConsumer {
				t.Fatalf("events %v", events)
			}
		})
	}
}
