// Package backoff computes the waits between retries of the sss client and
// scalers: exponential growth from a base to a cap, optionally with full
// jitter (a uniformly random wait below the exponential bound), and a
// context-aware sleep.
//
// # Concurrency
//
// A Policy is a value; its methods are safe for concurrent use.
package backoff

import (
	"context"
	"math/rand/v2"
	"time"
)

// Policy is an exponential backoff: attempt n (from 0) waits
// min(Cap, Base·2^n), or, with Jitter, a uniformly random duration in
// (0, min(Cap, Base·2^n)] ("full jitter", so that many clients retrying at
// once spread out).
type Policy struct {
	// Base is the wait of attempt 0; it must be positive.
	Base time.Duration
	// Cap bounds every wait; a Cap below Base means Base.
	Cap time.Duration
	// Jitter draws each wait at random below its bound.
	Jitter bool
}

// Bound returns the exponential bound of attempt n: min(Cap, Base·2^n).
func (p Policy) Bound(n int) time.Duration {
	d := max(p.Base, time.Nanosecond)
	c := max(p.Cap, d)
	for i := 0; i < n && d < c; i++ {
		d *= 2
	}
	return min(d, c)
}

// Wait returns the wait before attempt n (from 0): Bound(n), or with
// Jitter a random duration in (0, Bound(n)].
func (p Policy) Wait(n int) time.Duration {
	b := p.Bound(n)
	if !p.Jitter {
		return b
	}
	return rand.N(b) + 1
}

// Sleep waits d, or until ctx ends; it reports whether it slept the whole
// time.
func Sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// Jitter returns a uniformly random duration in [0, d); 0 when d <= 0.
func Jitter(d time.Duration) time.Duration {
	if d <= 0 {
		return 0
	}
	return rand.N(d)
}
