package testutil

import (
	"errors"
	"net/url"
	"os"
	"testing"

	"github.com/sss-go/sss/internal/services"
)

// envRedisURL names the variable giving an existing Redis to use.
const envRedisURL = "SSS_TEST_REDIS_URL"

// Redis is a redis-server for one test, started by StartRedis, or the
// server named by SSS_TEST_REDIS_URL.
type Redis struct {
	// Addr is host:port, e.g. 127.0.0.1:34567.
	Addr string
	// URL is the go-redis URL of the server, e.g. redis://127.0.0.1:34567.
	URL string

	t   testing.TB
	srv *services.Redis // nil for an external server
}

// StartRedis starts a data-less redis-server (no RDB, no AOF) on a free
// loopback port, with its directory in t.TempDir(), and stops it when the
// test ends. With SSS_TEST_REDIS_URL set it starts nothing and returns that
// server, shared with other tests: use a key prefix per test, and check
// CanRestart before Stop, Start or Restart.
func StartRedis(t testing.TB) *Redis {
	t.Helper()
	if u := os.Getenv(envRedisURL); u != "" {
		pu, err := url.Parse(u)
		if err != nil || pu.Host == "" {
			t.Fatalf("testutil: %s=%q is not a redis:// URL: %v", envRedisURL, u, err)
		}
		return &Redis{Addr: pu.Host, URL: u, t: t}
	}
	srv, err := services.StartRedis(t.TempDir())
	if err != nil {
		fatalOrMissing(t, err)
	}
	t.Cleanup(srv.Stop)
	return &Redis{Addr: srv.Addr, URL: srv.URL, t: t, srv: srv}
}

// fatalOrMissing fails the test with err, or reports a missing program
// (a skip with SSS_TEST_SKIP_MISSING=1).
func fatalOrMissing(t testing.TB, err error) {
	t.Helper()
	if errors.Is(err, services.ErrMissing) {
		missing(t, "%v", err)
	}
	t.Fatalf("testutil: %v", err)
}

// CanRestart reports whether Stop, Start and Restart are supported: false
// for the server named by SSS_TEST_REDIS_URL. Tests that restart Redis
// skip when it is false.
func (r *Redis) CanRestart() bool { return r.srv != nil }

// Server returns the underlying server (its process, for signals); nil for
// the server named by SSS_TEST_REDIS_URL.
func (r *Redis) Server() *services.Redis { return r.srv }

// Stop stops the server (SIGTERM, then SIGKILL after 10 s) and waits for it
// to exit. It fails the test if CanRestart is false.
func (r *Redis) Stop() {
	r.t.Helper()
	r.mustOwn("Stop")
	r.srv.Stop()
}

// Start starts the server again on the same port, empty, and waits until
// it answers PING. It does nothing if the server is running.
func (r *Redis) Start() {
	r.t.Helper()
	r.mustOwn("Start")
	if err := r.srv.Start(); err != nil {
		r.t.Fatalf("testutil: %v", err)
	}
}

// Restart stops the server and starts it again on the same port, empty.
func (r *Redis) Restart() {
	r.t.Helper()
	r.Stop()
	r.Start()
}

func (r *Redis) mustOwn(op string) {
	r.t.Helper()
	if r.srv == nil {
		r.t.Fatalf("testutil: Redis.%s: the Redis from %s cannot be stopped or started; check CanRestart first", op, envRedisURL)
	}
}

// redisDo sends one command to addr over a new connection.
func redisDo(addr string, args ...string) (string, error) { return services.RedisDo(addr, args...) }

// envRedisClusterAddrs names the variable giving an existing cluster's
// nodes, comma-separated host:port.
const envRedisClusterAddrs = "SSS_TEST_REDIS_CLUSTER_ADDRS"

// RedisCluster is a Redis Cluster of three masters and no replicas, started
// by StartRedisCluster.
type RedisCluster struct {
	// Addrs are the nodes' host:port.
	Addrs []string
}

// StartRedisCluster starts three cluster-enabled redis-servers on free
// loopback ports (each port and its bus port, port+10000, free), joins them
// with `redis-cli --cluster create`, waits until every node reports
// cluster_state:ok, and stops them when the test ends. With
// SSS_TEST_REDIS_CLUSTER_ADDRS set (comma-separated host:port) it starts
// nothing and returns those nodes.
func StartRedisCluster(t testing.TB) *RedisCluster {
	t.Helper()
	if v := os.Getenv(envRedisClusterAddrs); v != "" {
		return &RedisCluster{Addrs: splitComma(v)}
	}
	rc, err := services.StartRedisCluster(t.TempDir())
	if err != nil {
		fatalOrMissing(t, err)
	}
	t.Cleanup(rc.Stop)
	return &RedisCluster{Addrs: rc.Addrs}
}
