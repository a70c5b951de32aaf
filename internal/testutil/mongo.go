package testutil

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
)

const (
	// envMongoURI names the variable giving an existing MongoDB to use.
	envMongoURI = "SSS_TEST_MONGO_URI"
	// envFerretBin names the variable giving a prebuilt FerretDB program.
	envFerretBin = "SSS_FERRETDB_BIN"
	// ferretBinName is the program's file name under <module root>/.bin/.
	ferretBinName = "sss-ferretdb"
)

// Mongo is a MongoDB-compatible server: the FerretDB program started by
// StartMongo or SharedMongo, or the server named by SSS_TEST_MONGO_URI.
type Mongo struct {
	// URI is the connection string, e.g. mongodb://127.0.0.1:34567/.
	URI string
	// Dir is the data directory; empty for SharedMongo's and external
	// servers, whose data the test must not touch.
	Dir string

	t      testing.TB
	reason string // why Stop/Start/Wipe are unsupported; "" if they are
	s      *mongoServer
}

// mongoServer is one FerretDB program on a fixed port and data dir.
type mongoServer struct {
	bin  string
	port int
	dir  string
	uri  string

	mu   sync.Mutex
	proc *proc
}

// StartMongo starts the FerretDB program (built on first use, see package
// doc) on a free loopback port with its data in t.TempDir(), waits until it
// answers ping, and stops it when the test ends. Use it when a test stops or
// wipes the server; otherwise SharedMongo is cheaper. With SSS_TEST_MONGO_URI
// set it starts nothing and returns that server (CanRestart is false).
func StartMongo(t testing.TB) *Mongo {
	t.Helper()
	if u := os.Getenv(envMongoURI); u != "" {
		return &Mongo{URI: u, t: t, reason: "the MongoDB from " + envMongoURI}
	}
	bin := ferretBin(t)
	s := &mongoServer{bin: bin, dir: filepath.Join(t.TempDir(), "data")}
	t.Cleanup(s.stop)
	if err := s.startFresh(); err != nil {
		t.Fatalf("testutil: %v", err)
	}
	return &Mongo{URI: s.uri, Dir: s.dir, t: t, s: s}
}

var (
	mainActive atomic.Bool // set by VerifyNoLeaks

	sharedMu    sync.Mutex
	sharedMongo *mongoServer
	sharedTmp   string
)

// SharedMongo returns a FerretDB program shared by all tests of the test
// binary, started on first use; give each test its own database with
// DBName. It requires a TestMain calling Main or VerifyNoLeaks, which stops
// it after the tests. Stop, Start and Wipe fail the test (CanRestart is
// false): use StartMongo for that. With SSS_TEST_MONGO_URI set it returns
// that server.
func SharedMongo(t testing.TB) *Mongo {
	t.Helper()
	if u := os.Getenv(envMongoURI); u != "" {
		return &Mongo{URI: u, t: t, reason: "the MongoDB from " + envMongoURI}
	}
	if !mainActive.Load() {
		t.Fatalf("testutil: SharedMongo needs a TestMain calling testutil.Main(m) (or VerifyNoLeaks), which stops the shared server")
	}
	sharedMu.Lock()
	defer sharedMu.Unlock()
	if sharedMongo == nil || !sharedMongo.running() {
		if sharedMongo != nil {
			sharedMongo.stop()
			os.RemoveAll(sharedTmp)
		}
		bin := ferretBin(t)
		tmp, err := os.MkdirTemp("", "sss-ferretdb-shared-")
		if err != nil {
			t.Fatalf("testutil: shared FerretDB dir: %v", err)
		}
		s := &mongoServer{bin: bin, dir: filepath.Join(tmp, "data")}
		if err := s.startFresh(); err != nil {
			os.RemoveAll(tmp)
			t.Fatalf("testutil: shared: %v", err)
		}
		sharedMongo, sharedTmp = s, tmp
	}
	return &Mongo{URI: sharedMongo.uri, t: t, reason: "the shared FerretDB (use StartMongo)", s: sharedMongo}
}

// stopShared stops the shared server, if any, and removes its data.
func stopShared() {
	sharedMu.Lock()
	defer sharedMu.Unlock()
	if sharedMongo != nil {
		sharedMongo.stop()
		os.RemoveAll(sharedTmp)
		sharedMongo, sharedTmp = nil, ""
	}
}

// CanRestart reports whether Stop, Start and Wipe are supported: false for
// SharedMongo's server and for the one named by SSS_TEST_MONGO_URI.
func (m *Mongo) CanRestart() bool { return m.reason == "" }

// Stop stops the server (SIGTERM, then SIGKILL after 10 s) and waits for it
// to exit; the data stays in Dir.
func (m *Mongo) Stop() {
	m.t.Helper()
	m.mustOwn("Stop")
	m.s.stop()
}

// Start starts the server again on the same port and data directory and
// waits until it answers ping. It does nothing if the server is running.
func (m *Mongo) Start() {
	m.t.Helper()
	m.mustOwn("Start")
	if m.s.running() {
		return
	}
	if err := m.s.start(); err != nil {
		m.t.Fatalf("testutil: %v", err)
	}
}

// Wipe stops the server, removes all its data, and starts it again.
func (m *Mongo) Wipe() {
	m.t.Helper()
	m.mustOwn("Wipe")
	m.s.stop()
	if err := os.RemoveAll(m.s.dir); err != nil {
		m.t.Fatalf("testutil: wipe %s: %v", m.s.dir, err)
	}
	if err := m.s.start(); err != nil {
		m.t.Fatalf("testutil: %v", err)
	}
}

func (m *Mongo) mustOwn(op string) {
	m.t.Helper()
	if m.reason != "" {
		m.t.Fatalf("testutil: Mongo.%s: %s cannot be stopped or started; check CanRestart first", op, m.reason)
	}
}

