package mongoredis

import (
	"context"
	"log/slog"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sss-go/sss/internal/testutil"
	"github.com/sss-go/sss/protocol"
	"github.com/sss-go/sss/scaler"
	"github.com/sss-go/sss/scaler/scalertest"
)

func TestMain(m *testing.M) { testutil.Main(m) }

var prefixSeq atomic.Int64

// testLogger keeps test output readable: the scaler's warnings (gap fills,
// resets) are expected in these tests and asserted through events.
var testLogger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))

// testEnv is one namespace (database + key prefix) on a Redis and a
// MongoDB.
type testEnv struct {
	redisURL string
	mongoURI string
	db       string
	prefix   string
}

func newEnv(t testing.TB, redisURL, mongoURI string) *testEnv {
	return &testEnv{
		redisURL: redisURL,
		mongoURI: mongoURI,
		db:       testutil.DBName(t),
		prefix:   "t" + strconv.FormatInt(prefixSeq.Add(1), 10) + "x" + newID()[:6],
	}
}

// options are fast timings for tests.
func (e *testEnv) options() Options {
	return Options{
		MongoURI:      e.mongoURI,
		RedisURL:      e.redisURL,
		Database:      e.db,
		Prefix:        e.prefix,
		LeaseTTL:      600 * time.Millisecond,
		ProbeInterval: 200 * time.Millisecond,
		ProbeTimeout:  time.Second,
		CheckInterval: 300 * time.Millisecond,
		GapWait:       30 * time.Millisecond,
		TrimInterval:  time.Second,
		WriteTimeout:  10 * time.Second,
		Logger:        testLogger,
	}
}

func (e *testEnv) newScaler(t testing.TB, mod func(*Options)) *Scaler {
	t.Helper()
	o := e.options()
	if mod != nil {
		mod(&o)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := New(ctx, o)
	if err != nil {
		t.Fatalf("New(db %s, prefix %s): %v", o.Database, o.Prefix, err)
	}
	return s
}

// faulty is a Scaler with fault injection, for the conformance suite's
// Fault subtests: the Scaler itself exports none (a production instance
// cannot inject a fault by accident). Embedding keeps every capability
// the suite looks for.
type faulty struct {
	*Scaler
	faultInjector
}

var (
	_ scaler.FaultInjector = faulty{}
	_ scaler.HistoryReader = faulty{}
	_ scaler.ControlPlane  = faulty{}
	_ scaler.PresenceStore = faulty{}
	_ scaler.UserRegistry  = faulty{}
)

func withFaults(s *Scaler) faulty { return faulty{s, faultInjector{s}} }

func TestConformance(t *testing.T) {
	rd := testutil.StartRedis(t)
	mg := testutil.SharedMongo(t)
	scalertest.Run(t, func(t *testing.T) func() scaler.Scaler {
		env := newEnv(t, rd.URL, mg.URI)
		return func() scaler.Scaler { return withFaults(env.newScaler(t, nil)) }
	})
}

// recorder collects what an instance's Handler receives.
type recorder struct {
	mu     sync.Mutex
	pubs   map[string][]scaler.Publication
	resets []resetCall
	events []scaler.Event
	ctls   []scaler.Control
	notify chan struct{}
}

type resetCall struct {
	ch  string
	pos string
	err error
}

func newRecorder() *recorder {
	return &recorder{pubs: make(map[string][]scaler.Publication), notify: make(chan struct{}, 1)}
}

func (r *recorder) poke() {
	select {
	case r.notify <- struct{}{}:
	default:
	}
}

func (r *recorder) handler() scaler.Handler {
	return scaler.Handler{
		Publication: func(p scaler.Publication) {
			r.mu.Lock()
			r.pubs[p.Channel] = append(r.pubs[p.Channel], p)
			r.mu.Unlock()
			r.poke()
		},
		Reset: func(ch string, pos protocol.UID, err error) {
			r.mu.Lock()
			r.resets = append(r.resets, resetCall{ch, pos.String(), err})
			r.mu.Unlock()
			r.poke()
		},
		Control: func(c scaler.Control) {
			r.mu.Lock()
			r.ctls = append(r.ctls, c)
			r.mu.Unlock()
			r.poke()
		},
		Event: func(e scaler.Event) {
			r.mu.Lock()
			r.events = append(r.events, e)
			r.mu.Unlock()
			r.poke()
		},
	}
}

func (r *recorder) stream(ch string) []scaler.Publication {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]scaler.Publication(nil), r.pubs[ch]...)
}

func (r *recorder) count(kind scaler.EventKind) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, e := range r.events {
		if e.Kind == kind {
			n++
		}
	}
	return n
}

// waitFor waits until cond holds, failing after d.
func (r *recorder) waitFor(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.NewTimer(d)
	defer deadline.Stop()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-r.notify:
		case <-tick.C:
		case <-deadline.C:
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
	}
}

// startScaler starts s with a recorder and closes it at cleanup.
func startScaler(t testing.TB, s *Scaler) *recorder {
	t.Helper()
	r := newRecorder()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := s.Start(ctx, r.handler()); err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := s.Close(ctx); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return r
}
