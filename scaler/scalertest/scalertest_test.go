package scalertest_test

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sss-go/sss/scaler"
	"github.com/sss-go/sss/scaler/scalertest"
)

// brokenEnv selects, in the subprocess, which broken scaler
// TestBrokenScaler runs the suite against.
const brokenEnv = "SSS_SCALERTEST_BROKEN"

func memoryFactory(wrap func(scaler.Scaler) scaler.Scaler) scalertest.Factory {
	return func(t *testing.T) func() scaler.Scaler {
		b := scaler.NewMemoryBackend(scaler.MemoryOptions{
			LeaseTTL:      300 * time.Millisecond,
			CheckInterval: 50 * time.Millisecond,
			Logger:        slog.New(slog.DiscardHandler),
		})
		return func() scaler.Scaler { return wrap(b.Instance()) }
	}
}

// broken wraps a correct scaler and spoils its stream: "drop" loses the
// fifth publication delivered on each channel, "reorder" swaps the fifth
// and the sixth, "duplicate" delivers the fifth twice. It hides FaultInjector, so the suite's fault checks skip.
type broken struct {
	scaler.Scaler
	mode string
}

func (w *broken) Start(ctx context.Context, h scaler.Handler) error {
	next := h.Publication
	var (
		mu    sync.Mutex
		count = make(map[string]int)
		held  = make(map[string]scaler.Publication)
	)
	h.Publication = func(p scaler.Publication) {
		mu.Lock()
		count[p.Channel]++
		n := count[p.Channel]
		mu.Unlock()
		switch {
		case w.mode == "drop" && n == 5:
			return
		case w.mode == "reorder" && n == 5:
			mu.Lock()
			held[p.Channel] = p
			mu.Unlock()
			return
		}
		next(p)
		if w.mode == "duplicate" && n == 5 {
			next(p)
		}
		if w.mode == "reorder" && n == 6 {
			mu.Lock()
			q := held[p.Channel]
			mu.Unlock()
			next(q)
		}
	}
	return w.Scaler.Start(ctx, h)
}

// TestBrokenScaler runs the suite against a broken scaler; it runs only
// as the subprocess of TestSuiteFailsOnBrokenScalers.
func TestBrokenScaler(t *testing.T) {
	mode := os.Getenv(brokenEnv)
	if mode == "" {
		t.Skip("helper of TestSuiteFailsOnBrokenScalers, run in its subprocess")
	}
	// Mode "none" is the same wrapper, unspoilt.
	scalertest.Run(t, memoryFactory(func(s scaler.Scaler) scaler.Scaler {
		return &broken{Scaler: s, mode: mode}
	}))
}

// TestSuiteFailsOnBrokenScalers proves the suite can fail: run against a
// scaler that drops one delivered publication, reorders two or duplicates
// one, the stream
// subtests report failures; run against the same wrapper left intact,
// they pass (so the failures come from the breakage, not the harness).
func TestSuiteFailsOnBrokenScalers(t *testing.T) {
	if os.Getenv(brokenEnv) != "" {
		t.Skip("inside the subprocess")
	}
	subtests := []string{"OrderedStream", "SubscribeRace"}
	for _, tc := range []struct {
		mode     string
		wantFail bool
	}{
		{"none", false},
		{"drop", true},
		{"reorder", true},
		{"duplicate", true},
	} {
		t.Run(tc.mode, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
			defer cancel()
			cmd := exec.CommandContext(ctx, os.Args[0],
				"-test.run=^TestBrokenScaler$/^("+strings.Join(subtests, "|")+")$",
				"-test.v", "-test.count=1")
			cmd.Env = append(os.Environ(), brokenEnv+"="+tc.mode)
			out, err := cmd.CombinedOutput()
			var exit *exec.ExitError
			if err != nil && !errors.As(err, &exit) {
				t.Fatalf("running the subprocess: %v", err)
			}
			if tc.wantFail != (err != nil) {
				t.Fatalf("suite on the %q scaler: exit error %v, want failure %v; output:\n%s", tc.mode, err, tc.wantFail, out)
			}
			for _, name := range subtests {
				verdict := "--- PASS: TestBrokenScaler/" + name
				if tc.wantFail {
					verdict = "--- FAIL: TestBrokenScaler/" + name
				}
				if !strings.Contains(string(out), verdict) {
					t.Errorf("output lacks %q:\n%s", verdict, out)
				}
			}
			if tc.wantFail && !strings.Contains(string(out), "not gap-free, ordered and exactly-once") {
				t.Errorf("failure output does not explain the broken stream:\n%s", out)
			}
		})
	}
}

// coreOnly wraps a scaler and offers only the required core interface:
// none of the optional capabilities.
type coreOnly struct{ scaler.Scaler }

// coreEnv makes TestCoreOnlyScaler run, in the subprocess of
// TestSuiteChecksOfferedCapabilities.
const coreEnv = "SSS_SCALERTEST_CORE"

// TestCoreOnlyScaler runs the suite against a scaler that offers only the
// core; it runs only as the subprocess of
// TestSuiteChecksOfferedCapabilities.
func TestCoreOnlyScaler(t *testing.T) {
	if os.Getenv(coreEnv) == "" {
		t.Skip("helper of TestSuiteChecksOfferedCapabilities, run in its subprocess")
	}
	scalertest.Run(t, memoryFactory(func(s scaler.Scaler) scaler.Scaler { return coreOnly{s} }))
}

// TestSuiteChecksOfferedCapabilities: a scaler that offers only the core
// passes the suite, and the subtests of each capability it lacks are
// skipped naming the capability, not failed.
func TestSuiteChecksOfferedCapabilities(t *testing.T) {
	if os.Getenv(coreEnv) != "" || os.Getenv(brokenEnv) != "" {
		t.Skip("inside the subprocess")
	}
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestCoreOnlyScaler$", "-test.v", "-test.count=1")
	cmd.Env = append(os.Environ(), coreEnv+"=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("the suite failed on a core-only scaler: %v\n%s", err, out)
	}
	for name, capability := range map[string]string{
		"History":           "scaler.HistoryReader",
		"Control":           "scaler.ControlPlane",
		"Presence":          "scaler.PresenceStore",
		"Users":             "scaler.UserRegistry",
		"Fault/LeaseExpiry": "scaler.PresenceStore",
	} {
		if !strings.Contains(string(out), "--- SKIP: TestCoreOnlyScaler/"+name+" ") {
			t.Errorf("%s was not skipped:\n%s", name, out)
		}
		if !strings.Contains(string(out), "does not offer "+capability) {
			t.Errorf("no skip message naming %s:\n%s", capability, out)
		}
	}
	for _, name := range []string{"OrderedStream", "Since", "Idempotency", "Payload", "Close"} {
		if !strings.Contains(string(out), "--- PASS: TestCoreOnlyScaler/"+name+" ") {
			t.Errorf("%s did not pass:\n%s", name, out)
		}
	}
}
