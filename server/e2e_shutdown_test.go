package server_test

// Shutdown and readiness over real WebSockets.

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/sss-go/sss/internal/testutil"
)

func TestE2EShutdown(t *testing.T) {
	for _, tc := range []struct {
		name string
		code int // option; 0 = default
		want int
	}{{"default 1001", 0, 1001}, {"1012", 1012, 1012}} {
		t.Run(tc.name, func(t *testing.T) {
			const spread = time.Second
			o := e2eOptions()
			o.ShutdownSpread = spread
			o.ShutdownCloseCode = tc.code
			a := startE2E(t, nil, o)
			ready := func() int {
				rec := httptest.NewRecorder()
				a.srv.ReadyHandler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/ready", nil))
				return rec.Code
			}
			if got := ready(); got != http.StatusOK {
				t.Fatalf("ReadyHandler = %d before shutdown, want 200", got)
			}
			if a.srv.Draining() {
				t.Fatal("Draining() before Shutdown")
			}
			var conns []*e2eConn
			for i := 0; i < 5; i++ {
				c := a.dial(t, "")
				c.subscribe("sd")
				conns = append(conns, c)
			}
			start := time.Now()
			errc := make(chan error, 1)
			go func() {
				ctx, cancel := context.WithTimeout(context.Background(), e2eTimeout)
				defer cancel()
				errc <- a.srv.Shutdown(ctx)
			}()
			testutil.WaitFor(t, e2eTimeout, a.srv.Draining, "Draining()")
			if got := ready(); got != http.StatusServiceUnavailable {
				t.Errorf("ReadyHandler = %d while draining, want 503", got)
			}
			_, resp, err := a.dialRaw(t, "", nil)
			if err == nil {
				t.Error("upgrade accepted while draining")
			} else if resp == nil || resp.StatusCode != http.StatusServiceUnavailable {
				t.Errorf("upgrade while draining: %v (%v), want HTTP 503", resp, err)
			}
			for i, c := range conns {
				code, _ := c.WaitClosed()
				if code != tc.want {
					t.Errorf("socket %d closed with %d, want %d", i, code, tc.want)
				}
				c.ExpectTCPClosed()
			}
			if el := time.Since(start); el > spread+5*time.Second {
				t.Errorf("sockets closed after %v, spread is %v", el, spread)
			}
			first, lastAt := conns[0].ClosedAt(), conns[0].ClosedAt()
			for _, c := range conns {
				if c.ClosedAt().Before(first) {
					first = c.ClosedAt()
				}
				if c.ClosedAt().After(lastAt) {
					lastAt = c.ClosedAt()
				}
			}
			if lastAt.Sub(first) < spread/4 {
				t.Errorf("5 sockets closed within %v, want them spread over %v", lastAt.Sub(first), spread)
			}
			if err := <-errc; err != nil {
				t.Errorf("Shutdown: %v", err)
			}
			if err := a.srv.Shutdown(e2eCtx(t)); err != nil {
				t.Errorf("second Shutdown: %v", err)
			}
		})
	}
	t.Run("cut short by ctx", func(t *testing.T) {
		a := startE2E(t, nil, e2eOptions())
		c := a.dial(t, "")
		c.Send(`{"sys":5,"topic":"stuck","id":1}`)
		a.waitSlowStarted()
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		defer cancel()
		err := a.srv.Shutdown(ctx)
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Shutdown with a stuck ask: %v, want context.DeadlineExceeded", err)
		}
		a.unstick()
		c.WaitClosed()
		// Shutdown may be called again to finish the work.
		if err := a.srv.Shutdown(e2eCtx(t)); err != nil {
			t.Errorf("Shutdown again after the ask returned: %v, want nil", err)
		}
	})
}
