package testutil

import (
	"bytes"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"
)

// leakTimeout is how long leak checks wait for new goroutines to exit.
const leakTimeout = 5 * time.Second

// CheckLeaks records the goroutines running now and, when the test ends,
// waits up to 5 s for every goroutine started since to exit, then fails the
// test listing the stacks of those still running. Call it first in the
// test so that its check runs after every other cleanup (cleanups run last
// registered first). It cannot tell a test's goroutines from those of
// tests running in parallel with it: do not use it in tests that call
// t.Parallel or run beside them; VerifyNoLeaks checks the whole binary.
func CheckLeaks(t testing.TB) {
	t.Helper()
	checkLeaks(t, leakTimeout)
}

func checkLeaks(t testing.TB, timeout time.Duration) {
	before := map[uint64]bool{}
	for _, g := range goroutines() {
		before[g.id] = true
	}
	t.Cleanup(func() {
		if leaked := waitLeaks(before, timeout); len(leaked) > 0 {
			t.Errorf("testutil: %d goroutine(s) still running %v after the test:\n\n%s", len(leaked), timeout, stacks(leaked))
		}
	})
}

// VerifyNoLeaks runs the tests, stops the services shared by the test
// binary (SharedMongo), and, if the tests passed, waits up to 5 s for every
// goroutine but the test framework's to exit; if some remain it prints
// their stacks and returns 1. It returns the exit code for os.Exit.
func VerifyNoLeaks(m *testing.M) int {
	mainActive.Store(true)
	code := m.Run()
	stopShared()
	if code != 0 {
		return code
	}
	if leaked := waitLeaks(nil, leakTimeout); len(leaked) > 0 {
		fmt.Fprintf(os.Stderr, "testutil: %d goroutine(s) still running after the tests:\n\n%s\n", len(leaked), stacks(leaked))
		fmt.Println("FAIL: goroutine leak")
		return 1
	}
	return 0
}

// Main is the whole TestMain of a package using this one:
//
//	func TestMain(m *testing.M) { testutil.Main(m) }
//
// It calls os.Exit(VerifyNoLeaks(m)).
func Main(m *testing.M) {
	os.Exit(VerifyNoLeaks(m))
}

type goroutine struct {
	id    uint64
	stack string
}

// waitLeaks polls until no goroutine outside before (and not ignored)
// remains, or timeout passes; it returns those remaining.
func waitLeaks(before map[uint64]bool, timeout time.Duration) []goroutine {
	var leaked []goroutine
	poll(timeout, func() bool {
		leaked = leaked[:0]
		self := curID()
		for _, g := range goroutines() {
			if g.id == self || before[g.id] || ignored(g.stack) {
				continue
			}
			leaked = append(leaked, g)
		}
		return len(leaked) == 0
	})
	return leaked
}

// ignoredFuncs are frames of goroutines that belong to the runtime, the
// test framework or this package's long-lived helpers.
var ignoredFuncs = []string{
	"testing.tRunner(",
	"testing.(*M).",
	"testing.runTests",
	"testing.runFuzzing",
	"testing.runFuzzTests",
	"testing.(*T).Run(",
	"testing.(*F).Fuzz",
	"testing/internal/testdeps.",
	"os/signal.signal_recv",
	"os/signal.loop",
	"runtime.ensureSigM",
	"runtime.ReadTrace",
	"internal/services.spawnLoop(",
	"internal/services.(*Process).wait(", // services are stopped by cleanups or VerifyNoLeaks
}

func ignored(stack string) bool {
	// Only the frames count, not the "created by" line.
	if i := strings.Index(stack, "\ncreated by "); i >= 0 {
		stack = stack[:i]
	}
	for _, f := range ignoredFuncs {
		if strings.Contains(stack, f) {
			return true
		}
	}
	return false
}

func goroutines() []goroutine {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	var gs []goroutine
	for _, block := range bytes.Split(buf, []byte("\n\n")) {
		s := string(bytes.TrimSpace(block))
		if id, ok := parseID(s); ok {
			gs = append(gs, goroutine{id: id, stack: s})
		}
	}
	return gs
}

// parseID reads N from a stack that begins "goroutine N [state]:".
func parseID(stack string) (uint64, bool) {
	rest, ok := strings.CutPrefix(stack, "goroutine ")
	if !ok {
		return 0, false
	}
	i := strings.IndexByte(rest, ' ')
	if i < 0 {
		return 0, false
	}
	id, err := strconv.ParseUint(rest[:i], 10, 64)
	return id, err == nil
}

func curID() uint64 {
	buf := make([]byte, 64)
	n := runtime.Stack(buf, false)
	id, _ := parseID(string(buf[:n]))
	return id
}

func stacks(gs []goroutine) string {
	parts := make([]string, len(gs))
	for i, g := range gs {
		parts[i] = g.stack
	}
	return strings.Join(parts, "\n\n")
}
