package server

import (
	"context"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/sss-go/sss/internal/testutil"
	"github.com/sss-go/sss/protocol"
)

// TestShutdownSeesLateSocket: a socket whose upgrade passed the draining
// check before Shutdown began, and registers while Shutdown is closing
// the others, is closed or refused too: Shutdown returns nil in time.
func TestShutdownSeesLateSocket(t *testing.T) {
	entered := make(chan struct{})
	release := make(chan struct{})
	var once sync.Once
	hook := func() {
		once.Do(func() {
			close(entered)
			<-release
		})
	}
	ts := newTestServer(t, nil, Options{HeartbeatInterval: -1, ShutdownSpread: -1, Logger: quietLogger()})
	other, _, err := testutil.DialWire(t, ts.url, testutil.WireOptions{})
	if err != nil {
		t.Fatal(err)
	}
	other.Send(`{"sys":3}`)
	other.Next() // the BEGIN reply: registered
	testHookRegister.Store(&hook)
	defer testHookRegister.Store(nil)
	type result struct {
		c    *testutil.WireConn
		resp *http.Response
		err  error
	}
	late := make(chan result, 1)
	go func() {
		c, resp, err := testutil.DialWire(t, ts.url, testutil.WireOptions{})
		late <- result{c, resp, err}
	}()
	<-entered // the late upgrade is past the draining check, not registered
	shut := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		shut <- ts.Shutdown(ctx)
	}()
	// Shutdown is closing the sockets it found.
	other.ExpectClose(protocol.CloseGoingAway)
	close(release)
	if err := <-shut; err != nil {
		t.Fatalf("Shutdown with a socket registered during it: %v", err)
	}
	r := <-late
	switch {
	case r.err != nil:
		if r.resp == nil || r.resp.StatusCode != http.StatusServiceUnavailable {
			t.Errorf("late upgrade failed with %v (%v), want HTTP 503 or a socket closed with 1001", r.err, r.resp)
		}
	default:
		r.c.ExpectClose(protocol.CloseGoingAway)
	}
}
