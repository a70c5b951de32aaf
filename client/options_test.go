package client

import (
	"testing"
	"time"
)

// TestStatusNames: the client states keep the SSS order and numbering
// (see docs/protocol.md §13 for that client).
func TestStatusNames(t *testing.T) {
	for _, tc := range []struct {
		s    Status
		n    int
		name string
	}{
		{StatusInit, 0, "init"}, {StatusStarting, 1, "starting"}, {StatusStartRetrying, 2, "start_retrying"},
		{StatusDroppedRetrying, 3, "dropped_retrying"}, {StatusStartFailed, 4, "start_failed"},
		{StatusRetryInterval, 5, "retry_interval"}, {StatusReconnectFailed, 6, "reconnect_failed"},
		{StatusReady, 7, "ready"}, {StatusSyncing, 8, "syncing"}, {StatusBeginning, 9, "beginning"},
		{StatusBooted, 10, "booted"}, {StatusClosed, 11, "closed"}, {Status(12), 12, "unknown"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if int(tc.s) != tc.n || tc.s.String() != tc.name {
				t.Errorf("status %d %q, want %d %q", int(tc.s), tc.s.String(), tc.n, tc.name)
			}
		})
	}
	for _, tc := range []struct {
		s     SubStatus
		name  string
		final bool
	}{
		{SubActive, "active", false}, {SubDropped, "dropped", false}, {SubSyncing, "syncing", false},
		{SubRefused, "refused", true}, {SubNotRecoverable, "not_recoverable", false},
		{SubUnsubscribed, "unsubscribed", true}, {SubBooted, "booted", true}, {SubClosed, "closed", true},
		{SubReconnectFailed, "reconnect_failed", true}, {SubStatus(-1), "unknown", false},
	} {
		t.Run("sub "+tc.name, func(t *testing.T) {
			if tc.s.String() != tc.name || tc.s.Final() != tc.final {
				t.Errorf("%d: %q final %v, want %q final %v", int(tc.s), tc.s.String(), tc.s.Final(), tc.name, tc.final)
			}
		})
	}
}

// TestBackoff: full jitter within [0, min(cap, base*2^n)], never zero, and
// actually spread (not always the bound).
func TestBackoff(t *testing.T) {
	c := &Client{opts: Options{ReconnectBase: 10 * time.Millisecond, ReconnectCap: 300 * time.Millisecond}.withDefaults()}
	for _, tc := range []struct {
		n     int
		bound time.Duration
	}{
		{0, 10 * time.Millisecond}, {1, 20 * time.Millisecond}, {3, 80 * time.Millisecond},
		{5, 300 * time.Millisecond}, {60, 300 * time.Millisecond},
	} {
		t.Run(tc.bound.String(), func(t *testing.T) {
			lo, hi := tc.bound, time.Duration(0)
			for i := 0; i < 2000; i++ {
				d := c.backoff(tc.n)
				if d <= 0 || d > tc.bound {
					t.Fatalf("backoff(%d) = %v, want in (0, %v]", tc.n, d, tc.bound)
				}
				lo, hi = min(lo, d), max(hi, d)
			}
			if lo > tc.bound/4 || hi < tc.bound*3/4 {
				t.Errorf("backoff(%d) spans [%v, %v] of (0, %v]: not full jitter", tc.n, lo, hi, tc.bound)
			}
		})
	}
}

// TestDefaults: zero options get the documented defaults.
func TestDefaults(t *testing.T) {
	o := Options{}.withDefaults()
	if o.ReconnectBase != 500*time.Millisecond || o.ReconnectCap != 30*time.Second ||
		o.HandshakeTimeout != 10*time.Second || o.WriteTimeout != 10*time.Second ||
		o.CloseTimeout != 5*time.Second || o.MaxFrameBytes != 128<<20 || o.Logger == nil {
		t.Errorf("defaults %+v", o)
	}
}
