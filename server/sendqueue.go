package server

import (
	"sync"

	"github.com/gorilla/websocket"
	"github.com/sss-go/sss/protocol"
)

// The send queue: every frame a socket sends is queued here first, under
// the socket's mutex, bounded in frames and in bytes; the first frame
// queued wakes a writer (writer.go). Overflow closes the socket with 4002
// (docs/protocol.md, "9.1 Close codes"): a client that cannot keep up
// recovers by SYNC instead of slowing the publisher.

// enqueueLocked adds a frame to the queue and wakes the writer. It returns
// false when the socket is closing or the queue overflowed (the socket is
// then closing with 4002). The caller holds s.mu.
func (s *Socket) enqueueLocked(it outItem) bool {
	if s.closing {
		return false
	}
	n := len(it.data)
	if it.pf != nil {
		n = len(it.pf.data)
	}
	// One frame larger than the byte bound still goes through an empty
	// queue: refusing it would close the socket for good (its SYNC would
	// overflow the same way).
	if len(s.q)+s.heldN >= s.srv.opts.SendQueueMessages || (s.qBytes > 0 && s.qBytes+n > s.srv.opts.SendQueueBytes) {
		s.overflowLocked()
		return false
	}
	if len(s.q) == cap(s.q) {
		s.growQueueLocked()
	}
	s.q = append(s.q, it)
	s.qBytes += n
	s.kickLocked()
	return true
}

// enqueue is enqueueLocked taking the lock.
func (s *Socket) enqueue(it outItem) bool {
	s.mu.Lock()
	ok := s.enqueueLocked(it)
	s.mu.Unlock()
	return ok
}

// sendText queues one text frame.
func (s *Socket) sendText(data []byte) bool {
	return s.enqueue(outItem{data: data, op: opText})
}

// kickLocked makes sure a writer runs for s.
func (s *Socket) kickLocked() {
	if !s.writing && !s.dead {
		s.writing = true
		s.srv.writers.start(s)
	}
}

// overflowLocked drops the queue and closes with 4002.
func (s *Socket) overflowLocked() {
	clear(s.q)
	s.q = s.q[:0]
	s.qBytes = 0
	for _, h := range s.holds {
		h.buf = nil
	}
	s.heldN = 0
	s.srv.stats.slowCloses.Add(1)
	// Under s.mu (and maybe a channel's lock): OnEvent runs elsewhere.
	s.srv.emitAsync(Event{Kind: EventSlowConsumer, Socket: s.id})
	s.closeLocked(protocol.CloseSlowConsumer, "send queue overflow")
}

// closeLocked queues a close frame after what is queued; later frames are
// refused, and the socket's backend calls end. The writer closes the
// connection right after writing it.
func (s *Socket) closeLocked(code int, reason string) {
	if s.closing {
		return
	}
	s.closing = true
	if s.bcancel != nil {
		s.bcancel()
	}
	s.closeCode = code
	s.closeReason = protocol.TruncateReason(reason)
	if code == 0 || code == websocket.CloseNoStatusReceived {
		s.closeCode = websocket.CloseNoStatusReceived
	}
	s.q = append(s.q, outItem{data: closePayload(code, reason), op: opClose})
	s.kickLocked()
}

// growQueueLocked doubles the queue's capacity with a slice from the
// free list, giving the old one back.
func (s *Socket) growQueueLocked() {
	old := s.q
	nq := s.srv.qfree.get(2 * cap(old))
	s.q = append(nq, old...)
	s.srv.qfree.put(old)
}

// keptQueue is the largest queue capacity an idle socket keeps.
const keptQueue = 32

// queueFree recycles send-queue slices between sockets, in power-of-two
// size classes from 8 to 8192 items, so bursts do not allocate once the
// server is warm. Bounded in total capacity.
type queueFree struct {
	mu    sync.Mutex
	free  [numQueueClasses][][]outItem
	items int // total capacity held
}

const (
	minQueueCap     = 8
	numQueueClasses = 11 // 8 << 10 = 8192
	maxFreeItems    = 1 << 17
)

// queueClass returns the class of the smallest class capacity >= n.
func queueClass(n int) int {
	k := 0
	for minQueueCap<<k < n {
		k++
	}
	return k
}

// get returns an empty slice with capacity at least n.
func (f *queueFree) get(n int) []outItem {
	k := queueClass(n)
	if k < numQueueClasses {
		f.mu.Lock()
		if l := len(f.free[k]); l > 0 {
			q := f.free[k][l-1]
			f.free[k][l-1] = nil
			f.free[k] = f.free[k][:l-1]
			f.items -= cap(q)
			f.mu.Unlock()
			return q
		}
		f.mu.Unlock()
	}
	return make([]outItem, 0, minQueueCap<<k)
}

// put gives back a slice no one uses any more.
func (f *queueFree) put(q []outItem) {
	c := cap(q)
	if c < minQueueCap {
		return
	}
	k := queueClass(c)
	if k >= numQueueClasses || minQueueCap<<k != c {
		return
	}
	clear(q[:c])
	f.mu.Lock()
	if f.items+c <= maxFreeItems {
		f.free[k] = append(f.free[k], q[:0])
		f.items += c
	}
	f.mu.Unlock()
}
