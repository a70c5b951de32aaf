package client

import (
	"bytes"
	"log/slog"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
)

// dispatcher runs the application's callbacks one at a time, in the order
// the client queued them, on its own goroutine. The connection goroutine
// never runs application code, so a callback may call Ask, Subscribe or
// Close without deadlocking the reader. The queue is unbounded: a callback
// that blocks delays later callbacks (and grows memory), not the
// connection.
type dispatcher struct {
	log *slog.Logger

	mu      sync.Mutex
	q       []func()
	closing bool
	wake    chan struct{}
	done    chan struct{}
	gid     atomic.Uint64 // id of the goroutine running callbacks
}

func newDispatcher(log *slog.Logger) *dispatcher {
	d := &dispatcher{log: log, wake: make(chan struct{}, 1), done: make(chan struct{})}
	go d.run()
	return d
}

// push queues fn. After close it is dropped.
func (d *dispatcher) push(fn func()) {
	d.mu.Lock()
	if d.closing {
		d.mu.Unlock()
		return
	}
	d.q = append(d.q, fn)
	d.mu.Unlock()
	select {
	case d.wake <- struct{}{}:
	default:
	}
}

// close makes the dispatcher exit once everything queued so far has run.
func (d *dispatcher) close() {
	d.mu.Lock()
	d.closing = true
	d.mu.Unlock()
	select {
	case d.wake <- struct{}{}:
	default:
	}
}

func (d *dispatcher) run() {
	defer close(d.done)
	d.gid.Store(goroutineID())
	for {
		d.mu.Lock()
		q := d.q
		d.q = nil
		closing := d.closing
		d.mu.Unlock()
		for i, fn := range q {
			q[i] = nil
			d.call(fn)
		}
		if len(q) == 0 {
			if closing {
				return
			}
			<-d.wake
		}
	}
}

// call runs one callback; a panicking callback is logged, not fatal for
// the client.
func (d *dispatcher) call(fn func()) {
	defer func() {
		if r := recover(); r != nil {
			d.log.Error("sss/client: callback panicked", "panic", r)
		}
	}()
	fn()
}

// onDispatcher reports whether the caller runs on the dispatcher's
// goroutine, i.e. inside a callback.
func (d *dispatcher) onDispatcher() bool {
	id := d.gid.Load()
	return id != 0 && id == goroutineID()
}

// goroutineID returns the calling goroutine's id, read from the first line
// of its stack trace ("goroutine 18 [running]:"); 0 if unreadable. Used
// only by Close, to tell a call from inside a callback (which must not wait
// for the callbacks to end) from any other.
func goroutineID() uint64 {
	var buf [64]byte
	b := buf[:runtime.Stack(buf[:], false)]
	b = bytes.TrimPrefix(b, []byte("goroutine "))
	if i := bytes.IndexByte(b, ' '); i > 0 {
		b = b[:i]
	}
	id, err := strconv.ParseUint(string(b), 10, 64)
	if err != nil {
		return 0
	}
	return id
}
