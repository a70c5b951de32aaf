package services

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
)

const (
	// EnvFerretBin names the variable giving a prebuilt FerretDB program.
	EnvFerretBin = "SSS_FERRETDB_BIN"
	// FerretBinName is the program's file name under <module root>/.bin/.
	FerretBinName = "sss-ferretdb"
)

// Mongo is the test MongoDB: the FerretDB program (a MongoDB wire
// protocol server on SQLite) on a loopback port, with its data in a
// directory it keeps across Stop and Start. It is for development and
// tests only: a single node, not a replica set.
type Mongo struct {
	// URI is the connection string, e.g. mongodb://127.0.0.1:34567/.
	URI string
	// Dir is the data directory.
	Dir string

	bin     string
	port    int
	logPath string

	mu   sync.Mutex
	proc *Process
}

// StartMongo starts the FerretDB program bin (see FerretBin) on a free
// loopback port with its data in dir/data and its log in dir, and waits
// until it answers ping.
func StartMongo(bin, dir string) (*Mongo, error) {
	m := &Mongo{bin: bin, Dir: filepath.Join(dir, "data"), logPath: filepath.Join(dir, "ferretdb.log")}
	var err error
	for attempt := 0; attempt < 3; attempt++ {
		if m.port, err = FreePort(); err != nil {
			return nil, err
		}
		m.URI = "mongodb://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(m.port)) + "/"
		if err = m.Start(); err == nil || !errors.Is(err, ErrExited) {
			break
		}
	}
	if err != nil {
		return nil, err
	}
	return m, nil
}

// Running reports whether the server process is running.
func (m *Mongo) Running() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.proc != nil && m.proc.Alive()
}

// Process returns the current server process.
func (m *Mongo) Process() *Process {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.proc
}

// Stop stops the server and waits for it to exit; the data stays in Dir.
func (m *Mongo) Stop() {
	if p := m.Process(); p != nil {
		p.Stop()
	}
}

// Wipe stops the server, removes all its data and starts it again.
func (m *Mongo) Wipe() error {
	m.Stop()
	if err := os.RemoveAll(m.Dir); err != nil {
		return fmt.Errorf("wipe %s: %w", m.Dir, err)
	}
	return m.Start()
}

// Start starts the server on its port and data directory and waits until
// it answers ping. It does nothing if the server is running.
func (m *Mongo) Start() error {
	if m.Running() {
		return nil
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(m.port))
	if err := os.MkdirAll(m.Dir, 0o755); err != nil {
		return fmt.Errorf("FerretDB data dir: %w", err)
	}
	args := []string{"-listen", addr, "-dir", m.Dir, "-parent-pid", strconv.Itoa(os.Getpid())}
	p, err := StartProcess("FerretDB", m.bin, args, nil, m.logPath)
	if err != nil {
		return err
	}
	m.mu.Lock()
	m.proc = p
	m.mu.Unlock()
	return waitMongo(p, addr, m.URI)
}

// waitMongo waits for the port first (a driver whose first attempt fails
// waits 500 ms before the next), then for a ping.
func waitMongo(p *Process, addr, uri string) error {
	var last error
	ok := Poll(StartTimeout, func() bool {
		if !p.Alive() {
			return true
		}
		var c net.Conn
		if c, last = net.DialTimeout("tcp", addr, time.Second); last == nil {
			c.Close()
		}
		return last == nil
	})
	if err := startErr(p, addr, ok, "listen", last); err != nil {
		return err
	}
	c, err := mongo.Connect(options.Client().ApplyURI(uri).SetServerSelectionTimeout(2 * time.Second))
	if err != nil {
		p.Stop()
		return fmt.Errorf("FerretDB client: %w", err)
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = c.Disconnect(ctx)
	}()
	ok = Poll(StartTimeout, func() bool {
		if !p.Alive() {
			return true
		}
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		last = c.Ping(ctx, nil)
		return last == nil
	})
	return startErr(p, addr, ok, "answer ping", last)
}

func startErr(p *Process, addr string, ok bool, what string, last error) error {
	switch {
	case !p.Alive():
		return fmt.Errorf("FerretDB on %s: %w (%v): %s", addr, ErrExited, p.Err(), p.LogTail())
	case !ok:
		p.Stop()
		return fmt.Errorf("FerretDB on %s did not %s within %v: %v: %s", addr, what, StartTimeout, last, p.LogTail())
	}
	return nil
}

var (
	binMu   sync.Mutex
	binPath string
)

// FerretBin returns the FerretDB program: $SSS_FERRETDB_BIN, else
// <module root>/.bin/sss-ferretdb, built from internal/ferretdb if absent
// (under a file lock, so parallel processes build it once; a build from a
// cold module cache takes a minute or two). progress, when not nil, is told
// that a build starts. Errors wrap ErrMissing.
func FerretBin(progress io.Writer) (string, error) {
	if p := os.Getenv(EnvFerretBin); p != "" {
		if _, err := os.Stat(p); err != nil {
			return "", fmt.Errorf("%w: %s=%s: %v", ErrMissing, EnvFerretBin, p, err)
		}
		return p, nil
	}
	binMu.Lock()
	defer binMu.Unlock()
	if binPath != "" {
		return binPath, nil
	}
	p, err := buildFerret(progress)
	if err != nil {
		return "", fmt.Errorf("%w: FerretDB program: %v (build it with: cd internal/ferretdb && go build -o ../../.bin/%s .)", ErrMissing, err, FerretBinName)
	}
	binPath = p
	return p, nil
}

func buildFerret(progress io.Writer) (string, error) {
	root, err := ModuleRoot()
	if err != nil {
		return "", err
	}
	binDir := filepath.Join(root, ".bin")
	bin := filepath.Join(binDir, FerretBinName)
	if _, err := os.Stat(bin); err == nil {
		return bin, nil
	}
	if err := os.MkdirAll(binDir, 0o755); err != nil {
		return "", err
	}
	lock, err := os.OpenFile(filepath.Join(binDir, "."+FerretBinName+".lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return "", err
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return "", fmt.Errorf("lock: %w", err)
	}
	defer syscall.Flock(int(lock.Fd()), syscall.LOCK_UN)
	if _, err := os.Stat(bin); err == nil {
		return bin, nil // another process built it while we waited
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		return "", fmt.Errorf("go not found in PATH to build %s: %w", FerretBinName, err)
	}
	if progress != nil {
		fmt.Fprintf(progress, "building the test MongoDB (FerretDB) into %s; the first build takes a minute or two\n", bin)
	}
	tmp := fmt.Sprintf("%s.tmp%d", bin, os.Getpid())
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, goBin, "build", "-o", tmp, ".")
	cmd.Dir = filepath.Join(root, "internal", "ferretdb")
	cmd.Env = append(os.Environ(), "GOWORK=off")
	if out, err := cmd.CombinedOutput(); err != nil {
		os.Remove(tmp)
		return "", fmt.Errorf("go build in %s: %w: %s", cmd.Dir, err, out)
	}
	if err := os.Rename(tmp, bin); err != nil {
		return "", err
	}
	return bin, nil
}
