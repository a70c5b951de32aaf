package backoff

import (
	"context"
	"testing"
	"time"

	"github.com/sss-go/sss/internal/testutil"
)

func TestMain(m *testing.M) { testutil.Main(m) }

func TestBound(t *testing.T) {
	p := Policy{Base: 10 * time.Millisecond, Cap: 100 * time.Millisecond}
	want := []time.Duration{10, 20, 40, 80, 100, 100}
	for n, w := range want {
		if got := p.Bound(n); got != w*time.Millisecond {
			t.Errorf("Bound(%d) = %v, want %v", n, got, w*time.Millisecond)
		}
		if got := p.Wait(n); got != w*time.Millisecond {
			t.Errorf("Wait(%d) without jitter = %v, want %v", n, got, w*time.Millisecond)
		}
	}
	if got := (Policy{Base: time.Second}).Bound(3); got != time.Second {
		t.Errorf("a cap below the base means the base: Bound = %v", got)
	}
	if got := (Policy{Base: time.Millisecond, Cap: time.Hour}).Bound(1000); got != time.Hour {
		t.Errorf("a large attempt number must not overflow: Bound = %v", got)
	}
}

// TestFullJitter: waits are in (0, bound] and spread over it.
func TestFullJitter(t *testing.T) {
	p := Policy{Base: 100 * time.Millisecond, Cap: time.Second, Jitter: true}
	for n := 0; n < 6; n++ {
		b := p.Bound(n)
		var low, high int
		for i := 0; i < 2000; i++ {
			w := p.Wait(n)
			if w <= 0 || w > b {
				t.Fatalf("Wait(%d) = %v, outside (0, %v]", n, w, b)
			}
			if w < b/4 {
				low++
			}
			if w > 3*b/4 {
				high++
			}
		}
		if low < 300 || high < 300 {
			t.Errorf("attempt %d: %d waits below a quarter and %d above three quarters of %v: not spread", n, low, high, b)
		}
	}
}

func TestSleep(t *testing.T) {
	if !Sleep(context.Background(), time.Millisecond) {
		t.Error("Sleep with a live context returned false")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	start := time.Now()
	if Sleep(ctx, time.Hour) {
		t.Error("Sleep with a cancelled context returned true")
	}
	if time.Since(start) > time.Second {
		t.Error("Sleep did not return when its context was cancelled")
	}
	if Jitter(0) != 0 || Jitter(-1) != 0 {
		t.Error("Jitter of a non-positive duration is not 0")
	}
	for i := 0; i < 100; i++ {
		if j := Jitter(10); j < 0 || j >= 10 {
			t.Fatalf("Jitter(10) = %v", j)
		}
	}
}
