package server

import (
	"sync"
	"time"

	"github.com/sss-go/sss/protocol"
)

// wheel sends heartbeats for every socket from one goroutine: a ring of
// slots, one processed per tick, each socket sitting in one slot so that it
// comes up once per interval. Granularity is the tick (at most 250 ms).
type wheel struct {
	tick  time.Duration
	mu    sync.Mutex
	slots [][]*Socket
	cur   int
	stop  chan struct{}
	done  chan struct{}
	beat  func(s *Socket) bool // returns false to drop the socket
}

// maxTick is the coarsest heartbeat granularity (docs/protocol.md,
// "8. Heartbeats": at most 250 ms).
const maxTick = 250 * time.Millisecond

func newWheel(interval time.Duration, beat func(s *Socket) bool) *wheel {
	tick := min(maxTick, interval/8)
	if tick < time.Millisecond {
		tick = time.Millisecond
	}
	n := int((interval + tick - 1) / tick)
	if n < 1 {
		n = 1
	}
	w := &wheel{tick: tick, slots: make([][]*Socket, n), stop: make(chan struct{}), done: make(chan struct{}), beat: beat}
	go w.run()
	return w
}

// add places s so that its first beat comes one interval from now.
func (w *wheel) add(s *Socket) {
	w.mu.Lock()
	i := (w.cur + len(w.slots) - 1) % len(w.slots)
	w.slots[i] = append(w.slots[i], s)
	w.mu.Unlock()
}

func (w *wheel) run() {
	defer close(w.done)
	t := time.NewTicker(w.tick)
	defer t.Stop()
	for {
		select {
		case <-w.stop:
			return
		case <-t.C:
			w.advance()
		}
	}
}

// advance processes the current slot and moves on.
func (w *wheel) advance() {
	w.mu.Lock()
	slot := w.slots[w.cur]
	kept := slot[:0]
	for _, s := range slot {
		if w.beat(s) {
			kept = append(kept, s)
		}
	}
	clear(slot[len(kept):])
	w.slots[w.cur] = kept
	w.cur = (w.cur + 1) % len(w.slots)
	w.mu.Unlock()
}

func (w *wheel) close() {
	close(w.stop)
	<-w.done
}

// heartbeat is the wheel's beat: close a socket that did not answer the
// previous "h" with 4003, else queue an "h" ahead of its data. A socket
// whose reader waited for its own inbox since the last beat (so the
// answer may be unread) gets one more interval.
func heartbeat(s *Socket) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing {
		return false
	}
	grace := s.hbGrace.Swap(false) || s.readWait.Load()
	if s.hbOutstanding.Load() && !grace {
		s.closeLocked(protocol.CloseHeartbeatTimeout, "heartbeat not answered")
		return false
	}
	s.hbOutstanding.Store(true)
	s.hbDue = true
	s.kickLocked()
	return true
}
