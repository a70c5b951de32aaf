package testutil

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/sss-go/sss/internal/services"
)

// envSkipMissing names the variable that turns a missing program into a
// skip instead of a failure.
const envSkipMissing = "SSS_TEST_SKIP_MISSING"

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
// Another process may take it before the caller binds it; the Start
// functions of this package retry with a new port when that happens.
func FreePort(t testing.TB) int {
	t.Helper()
	p, err := services.FreePort()
	if err != nil {
		t.Fatalf("testutil: free port: %v", err)
	}
	return p
}

// WaitFor polls cond until it returns true, and fails the test with msg if
// that does not happen within timeout. It is for state the test does not
// control (a process, a remote server); wait on channels for the rest.
// Call it from the test's goroutine.
func WaitFor(t testing.TB, timeout time.Duration, cond func() bool, msg string) {
	t.Helper()
	if !poll(timeout, cond) {
		t.Fatalf("testutil: timed out after %v waiting for %s", timeout, msg)
	}
}

// poll is services.Poll.
func poll(timeout time.Duration, cond func() bool) bool { return services.Poll(timeout, cond) }

// missing fails the test because a program or service is unavailable, or
// skips it when SSS_TEST_SKIP_MISSING=1.
func missing(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if os.Getenv(envSkipMissing) == "1" {
		t.Skipf("testutil: %s (skipped: %s=1)", msg, envSkipMissing)
	}
	t.Fatalf("testutil: %s (set %s=1 to skip instead)", msg, envSkipMissing)
}

// splitComma splits a comma-separated list, dropping empty items.
func splitComma(v string) []string {
	var out []string
	for _, f := range strings.Split(v, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}
