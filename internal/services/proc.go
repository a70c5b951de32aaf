package services

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"sync"
	"syscall"
	"time"
)

// StopTimeout bounds how long a process may take to exit after SIGTERM
// before its group gets SIGKILL.
const StopTimeout = 10 * time.Second

// ErrExited reports that a process ended while it was being waited for.
var ErrExited = errors.New("sss/services: process exited")

// ErrMissing reports that a program needed to start a service is not
// installed (or could not be built).
var ErrMissing = errors.New("sss/services: program missing")

// Process is one run of an external program in its own process group.
type Process struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	exited  chan struct{} // closed when the process has been waited for
	err     error         // Wait's result; read after exited is closed

	stopOnce sync.Once
}

// StartProcess starts path with args (and env added to this process's
// environment), its stdout and stderr appended to logPath, in a new process
// group that receives SIGKILL when this process dies. name is used in
// messages.
func StartProcess(name, path string, args, env []string, logPath string) (*Process, error) {
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("%s log: %w", name, err)
	}
	cmd := exec.Command(path, args...)
	cmd.Stdout = logf
	cmd.Stderr = logf
	if len(env) > 0 {
		cmd.Env = append(os.Environ(), env...)
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	err = spawn(cmd)
	logf.Close() // the child holds its own copy
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &Process{name: name, cmd: cmd, logPath: logPath, exited: make(chan struct{})}
	go p.wait()
	return p, nil
}

func (p *Process) wait() {
	p.err = p.cmd.Wait()
	close(p.exited)
}

// Pid returns the process id (also its process group id).
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// Exited returns a channel closed once the process has exited.
func (p *Process) Exited() <-chan struct{} { return p.exited }

// Err returns how the process ended; valid once Exited is closed.
func (p *Process) Err() error {
	<-p.exited
	return p.err
}

// Alive reports whether the process is still running.
func (p *Process) Alive() bool {
	select {
	case <-p.exited:
		return false
	default:
		return true
	}
}

// Signal sends sig to the process group.
func (p *Process) Signal(sig syscall.Signal) error {
	return syscall.Kill(-p.Pid(), sig)
}

// Stop sends SIGTERM to the process group, then SIGKILL if the process has
// not exited within StopTimeout, and waits for it. Safe to call twice.
func (p *Process) Stop() { p.stop(syscall.SIGTERM) }

// Kill sends SIGKILL to the process group at once and waits for it.
func (p *Process) Kill() { p.stop(syscall.SIGKILL) }

func (p *Process) stop(sig syscall.Signal) {
	p.stopOnce.Do(func() {
		pgid := p.Pid()
		_ = syscall.Kill(-pgid, syscall.SIGCONT) // a stopped process cannot exit
		_ = syscall.Kill(-pgid, sig)
		t := time.NewTimer(StopTimeout)
		defer t.Stop()
		select {
		case <-p.exited:
		case <-t.C:
			_ = syscall.Kill(-pgid, syscall.SIGKILL)
			<-p.exited
		}
		// Reap anything the program left behind in its group.
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
	})
}

// LogTail returns the last lines of the process's output, for messages.
func (p *Process) LogTail() string {
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
// to its thread for the life of the process.
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
