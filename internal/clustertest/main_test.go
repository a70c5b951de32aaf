package clustertest

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sss-go/sss/client"
	"github.com/sss-go/sss/internal/testhook"
	"github.com/sss-go/sss/internal/testutil"
	"github.com/sss-go/sss/protocol"
	"github.com/sss-go/sss/scaler"
	"github.com/sss-go/sss/scaler/mongoredis"
	"github.com/sss-go/sss/server"
)

func TestMain(m *testing.M) {
	testhook.SetFaults(func(sc scaler.Scaler, fi scaler.FaultInjector) { injectors.Store(sc, fi) })
	testutil.Main(m)
}

// injectors maps every mongoredis scaler the tests create to its fault
// injector (handed over through internal/testhook: the scaler exports
// none).
var injectors sync.Map

// injectorOf returns the fault injector of sc.
func injectorOf(t *testing.T, sc *mongoredis.Scaler) scaler.FaultInjector {
	t.Helper()
	fi, ok := injectors.Load(sc)
	if !ok {
		t.Fatalf("no fault injector for scaler %s", sc.ID())
	}
	return fi.(scaler.FaultInjector)
}

// wait bounds every wait of these tests: a failure bound on a loaded
// 2-core machine, never a pace.
const wait = 60 * time.Second

// quiet logs only errors, so that expected warnings (relay gap fills,
// sockets closed by a shutdown) do not flood the test output.
func quiet() *slog.Logger {
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))
}

// ctxFor returns a context that ends with the test or after wait.
func ctxFor(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	t.Cleanup(cancel)
	return ctx
}

var prefixSeq atomic.Int64

// cluster is one namespace (database and key prefix) on a redis-server
// and a MongoDB shared by the instances of one test.
type cluster struct {
	redis    *testutil.Redis
	redisURL string
	mongoURI string
	db       string
	prefix   string
}

// newCluster starts a redis-server for the test and uses the FerretDB
// program shared by the test binary, with a database of the test's own.
func newCluster(t *testing.T) *cluster {
	t.Helper()
	return newClusterOn(t, testutil.SharedMongo(t))
}

// newClusterOn is newCluster on the given MongoDB.
func newClusterOn(t *testing.T, mg *testutil.Mongo) *cluster {
	t.Helper()
	rd := testutil.StartRedis(t)
	return &cluster{
		redis:    rd,
		redisURL: rd.URL,
		mongoURI: mg.URI,
		db:       testutil.DBName(t),
		prefix:   "ct" + strconv.FormatInt(prefixSeq.Add(1), 10) + "x" + strconv.FormatInt(time.Now().UnixNano()%1e6, 36),
	}
}

// newScaler returns a mongoredis scaler of the cluster, closed when the
// test ends (after the server using it has shut down).
func (c *cluster) newScaler(t *testing.T) *mongoredis.Scaler {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	sc, err := mongoredis.New(ctx, mongoredis.Options{
		MongoURI: c.mongoURI,
		RedisURL: c.redisURL,
		Database: c.db,
		Prefix:   c.prefix,
		// The tests publish a few hundred messages per channel and
		// check recovery of all of them: keep everything.
		DefaultRetention: scaler.Retention{MaxCount: 100_000, MaxAge: time.Hour},
		ProbeInterval:    200 * time.Millisecond,
		CheckInterval:    500 * time.Millisecond,
		WriteTimeout:     20 * time.Second,
		Logger:           quiet(),
	})
	if err != nil {
		t.Fatalf("mongoredis.New(db %s, prefix %s): %v", c.db, c.prefix, err)
	}
	return sc
}

// instance is one sss server on its own mongoredis scaler behind its own
// httptest server.
type instance struct {
	name string
	sc   *mongoredis.Scaler
	srv  *server.Server
	hs   *httptest.Server
	url  string // ws://127.0.0.1:port/
}

