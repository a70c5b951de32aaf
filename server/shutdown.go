package server

import (
	"context"
	"math/rand/v2"
	"time"

	"github.com/sss-go/sss/protocol"
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
	if !first {
		select {
		case <-s.shutDone:
			return s.shutErr
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	err := s.shutdown(ctx)
	s.shutErr = err
	close(s.shutDone)
	return err
}

func (s *Server) shutdown(ctx context.Context) error {
	s.draining.Store(true)
	s.log.Info("sss: server shutting down")
	zero := s.work.close()
	socks := s.socketsOf(nil, "")
	code := s.opts.ShutdownCloseCode
	const reason = "server shutting down"
	var err error
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
	} else {
		start := time.Now()
		step := spread / time.Duration(len(socks))
		t := time.NewTimer(0)
		<-t.C
	loop:
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
					break loop
				}
			}
			sock.Close(code, reason)
		}
		t.Stop()
	}
	select {
	case <-zero:
	case <-ctx.Done():
		err = ctx.Err()
		for _, sock := range s.socketsOf(nil, "") {
			sock.closeConn()
		}
		select {
		case <-zero:
		case <-time.After(time.Second):
		}
	}
	if s.wheel != nil {
		s.wheel.close()
	}
	select {
	case <-s.writers.stop():
	case <-ctx.Done():
		err = ctx.Err()
	}
	if s.ownSc {
		cctx := ctx
		if cctx.Err() != nil {
			var cancel context.CancelFunc
			cctx, cancel = context.WithTimeout(context.Background(), time.Second)
			defer cancel()
		}
		if cerr := s.sc.Close(cctx); cerr != nil && err == nil {
			s.log.Warn("sss: closing scaler", "err", cerr)
		}
	}
	s.log.Info("sss: server stopped")
	return err
}

var _ = protocol.CloseGoingAway
