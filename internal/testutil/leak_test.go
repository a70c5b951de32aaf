package testutil

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeTB records what a leak check reports instead of failing the test.
type fakeTB struct {
	testing.TB
	mu       sync.Mutex
	cleanups []func()
	errs     []string
}

func (f *fakeTB) Helper()           {}
func (f *fakeTB) Cleanup(fn func()) { f.cleanups = append(f.cleanups, fn) }
func (f *fakeTB) Errorf(s string, a ...any) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.errs = append(f.errs, fmt.Sprintf(s, a...))
}

func (f *fakeTB) runCleanups() {
	for i := len(f.cleanups) - 1; i >= 0; i-- {
		f.cleanups[i]()
	}
}

func leakedWorker(stop <-chan struct{}) { <-stop }

func TestCheckLeaks(t *testing.T) {
	tests := []struct {
		name     string
		leak     bool // leave the goroutine running until after the check
		wantFail bool
	}{
		{name: "leaked goroutine detected", leak: true, wantFail: true},
		{name: "goroutine that exits passes", leak: false, wantFail: false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := &fakeTB{TB: t}
			checkLeaks(f, 300*time.Millisecond)
			stop := make(chan struct{})
			done := make(chan struct{})
			go func() { leakedWorker(stop); close(done) }()
			if !tc.leak {
				close(stop)
			}
			f.runCleanups()
			if tc.leak {
				close(stop)
			}
			<-done
			failed := len(f.errs) > 0
			if failed != tc.wantFail {
				t.Fatalf("leak check failed=%v, want %v; errors: %v", failed, tc.wantFail, f.errs)
			}
			if tc.wantFail && !strings.Contains(f.errs[0], "leakedWorker") {
				t.Fatalf("report does not show the leaked stack:\n%s", f.errs[0])
			}
		})
	}
}

func TestWaitLeaksIgnoresFramework(t *testing.T) {
	// Every goroutine of a test binary at rest is the framework's or
	// ours: none is reported.
	if leaked := waitLeaks(nil, time.Second); len(leaked) > 0 {
		t.Fatalf("reported as leaked:\n%s", stacks(leaked))
	}
}

func TestParseID(t *testing.T) {
	tests := []struct {
		in   string
		want uint64
		ok   bool
	}{
		{"goroutine 17 [running]:\nmain.main()", 17, true},
		{"goroutine x [running]:", 0, false},
		{"something else", 0, false},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			got, ok := parseID(tc.in)
			if got != tc.want || ok != tc.ok {
				t.Fatalf("parseID(%q) = %d, %v; want %d, %v", tc.in, got, ok, tc.want, tc.ok)
			}
		})
	}
}

func TestWaitFor(t *testing.T) {
	n := 0
	WaitFor(t, 10*time.Second, func() bool { n++; return n >= 3 }, "three polls")
	if n != 3 {
		t.Fatalf("cond called %d times, want 3", n)
	}
	f := &fakeTB{TB: t}
	var fatal string
	ff := &fatalTB{fakeTB: f, fatal: &fatal}
	done := make(chan struct{})
	go func() {
		defer close(done)
		WaitFor(ff, 50*time.Millisecond, func() bool { return false }, "never")
	}()
	<-done
	if !strings.Contains(fatal, "never") {
		t.Fatalf("WaitFor timeout message = %q", fatal)
	}
}

// fatalTB records Fatalf and ends the goroutine like testing does.
type fatalTB struct {
	*fakeTB
	fatal *string
}

func (f *fatalTB) Fatalf(s string, a ...any) {
	*f.fatal = fmt.Sprintf(s, a...)
	runtime.Goexit()
}

// envLeakChild makes TestLeakyChild leak a goroutine; it is set only when
// TestVerifyNoLeaksFailsBinary runs this test binary as a child.
const envLeakChild = "SSS_TESTUTIL_LEAK_CHILD"

var leakForever = make(chan struct{})

func leakyChildWorker() { <-leakForever }

func TestLeakyChild(t *testing.T) {
	if os.Getenv(envLeakChild) != "1" {
		t.Skip("only run as a child of TestVerifyNoLeaksFailsBinary")
	}
	go leakyChildWorker()
}

// VerifyNoLeaks (through this package's TestMain) turns a passing test
// binary that leaves a goroutine behind into a failing one.
func TestVerifyNoLeaksFailsBinary(t *testing.T) {
	if os.Getenv(envLeakChild) == "1" {
		t.Skip("child")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestLeakyChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), envLeakChild+"=1")
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 {
		t.Fatalf("child exit: %v, want exit status 1; output:\n%s", err, out)
	}
	if !strings.Contains(string(out), "leakyChildWorker") || !strings.Contains(string(out), "goroutine leak") {
		t.Fatalf("child output does not report the leak:\n%s", out)
	}
}