// startInstance starts a server of the cluster. wrap, when not nil,
// wraps the server's handler (to gate upgrades). When the test ends the
// server shuts down, then the HTTP server and the scaler close.
func (c *cluster) startInstance(t *testing.T, name string, opts server.Options, wrap func(http.Handler) http.Handler) *instance {
	t.Helper()
	sc := c.newScaler(t)
	if opts.Logger == nil {
		opts.Logger = quiet()
	}
	srv, err := server.New(context.Background(), sc, opts)
	if err != nil {
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		defer cancel()
		_ = sc.Close(ctx)
		t.Fatalf("server.New %s: %v", name, err)
	}
	var h http.Handler = srv
	if wrap != nil {
		h = wrap(srv)
	}
	hs := httptest.NewServer(h)
	in := &instance{name: name, sc: sc, srv: srv, hs: hs, url: "ws" + strings.TrimPrefix(hs.URL, "http") + "/"}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("%s: Shutdown: %v", name, err)
		}
		hs.Close()
		if err := sc.Close(ctx); err != nil {
			t.Errorf("%s: scaler Close: %v", name, err)
		}
	})
	return in
}

// dialClient dials a Go client, closed when the test ends.
func dialClient(t *testing.T, url string, opts client.Options) *client.Client {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = quiet()
	}
	c, err := client.Dial(ctxFor(t), url, opts)
	if err != nil {
		t.Fatalf("Dial %s: %v", url, err)
	}
	t.Cleanup(func() {
		_ = c.Close()
		select {
		case <-c.Done():
		case <-time.After(wait):
			t.Errorf("client of %s not done %v after Close", url, wait)
		}
	})
	return c
}

// numbered is the payload of the tests' publications.
type numbered struct {
	P int `json:"p"` // publisher
	N int `json:"n"` // its own counter, from 1
}

func (m numbered) raw() json.RawMessage {
	return json.RawMessage(fmt.Sprintf(`{"p":%d,"n":%d}`, m.P, m.N))
}

// got is one publication a subscriber received.
type got struct {
	uid   protocol.UID
	topic string
	msg   numbered
}

// sink records what a subscription receives, in order.
type sink struct {
	mu     sync.Mutex
	got    []got
	errs   []string
	notify chan struct{}
}

func newSink() *sink { return &sink{notify: make(chan struct{}, 1)} }

// handler returns a Subscription.On handler recording into s.
func (s *sink) handler(topic string) func(msg json.RawMessage, uid string) {
	return func(msg json.RawMessage, uid string) {
		u, err := protocol.ParseUID(uid)
		var m numbered
		jerr := json.Unmarshal(msg, &m)
		s.mu.Lock()
		switch {
		case err != nil:
			s.errs = append(s.errs, fmt.Sprintf("bad uid %q: %v", uid, err))
		case jerr != nil:
			s.errs = append(s.errs, fmt.Sprintf("bad msg %s at %s: %v", msg, uid, jerr))
		default:
			s.got = append(s.got, got{uid: u, topic: topic, msg: m})
		}
		s.mu.Unlock()
		select {
		case s.notify <- struct{}{}:
		default:
		}
	}
}

func (s *sink) snapshot() ([]got, []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]got(nil), s.got...), append([]string(nil), s.errs...)
}

// waitUntil waits, woken by each recorded publication, until cond holds
// on what s recorded; it fails the test after d.
func (s *sink) waitUntil(t *testing.T, d time.Duration, what string, cond func([]got) bool) {
	t.Helper()
	deadline := time.NewTimer(d)
	defer deadline.Stop()
	for {
		g, errs := s.snapshot()
		if len(errs) > 0 {
			t.Fatalf("%s: bad publications: %v", what, errs)
		}
		if cond(g) {
			return
		}
		select {
		case <-s.notify:
		case <-deadline.C:
			t.Fatalf("timed out after %v waiting for %s (have %d publications)", d, what, len(g))
		}
	}
}

// hasTopic reports whether g holds a publication on topic.
func hasTopic(g []got, topic string) bool {
	for _, x := range g {
		if x.topic == topic {
			return true
		}
	}
	return false
}