// Client returns a client connected to the server, disconnected when the
// test ends.
func (m *Mongo) Client(t testing.TB) *mongo.Client {
	t.Helper()
	c, err := mongo.Connect(options.Client().ApplyURI(m.URI))
	if err != nil {
		t.Fatalf("testutil: connect %s: %v", m.URI, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = c.Disconnect(ctx)
	})
	return c
}

var dbSeq atomic.Uint64

// DBName returns a database name unique to this call: letters, digits and
// underscores from t.Name(), a counter and random bytes, at most 63 bytes,
// so tests can share one server.
func DBName(t testing.TB) string {
	var b strings.Builder
	for _, r := range t.Name() {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9':
			b.WriteRune(r)
		case r >= 'A' && r <= 'Z':
			b.WriteRune(r - 'A' + 'a')
		default:
			b.WriteByte('_')
		}
	}
	var rnd [4]byte
	_, _ = rand.Read(rnd[:])
	suffix := fmt.Sprintf("_%d_%s", dbSeq.Add(1), hex.EncodeToString(rnd[:]))
	name := b.String()
	if max := 63 - len("t_") - len(suffix); len(name) > max {
		name = name[:max]
	}
	return "t_" + name + suffix
}

func (s *mongoServer) running() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.proc != nil && s.proc.alive()
}

func (s *mongoServer) stop() {
	s.mu.Lock()
	p := s.proc
	s.mu.Unlock()
	if p != nil {
		p.stop()
	}
}

// startFresh picks a free port and starts, retrying with another port if
// the program exits at once (the port was taken meanwhile).
func (s *mongoServer) startFresh() error {
	var err error
	for attempt := 0; attempt < 3; attempt++ {
		if s.port, err = freePort(); err != nil {
			return err
		}
		s.uri = "mongodb://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port)) + "/"
		if err = s.start(); err == nil || !errors.Is(err, errExited) {
			return err
		}
	}
	return err
}

func (s *mongoServer) start() error {
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port))
	if err := os.MkdirAll(s.dir, 0o755); err != nil {
		return fmt.Errorf("FerretDB data dir: %w", err)
	}
	args := []string{"-listen", addr, "-dir", s.dir, "-parent-pid", strconv.Itoa(os.Getpid())}
	p, err := startProc("FerretDB", s.bin, args, filepath.Join(filepath.Dir(s.dir), "ferretdb.log"))
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.proc = p
	s.mu.Unlock()

	// Wait for the port first: a driver whose first attempt fails waits
	// 500 ms before the next.
	var last error
	ok := poll(startTimeout, func() bool {
		if !p.alive() {
			return true
		}
		var c net.Conn
		if c, last = net.DialTimeout("tcp", addr, time.Second); last == nil {
			c.Close()
		}
		return last == nil
	})
	switch {
	case !p.alive():
		return fmt.Errorf("FerretDB on %s: %w (%v): %s", addr, errExited, p.err, p.logTail())
	case !ok:
		p.stop()
		return fmt.Errorf("FerretDB on %s did not listen within %v: %v: %s", addr, startTimeout, last, p.logTail())
	}

	c, err := mongo.Connect(options.Client().ApplyURI(s.uri).SetServerSelectionTimeout(2 * time.Second))
	if err != nil {
		p.stop()
		return fmt.Errorf("FerretDB client: %w", err)
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = c.Disconnect(ctx)
	}()
	ok = poll(startTimeout, func() bool {
		if !p.alive() {
			return true
		}
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		last = c.Ping(ctx, nil)
		return last == nil
	})
	switch {
	case !p.alive():
		return fmt.Errorf("FerretDB on %s: %w (%v): %s", addr, errExited, p.err, p.logTail())
	case !ok:
		p.stop()
		return fmt.Errorf("FerretDB on %s did not answer ping within %v: %v: %s", addr, startTimeout, last, p.logTail())
	}
	return nil
}

var (
	binMu   sync.Mutex
	binPath string
)

// ferretBin returns the FerretDB program: $SSS_FERRETDB_BIN, else
// <module root>/.bin/sss-ferretdb, built from internal/ferretdb if absent
// (under a file lock, so parallel test binaries build it once).
func ferretBin(t testing.TB) string {
	t.Helper()
	if p := os.Getenv(envFerretBin); p != "" {
		if _, err := os.Stat(p); err != nil {
			missing(t, "%s=%s: %v", envFerretBin, p, err)
		}
		return p
	}
	binMu.Lock()
	defer binMu.Unlock()
	if binPath != "" {
		return binPath
	}
	p, err := buildFerret()
	if err != nil {
		missing(t, "FerretDB program: %v (build it with: cd internal/ferretdb && go build -o ../../.bin/%s .)", err, ferretBinName)
	}
	binPath = p
	return p
}

func buildFerret() (string, error) {
	root, err := moduleRoot()
	if err != nil {
		return "", err
	}
	binDir := filepath.Join(root, ".bin")
	bin := filepath.Join(binDir, ferretBinName)
	if _, err := os.Stat(bin); err == nil {
		return bin, nil
	}
	if err := os.MkdirAll(binDir, 0o755); err != nil {
		return "", err
	}
	lock, err := os.OpenFile(filepath.Join(binDir, "."+ferretBinName+".lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return "", err
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return "", fmt.Errorf("lock: %w", err)
	}
	defer syscall.Flock(int(lock.Fd()), syscall.LOCK_UN)
	if _, err := os.Stat(bin); err == nil {
		return bin, nil // another test binary built it while we waited
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		return "", fmt.Errorf("go not found in PATH to build %s: %w", ferretBinName, err)
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
