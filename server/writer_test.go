package server

import (
	"bytes"
	"strconv"
	"testing"

	"github.com/sss-go/sss/internal/testutil"
)

func TestWriterBatchesFramesPerSyscall(t *testing.T) {
	_, s, fc := fakeSocket(t, Options{}, false)
	const n = 100
	s.mu.Lock()
	s.hbDue = true // heartbeats go ahead of queued data
	for i := 0; i < n; i++ {
		s.enqueueLocked(outItem{data: []byte(strconv.Itoa(i)), op: opText})
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
		if f.op != opText || f.payload != strconv.Itoa(i) {
			t.Fatalf("frame %d = %v", i, f)
		}
	}
	// The writer is gone once the queue is empty.
	testutil.WaitFor(t, testTimeout, func() bool { s.mu.Lock(); defer s.mu.Unlock(); return !s.writing }, "writer idle")
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
