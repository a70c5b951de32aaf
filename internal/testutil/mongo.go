package testutil

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/sss-go/sss/internal/services"
)

// envMongoURI names the variable giving an existing MongoDB to use.
const envMongoURI = "SSS_TEST_MONGO_URI"

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
	s      *services.Mongo
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
	s, err := services.StartMongo(ferretBin(t), t.TempDir())
	if err != nil {
		t.Fatalf("testutil: %v", err)
	}
	t.Cleanup(s.Stop)
	return &Mongo{URI: s.URI, Dir: s.Dir, t: t, s: s}
}

var (
	mainActive atomic.Bool // set by VerifyNoLeaks

	sharedMu    sync.Mutex
	sharedMongo *services.Mongo
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
	if sharedMongo == nil || !sharedMongo.Running() {
		if sharedMongo != nil {
			sharedMongo.Stop()
			os.RemoveAll(sharedTmp)
		}
		bin := ferretBin(t)
		tmp, err := os.MkdirTemp("", "sss-ferretdb-shared-")
		if err != nil {
			t.Fatalf("testutil: shared FerretDB dir: %v", err)
		}
		s, err := services.StartMongo(bin, tmp)
		if err != nil {
			os.RemoveAll(tmp)
			t.Fatalf("testutil: shared: %v", err)
		}
		sharedMongo, sharedTmp = s, tmp
	}
	return &Mongo{URI: sharedMongo.URI, t: t, reason: "the shared FerretDB (use StartMongo)", s: sharedMongo}
}

// stopShared stops the shared server, if any, and removes its data.
func stopShared() {
	sharedMu.Lock()
	defer sharedMu.Unlock()
	if sharedMongo != nil {
		sharedMongo.Stop()
		os.RemoveAll(sharedTmp)
		sharedMongo, sharedTmp = nil, ""
	}
}

// CanRestart reports whether Stop, Start and Wipe are supported: false for
// SharedMongo's server and for the one named by SSS_TEST_MONGO_URI.
func (m *Mongo) CanRestart() bool { return m.reason == "" }

// Server returns the underlying server (its process, for signals); nil for
// the server named by SSS_TEST_MONGO_URI.
func (m *Mongo) Server() *services.Mongo { return m.s }

// Stop stops the server (SIGTERM, then SIGKILL after 10 s) and waits for it
// to exit; the data stays in Dir.
func (m *Mongo) Stop() {
	m.t.Helper()
	m.mustOwn("Stop")
	m.s.Stop()
}

// Start starts the server again on the same port and data directory and
// waits until it answers ping. It does nothing if the server is running.
func (m *Mongo) Start() {
	m.t.Helper()
	m.mustOwn("Start")
	if err := m.s.Start(); err != nil {
		m.t.Fatalf("testutil: %v", err)
	}
}

// Wipe stops the server, removes all its data, and starts it again.
func (m *Mongo) Wipe() {
	m.t.Helper()
	m.mustOwn("Wipe")
	if err := m.s.Wipe(); err != nil {
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

// ferretBin returns the FerretDB program (services.FerretBin), reporting a
// missing one as missing.
func ferretBin(t testing.TB) string {
	t.Helper()
	p, err := services.FerretBin(nil)
	if err != nil {
		missing(t, "%v", err)
	}
	return p
}
