package browsertest

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sss-go/sss/internal/testutil"
)

// wait bounds the waits of the browser tests: a failure bound on a loaded
// 2-core machine, never a pace.
const wait = 60 * time.Second

var (
	chatOnce sync.Once
	chatBin  string
	chatErr  error
)

// buildChat builds examples/chat once per test binary, into the
// repository's .bin (git-ignored; built beside and renamed, so a test
// binary running an older one is not disturbed).
func buildChat(t *testing.T) string {
	t.Helper()
	chatOnce.Do(func() {
		root, err := filepath.Abs(filepath.Join("..", ".."))
		if err != nil {
			chatErr = err
			return
		}
		bin := filepath.Join(root, ".bin", "browsertest-chat")
		tmp := fmt.Sprintf("%s.tmp%d", bin, os.Getpid())
		cmd := exec.Command("go", "build", "-o", tmp, "./examples/chat")
		cmd.Dir = root
		cmd.Env = append(os.Environ(), "GOWORK=off")
		if out, err := cmd.CombinedOutput(); err != nil {
			chatErr = fmt.Errorf("go build ./examples/chat: %v\n%s", err, out)
			return
		}
		chatErr = os.Rename(tmp, bin)
		chatBin = bin
	})
	if chatErr != nil {
		t.Fatal(chatErr)
	}
	return chatBin
}

// procOwner starts child processes from one goroutine locked to its OS
// thread, so that their parent-death signal (SIGKILL, sent when the thread
// that forked them ends) fires only when the test is over, or when the
// test binary dies.
type procOwner struct {
	reqs chan func()
	done chan struct{}
}

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

// chatProc is one copy of examples/chat on a fixed address; it can be
// stopped, killed and started again on the same address.
type chatProc struct {
	t       *testing.T
	owner   *procOwner
	name    string
	bin     string
	addr    string
	env     []string
	args    []string
	logPath string
	cmd     *exec.Cmd
	exited  chan struct{}
	waitErr error
}

// startChat starts bin on a free port, env added to a clean environment;
// it is stopped when the test ends, and a dirty exit fails the test.
func startChat(t *testing.T, o *procOwner, bin, name string, env []string, args ...string) *chatProc {
	t.Helper()
	p := &chatProc{
		t: t, owner: o, name: name, bin: bin, env: env, args: args,
		addr:    fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t)),
		logPath: filepath.Join(t.TempDir(), name+".log"),
	}
	p.start()
	t.Cleanup(func() {
		if err := p.stop(); err != nil {
			t.Errorf("%v\n--- %s log ---\n%s", err, name, p.logTail())
		}
		if t.Failed() {
			t.Logf("log of %s: %s", name, p.logPath)
		}
	})
	return p
}

func (p *chatProc) url(path string) string { return "http://" + p.addr + path }

// start runs the program on p.addr and waits until it serves GET /.
func (p *chatProc) start() {
	p.t.Helper()
	logf, err := os.OpenFile(p.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		p.t.Fatal(err)
	}
	fmt.Fprintf(logf, "==== start %s\n", time.Now().Format(time.RFC3339Nano))
	p.cmd = exec.Command(p.bin, append([]string{"-addr", p.addr}, p.args...)...)
	p.cmd.Env = append(cleanEnv(), p.env...)
	p.cmd.Stdout, p.cmd.Stderr = logf, logf
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	errc := make(chan error, 1)
	p.owner.reqs <- func() { errc <- p.cmd.Start() }
	err = <-errc
	logf.Close() // the child has its own copy
	if err != nil {
		p.t.Fatalf("start %s: %v", p.name, err)
	}
	exited := make(chan struct{})
	p.exited = exited
	cmd := p.cmd
	go func() {
		p.waitErr = cmd.Wait()
		close(exited)
	}()
	hc := &http.Client{Timeout: 5 * time.Second}
	defer hc.CloseIdleConnections()
	testutil.WaitFor(p.t, wait, func() bool {
		select {
		case <-exited:
			p.t.Fatalf("%s exited before serving: %v\n%s", p.name, p.waitErr, p.logTail())
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, p.url("/"), nil)
		resp, err := hc.Do(req)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}, p.name+" to serve GET /")
}

// stop sends SIGTERM and waits for a clean exit (SIGKILL after wait).
func (p *chatProc) stop() error {
	if p.cmd == nil {
		return nil
	}
	pgid := p.cmd.Process.Pid
	defer func() { _ = syscall.Kill(-pgid, syscall.SIGKILL) }() // anything left in its group
	select {
	case <-p.exited:
		return nil // killed on purpose, or stopped already
	default:
	}
	_ = syscall.Kill(-pgid, syscall.SIGTERM)
	select {
	case <-p.exited:
		if p.waitErr != nil {
			return fmt.Errorf("%s exited with %v after SIGTERM", p.name, p.waitErr)
		}
		return nil
	case <-time.After(wait):
		return fmt.Errorf("%s still running %v after SIGTERM", p.name, wait)
	}
}

// restart stops the process with SIGTERM and starts it again on the same
// address at once.
func (p *chatProc) restart() {
	p.t.Helper()
	if err := p.stop(); err != nil {
		p.t.Fatalf("%v\n%s", err, p.logTail())
	}
	p.start()
}

// killAndStart crashes the process (SIGKILL) and starts it again on the
// same address at once.
func (p *chatProc) killAndStart() {
	p.t.Helper()
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	<-p.exited
	p.start()
}

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

// cleanEnv is the environment without the variables the chat reads.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "MONGO_URI=") && !strings.HasPrefix(kv, "REDIS_URL=") {
			env = append(env, kv)
		}
	}
	return env
}
