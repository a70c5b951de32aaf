package client

import (
	"log/slog"
	"sync"
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
