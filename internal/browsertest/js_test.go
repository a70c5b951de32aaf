package browsertest

import (
	"bufio"
	"context"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sss-go/sss/internal/testutil"
)

// TestJSClient runs the JavaScript tests of sss.js (js/*.test.mjs, with
// node's test runner) against the fixture server.
func TestJSClient(t *testing.T) {
	testutil.CheckLeaks(t)
	node := lookPath(t, "node")
	f := startFixture(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	args := append(nodeFlags(t, node), "--no-warnings", "--test", "--test-concurrency=1", "--test-reporter=spec", "js/")
	cmd := exec.CommandContext(ctx, node, args...)
	cmd.Env = append(os.Environ(), "SSS_FIXTURE="+f.hs.URL)
	cmd.WaitDelay = 5 * time.Second
	out := logLines(t, "node")
	cmd.Stdout, cmd.Stderr = out, out
	err := cmd.Run()
	out.Close()
	if err != nil {
		t.Fatalf("node --test: %v (its output is above)", err)
	}
}

// nodeFlags returns the flags this node needs for the tests: a global
// WebSocket (behind --experimental-websocket in Node 20 and 21) and ES
// module syntax in sss.js, a .js file outside any package.json (detected
// without a flag from Node 22.7 on).
func nodeFlags(t *testing.T, node string) []string {
	t.Helper()
	works := func(args ...string) bool {
		return exec.Command(node, append(args, "-e", "if (typeof WebSocket !== 'function') process.exit(3)")...).Run() == nil
	}
	var flags []string
	if !works() {
		if !works("--experimental-websocket") {
			t.Fatalf("%s has no WebSocket, even with --experimental-websocket: Node.js 20 or later is needed", node)
		}
		flags = append(flags, "--experimental-websocket")
	}
	if works(append(flags, "--experimental-detect-module")...) {
		flags = append(flags, "--experimental-detect-module")
	}
	return flags
}

// lookPath finds a program the test needs, failing (or skipping with
// SSS_TEST_SKIP_MISSING=1) when it is missing.
func lookPath(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("SSS_TEST_SKIP_MISSING") == "1" {
			t.Skipf("%s not found: %v", name, err)
		}
		t.Fatalf("%s not found (./scripts/test.sh installs it): %v", name, err)
	}
	return p
}

// lineLogger sends what a child process prints to the test log, line by
// line, as it comes.
type lineLogger struct {
	pw   *io.PipeWriter
	done chan struct{}
}

func logLines(t *testing.T, prefix string) *lineLogger {
	pr, pw := io.Pipe()
	l := &lineLogger{pw: pw, done: make(chan struct{})}
	var once sync.Once
	go func() {
		defer close(l.done)
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			if line := strings.TrimRight(sc.Text(), " "); line != "" {
				t.Logf("%s: %s", prefix, line)
			}
		}
		once.Do(func() { _, _ = io.Copy(io.Discard, pr) })
	}()
	return l
}

func (l *lineLogger) Write(p []byte) (int, error) { return l.pw.Write(p) }

// Close ends the log once everything written was logged.
func (l *lineLogger) Close() {
	_ = l.pw.Close()
	<-l.done
}
