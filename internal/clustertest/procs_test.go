package clustertest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sss-go/sss/internal/testutil"
)

// moduleRoot returns the directory of the main module's go.mod.
func moduleRoot(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		t.Fatalf("go env GOMOD: %v", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		t.Fatalf("go env GOMOD = %q: not inside the sss module", gomod)
	}
	return filepath.Dir(gomod)
}

// buildChat builds examples/chat into the test's temporary directory,
// with the race detector when the test binary has it.
func buildChat(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "chat")
	args := []string{"build", "-o", bin}
	if raceEnabled {
		args = append(args, "-race")
	}
	cmd := exec.Command("go", append(args, "./examples/chat")...)
	cmd.Dir = moduleRoot(t)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ./examples/chat: %v\n%s", err, out)
	}
	return bin
}

// procOwner forks the test's child processes from one goroutine locked to
// its OS thread: the parent-death signal (SIGKILL) fires when the thread
// that forked a child ends, and Go ends a thread when a goroutine locked
// to it returns. The goroutine returns (and its thread ends) only at the
// end of the test, after every child was stopped: a child left behind by
// a crash of the test binary is killed with it.
type procOwner struct {
	reqs chan func()
	done chan struct{}
}

// newProcOwner starts the owner; call it before starting processes so
// that its cleanup runs after theirs.
func newProcOwner(t *testing.T) *procOwner {
	o := &procOwner{reqs: make(chan func()), done: make(chan struct{})}
	go func() {
		defer close(o.done)
		runtime.LockOSThread() // never unlocked: the thread ends with the goroutine
		for f := range o.reqs {
			f()
		}
	}()
	t.Cleanup(func() {
		close(o.reqs)
		<-o.done
	})
	return o
}

func (o *procOwner) start(cmd *exec.Cmd) error {
	errc := make(chan error, 1)
	o.reqs <- func() { errc <- cmd.Start() }
	return <-errc
}

// chatProc is one running copy of examples/chat.
type chatProc struct {
	name    string
	cmd     *exec.Cmd
	addr    string // 127.0.0.1:port
	logPath string
	exited  chan struct{}
	waitErr error // valid once exited is closed
	killed  bool  // crashed on purpose by kill
}

func (p *chatProc) httpURL() string { return "http://" + p.addr + "/" }
func (p *chatProc) wsURL() string   { return "ws://" + p.addr + "/ws" }

func (p *chatProc) alive() bool { return !isClosed(p.exited) }

// logTail returns the end of the process's output, for failure messages.
func (p *chatProc) logTail() string {
	b, err := os.ReadFile(p.logPath)
	if err != nil {
		return "(no log: " + err.Error() + ")"
	}
	if len(b) > 3000 {
		b = b[len(b)-3000:]
	}
	return string(bytes.TrimSpace(b))
}

// stop sends SIGTERM to the process group and waits for the process to
// exit, then SIGKILLs the group if it has not within wait. It returns an
// error if the process did not exit cleanly after SIGTERM.
func (p *chatProc) stop() error {
	pgid := p.cmd.Process.Pid
	var err error
	if p.alive() {
		_ = syscall.Kill(-pgid, syscall.SIGTERM)
		select {
		case <-p.exited:
			if p.waitErr != nil {
				err = fmt.Errorf("%s exited with %v after SIGTERM", p.name, p.waitErr)
			}
		case <-time.After(wait):
			err = fmt.Errorf("%s still running %v after SIGTERM: killed", p.name, wait)
			_ = syscall.Kill(-pgid, syscall.SIGKILL)
			<-p.exited
		}
	} else if p.waitErr != nil && !p.killed {
		err = fmt.Errorf("%s had exited by itself: %v", p.name, p.waitErr)
	}
	_ = syscall.Kill(-pgid, syscall.SIGKILL) // anything left in its group
	return err
}

// kill crashes the process (SIGKILL to its group) and waits for it.
func (p *chatProc) kill() {
	p.killed = true
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	<-p.exited
}

// startChat starts bin on a free port with env added to the environment,
// and waits until it serves GET /. It retries on another port if the
// process exits first (the port was taken meanwhile). The process is
// stopped when the test ends; a dirty exit fails the test.
func startChat(t *testing.T, o *procOwner, bin, name string, env []string, args ...string) *chatProc {
	t.Helper()
	var last *chatProc
	for attempt := 1; attempt <= 3; attempt++ {
		p := &chatProc{
			name:    name,
			addr:    fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t)),
			logPath: filepath.Join(t.TempDir(), name+".log"),
			exited:  make(chan struct{}),
		}
		logf, err := os.Create(p.logPath)
		if err != nil {
			t.Fatal(err)
		}
		p.cmd = exec.Command(bin, append([]string{"-addr", p.addr}, args...)...)
		p.cmd.Env = append(cleanEnv(), env...)
		p.cmd.Stdout = logf
		p.cmd.Stderr = logf
		p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
		err = o.start(p.cmd)
		logf.Close() // the child has its own copy
		if err != nil {
			t.Fatalf("start %s: %v", name, err)
		}
		go func() {
			p.waitErr = p.cmd.Wait()
			close(p.exited)
		}()
		t.Cleanup(func() {
			if err := p.stop(); err != nil {
				t.Errorf("%v\n--- %s log ---\n%s", err, p.name, p.logTail())
			}
		})
		if serves(t, p) {
			return p
		}
		last = p
	}
	t.Fatalf("%s did not start in 3 attempts; last log:\n%s", name, last.logTail())
	return nil
}

// serves polls GET / until it answers 200 (true) or the process exits
// (false); it fails the test after wait.
func serves(t *testing.T, p *chatProc) bool {
	t.Helper()
	hc := &http.Client{Timeout: 5 * time.Second}
	ok := false
	testutil.WaitFor(t, wait, func() bool {
		if !p.alive() {
			return true
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, p.httpURL(), nil)
		resp, err := hc.Do(req)
		if err != nil {
			return false
		}
		resp.Body.Close()
		ok = resp.StatusCode == http.StatusOK
		return ok
	}, p.name+" to serve GET / (log: "+p.logPath+")")
	hc.CloseIdleConnections()
	if !ok {
		// Exited before serving: let its stop report nothing for a port
		// clash, and try again.
		var ee *exec.ExitError
		if errors.As(p.waitErr, &ee) && strings.Contains(p.logTail(), "address already in use") {
			p.waitErr = nil
		}
	}
	return ok
}

// cleanEnv is the test's environment without the variables the chat
// reads, so the test's values are the only ones.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "MONGO_URI=") || strings.HasPrefix(kv, "REDIS_URL=") {
			continue
		}
		env = append(env, kv)
	}
	return env
}
