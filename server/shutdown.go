package server

import (
	"context"
	"math/rand/v2"
	"sync"
	"time"
)

// Shutdown drains the server: it refuses new upgrades (503), closes every
// socket with Options.ShutdownCloseCode spread over ShutdownSpread with
// jitter (so clients reconnect elsewhere at different times), waits for
// readers, asks and writers, and closes the scaler if New created it.
// Bounded by ctx: when ctx ends first, the remaining sockets are closed at
// once and ctx.Err() is returned. Idempotent; later calls wait for the
// first and return its result.
func (s *Server) Shutdown(ctx context.Context) error {
	first := false
	s.shutOnce.Do(func() { first = true })
	if first {
		s.draining.Store(true)
		s.log.Info("sss: server shutting down")
		zero := s.work.close()
		go s.finishShutdown(zero)
		s.smu.Lock()
		// From now on no socket registers (an upgrade that passed the
		// draining check answers 503), so the list closeSockets takes
		// is complete.
		s.noSockets = true
		s.smu.Unlock()
		s.closeSockets(ctx)
	}
	select {
	case <-s.shutDone:
		return nil
	case <-ctx.Done():
		// Cut short: close what is left at once and let the
		// background finish; a later Shutdown waits for it.
		for _, sock := range s.socketsOf(nil, "") {
			sock.Close(s.opts.ShutdownCloseCode, "server shutting down")
			sock.closeConn()
		}
		return ctx.Err()
	}
}

// closeSockets closes every socket, spread over ShutdownSpread with
// jitter, faster when ctx ends sooner.
func (s *Server) closeSockets(ctx context.Context) {
	socks := s.socketsOf(nil, "")
	code := s.opts.ShutdownCloseCode
	const reason = "server shutting down"
	spread := s.opts.ShutdownSpread
	if d, ok := ctx.Deadline(); ok {
		// Leave a fifth of the time for the last sockets to go.
		if left := time.Until(d) * 4 / 5; left < spread {
			spread = left
		}
	}
	rand.Shuffle(len(socks), func(i, j int) { socks[i], socks[j] = socks[j], socks[i] })
	if spread <= 0 || len(socks) < 2 {
		for _, sock := range socks {
			sock.Close(code, reason)
		}
		return
	}
	start := time.Now()
	step := spread / time.Duration(len(socks))
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	for i, sock := range socks {
		at := start.Add(step*time.Duration(i) + rand.N(step+1))
		if d := time.Until(at); d > 0 {
			t.Reset(d)
			select {
			case <-t.C:
			case <-ctx.Done():
				for _, rest := range socks[i:] {
					rest.Close(code, reason)
				}
				return
			}
		}
		sock.Close(code, reason)
	}
}

// finishShutdown waits for every reader and ask, then stops the heartbeat
// wheel and the writers and closes the scaler if the server made it.
func (s *Server) finishShutdown(zero <-chan struct{}) {
	<-zero
	if s.wheel != nil {
		s.wheel.close()
	}
	<-s.writers.stop()
	if s.ownSc {
		ctx, cancel := context.WithTimeout(context.Background(), s.opts.WriteTimeout)
		if err := s.sc.Close(ctx); err != nil {
			s.log.Warn("sss: closing scaler", "err", err)
		}
		cancel()
	}
	s.log.Info("sss: server stopped")
	close(s.shutDone)
}

// tracker counts running readers and asks so Shutdown can wait for them.
type tracker struct {
	mu     sync.Mutex
	n      int
	closed bool
	zeroed bool
	zero   chan struct{}
}

func (t *tracker) init() { t.zero = make(chan struct{}) }

// add counts one more; false once closed, unless inner (work started by
// work already counted, such as an ask started by a reader).
func (t *tracker) add(inner bool) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed && !inner {
		return false
	}
	t.n++
	return true
}

func (t *tracker) done() {
	t.mu.Lock()
	t.n--
	if t.n == 0 && t.closed && !t.zeroed {
		t.zeroed = true
		close(t.zero)
	}
	t.mu.Unlock()
}

// close refuses new work and returns a channel closed when none runs.
func (t *tracker) close() <-chan struct{} {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.closed {
		t.closed = true
		if t.n == 0 {
			t.zeroed = true
			close(t.zero)
		}
	}
	return t.zero
}
