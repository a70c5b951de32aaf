package testutil

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

// envSkipMissing names the variable that turns a missing program into a
// skip instead of a failure.
const envSkipMissing = "SSS_TEST_SKIP_MISSING"

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
// Another process may take it before the caller binds it; the Start
// functions of this package retry with a new port when that happens.
func FreePort(t testing.TB) int {
	t.Helper()
	p, err := freePort()
	if err != nil {
		t.Fatalf("testutil: free port: %v", err)
	}
	return p
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
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

// poll calls cond with a growing interval (1 ms to 100 ms) until it returns
// true or timeout has passed; it reports whether cond returned true.
func poll(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	wait := time.Millisecond
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(wait)
		if wait < 100*time.Millisecond {
			wait *= 2
		}
	}
}

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

// moduleName is the main module whose root holds .bin/.
const moduleName = "github.com/sss-go/sss"

var (
	rootOnce sync.Once
	rootDir  string
	rootErr  error
)

// moduleRoot returns the directory of the main module's go.mod: it walks up
// from the working directory (a test runs in its package's directory), then
// from this source file.
func moduleRoot() (string, error) {
	rootOnce.Do(func() {
		var starts []string
		if wd, err := os.Getwd(); err == nil {
			starts = append(starts, wd)
		}
		if _, file, _, ok := runtime.Caller(0); ok {
			starts = append(starts, filepath.Dir(file))
		}
		for _, s := range starts {
			if d, ok := findModule(s); ok {
				rootDir = d
				return
			}
		}
		rootErr = fmt.Errorf("no go.mod of module %s above the working directory", moduleName)
	})
	return rootDir, rootErr
}

func findModule(dir string) (string, bool) {
	for {
		if b, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil && modulePath(b) == moduleName {
			return dir, true
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", false
		}
		dir = parent
	}
}

func modulePath(gomod []byte) string {
	sc := bufio.NewScanner(bytes.NewReader(gomod))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) >= 2 && f[0] == "module" {
			return strings.Trim(f[1], `"`)
		}
	}
	return ""
}

// errExited reports that a process ended while we waited for it.
var errExited = errors.New("sss/testutil: process exited")
