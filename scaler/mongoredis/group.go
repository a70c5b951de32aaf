package mongoredis

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sss-go/sss/scaler"
)

// group owns the scaler's background goroutines and timers: the loops
// Start runs, the channels' stream and writer goroutines, retries and
// delayed relays. Close halts it (no new goroutine or timer, its context
// cancelled) and waits for what runs.
type group struct {
	ctx    context.Context // cancelled by halt
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu      sync.Mutex // closing, timers
	closing bool
	timers  map[*time.Timer]struct{}
}

func newGroup() *group {
	g := &group{timers: make(map[*time.Timer]struct{})}
	g.ctx, g.cancel = context.WithCancel(context.Background())
	return g
}

// spawn runs f on a goroutine of the group; false once it is halted.
func (g *group) spawn(f func()) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closing {
		return false
	}
	g.wg.Add(1)
	go func() {
		defer g.wg.Done()
		f()
	}()
	return true
}

// after runs f after d on a goroutine of the group, unless it is halted
// first.
func (g *group) after(d time.Duration, f func()) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closing {
		return
	}
	var t *time.Timer
	t = time.AfterFunc(d, func() {
		g.mu.Lock()
		_, ok := g.timers[t]
		delete(g.timers, t)
		if ok && !g.closing {
			g.wg.Add(1)
		} else {
			ok = false
		}
		g.mu.Unlock()
		if ok {
			defer g.wg.Done()
			f()
		}
	})
	g.timers[t] = struct{}{}
}

// tick waits for the next tick of c; it reports false once the group
// halts.
func (g *group) tick(c <-chan time.Time) bool {
	select {
	case <-g.ctx.Done():
		return false
	case <-c:
		return true
	}
}

// halt stops the timers, refuses new goroutines and cancels the group's
// context.
func (g *group) halt() {
	g.mu.Lock()
	g.closing = true
	for t := range g.timers {
		t.Stop()
	}
	clear(g.timers)
	g.mu.Unlock()
	g.cancel()
}

// wait waits for the group's goroutines, bounded by ctx.
func (g *group) wait(ctx context.Context) error {
	done := make(chan struct{})
	go func() {
		g.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// sink is where every part of the scaler reports: the Handler given to
// Start (publications, resets, control messages, events) and the logger.
type sink struct {
	h      atomic.Pointer[scaler.Handler]
	logger *slog.Logger
}

var noHandler scaler.Handler

// handler returns the Handler given to Start (a zero one before).
func (k *sink) handler() *scaler.Handler {
	if h := k.h.Load(); h != nil {
		return h
	}
	return &noHandler
}

// event reports an operational event to the handler.
func (k *sink) event(kind scaler.EventKind, ch string, n int, err error) {
	if f := k.handler().Event; f != nil {
		f(scaler.Event{Kind: kind, Channel: ch, Count: n, Err: err, Time: time.Now()})
	}
}
