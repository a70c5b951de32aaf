package testutil

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"sync"
	"syscall"
	"time"
)

// stopTimeout bounds how long a process may take to exit after SIGTERM
// before its group gets SIGKILL.
const stopTimeout = 10 * time.Second

// proc is one run of an external program in its own process group. A proc
// is started once; Start on a service creates a new proc.
type proc struct {
	name    string // for messages, e.g. "redis-server"
	cmd     *exec.Cmd
	logPath string
	exited  chan struct{} // closed when the process has been waited for
	err     error         // Wait's result; read after exited is closed

	stopOnce sync.Once
}

// startProc starts path with args, stdout and stderr appended to logPath,
// in a new process group that receives SIGKILL when the test binary dies.
func startProc(name, path string, args []string, logPath string) (*proc, error) {
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("%s log: %w", name, err)
	}
	cmd := exec.Command(path, args...)
	cmd.Stdout = logf
	cmd.Stderr = logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	err = spawn(cmd)
	logf.Close() // the child holds its own copy
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, logPath: logPath, exited: make(chan struct{})}
	go p.wait()
	return p, nil
}

func (p *proc) wait() {
	p.err = p.cmd.Wait()
	close(p.exited)
}

// alive reports whether the process is still running.
func (p *proc) alive() bool {
	select {
	case <-p.exited:
		return false
	default:
		return true
	}
}

// stop sends SIGTERM to the process group, then SIGKILL if the process has
// not exited within stopTimeout, and waits for it. Safe to call twice.
func (p *proc) stop() {
	p.stopOnce.Do(func() {
		pgid := p.cmd.Process.Pid
		_ = syscall.Kill(-pgid, syscall.SIGTERM)
		select {
		case <-p.exited:
		case <-time.After(stopTimeout):
			_ = syscall.Kill(-pgid, syscall.SIGKILL)
			<-p.exited
		}
		// Reap anything the program left behind in its group.
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
	})
}

// logTail returns the last lines of the process's output, for messages.
func (p *proc) logTail() string {
	b, err := os.ReadFile(p.logPath)
	if err != nil {
		return "(no log: " + err.Error() + ")"
	}
	const max = 2000
	if len(b) > max {
		b = b[len(b)-max:]
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			b = b[i+1:]
		}
	}
	return string(bytes.TrimSpace(b))
}

// The parent-death signal is sent when the OS thread that forked the child
// exits, not the process. Go may end threads (a goroutine that exits while
// locked to its thread), so every child is forked from one goroutine locked
// to its thread for the life of the test binary.
var (
	spawnOnce sync.Once
	spawnReq  chan spawnRequest
)

type spawnRequest struct {
	cmd  *exec.Cmd
	done chan error
}

func spawn(cmd *exec.Cmd) error {
	spawnOnce.Do(func() {
		spawnReq = make(chan spawnRequest)
		go spawnLoop(spawnReq)
	})
	r := spawnRequest{cmd: cmd, done: make(chan error, 1)}
	spawnReq <- r
	return <-r.done
}

// spawnLoop never returns: its thread must outlive every child.
func spawnLoop(reqs <-chan spawnRequest) {
	runtime.LockOSThread()
	for r := range reqs {
		r.done <- r.cmd.Start()
	}
}
