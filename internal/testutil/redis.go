package testutil

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// envRedisURL names the variable giving an existing Redis to use.
const envRedisURL = "SSS_TEST_REDIS_URL"

// startTimeout bounds how long a service may take to accept requests.
const startTimeout = 30 * time.Second

// Redis is a redis-server for one test, started by StartRedis, or the
// server named by SSS_TEST_REDIS_URL.
type Redis struct {
	// Addr is host:port, e.g. 127.0.0.1:34567.
	Addr string
	// URL is the go-redis URL of the server, e.g. redis://127.0.0.1:34567.
	URL string

	t        testing.TB
	external bool
	dir      string
	port     int

	mu   sync.Mutex
	proc *proc
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
		return &Redis{Addr: pu.Host, URL: u, t: t, external: true}
	}
	bin := lookRedis(t, "redis-server")
	r := &Redis{t: t, dir: t.TempDir()}
	t.Cleanup(r.stop)
	var err error
	for attempt := 0; attempt < 3; attempt++ {
		if r.port, err = freePort(); err != nil {
			break
		}
		r.setAddr()
		if err = r.start(bin, nil); err == nil || !errors.Is(err, errExited) {
			break
		}
	}
	if err != nil {
		t.Fatalf("testutil: %v", err)
	}
	return r
}

// CanRestart reports whether Stop, Start and Restart are supported: false
// for the server named by SSS_TEST_REDIS_URL. Tests that restart Redis
// skip when it is false.
func (r *Redis) CanRestart() bool { return !r.external }

// Stop stops the server (SIGTERM, then SIGKILL after 10 s) and waits for it
// to exit. It fails the test if CanRestart is false.
func (r *Redis) Stop() {
	r.t.Helper()
	r.mustOwn("Stop")
	r.stop()
}

// Start starts the server again on the same port, empty, and waits until
// it answers PING. It does nothing if the server is running.
func (r *Redis) Start() {
	r.t.Helper()
	r.mustOwn("Start")
	r.mu.Lock()
	running := r.proc != nil && r.proc.alive()
	r.mu.Unlock()
	if running {
		return
	}
	if err := r.start(lookRedis(r.t, "redis-server"), nil); err != nil {
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
	if r.external {
		r.t.Fatalf("testutil: Redis.%s: the Redis from %s cannot be stopped or started; check CanRestart first", op, envRedisURL)
	}
}

func (r *Redis) stop() {
	r.mu.Lock()
	p := r.proc
	r.mu.Unlock()
	if p != nil {
		p.stop()
	}
}

// setAddr sets Addr and URL from the port. Only before the first start:
// afterwards other goroutines may read them.
func (r *Redis) setAddr() {
	r.Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(r.port))
	r.URL = "redis://" + r.Addr
}

// start runs redis-server on r.port with extra arguments and waits for it.
func (r *Redis) start(bin string, extra []string) error {
	args := []string{
		"--port", strconv.Itoa(r.port),
		"--bind", "127.0.0.1",
		"--dir", r.dir,
		"--save", "",
		"--appendonly", "no",
		"--daemonize", "no",
		"--protected-mode", "no",
		"--loglevel", "warning",
	}
	args = append(args, extra...)
	p, err := startProc("redis-server", bin, args, filepath.Join(r.dir, "redis.log"))
	if err != nil {
		return err
	}
	r.mu.Lock()
	r.proc = p
	r.mu.Unlock()
	return waitRedis(p, r.Addr)
}

// waitRedis waits until the server at addr answers PING, failing early if
// the process exits.
func waitRedis(p *proc, addr string) error {
	var last error
	ok := poll(startTimeout, func() bool {
		if !p.alive() {
			return true
		}
		_, last = redisDo(addr, "PING")
		return last == nil
	})
	switch {
	case !p.alive():
		return fmt.Errorf("redis-server on %s: %w (%v): %s", addr, errExited, p.err, p.logTail())
	case !ok:
		p.stop()
		return fmt.Errorf("redis-server on %s did not answer PING within %v: %v: %s", addr, startTimeout, last, p.logTail())
	}
	return nil
}

func lookRedis(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		missing(t, "%s not found in PATH: apt-get install redis-server", name)
	}
	return p
}

// redisDo sends one command to addr over a new connection and returns the
// reply of a simple, integer or bulk string type.
func redisDo(addr string, args ...string) (string, error) {
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	var b strings.Builder
	fmt.Fprintf(&b, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
	}
	if _, err := c.Write([]byte(b.String())); err != nil {
		return "", err
	}
	br := bufio.NewReader(c)
	line, err := br.ReadString('\n')
	if err != nil {
		return "", err
	}
	line = strings.TrimRight(line, "\r\n")
	if line == "" {
		return "", errors.New("empty reply")
	}
	switch line[0] {
	case '+', ':':
		return line[1:], nil
	case '-':
		return "", errors.New(line[1:])
	case '$':
		n, err := strconv.Atoi(line[1:])
		if err != nil || n < 0 {
			return "", fmt.Errorf("bad bulk reply %q", line)
		}
		buf := make([]byte, n+2)
		if _, err := io.ReadFull(br, buf); err != nil {
			return "", err
		}
		return string(buf[:n]), nil
	}
	return "", fmt.Errorf("unexpected reply %q", line)
}

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
		return &RedisCluster{Addrs: strings.Split(v, ",")}
	}
	bin := lookRedis(t, "redis-server")
	cli := lookRedis(t, "redis-cli")
	rc := &RedisCluster{}
	for i := 0; i < 3; i++ {
		n := &Redis{t: t, dir: t.TempDir()}
		t.Cleanup(n.stop)
		var err error
		for attempt := 0; attempt < 5; attempt++ {
			if n.port, err = clusterPort(); err != nil {
				continue
			}
			n.setAddr()
			err = n.start(bin, []string{
				"--cluster-enabled", "yes",
				"--cluster-config-file", filepath.Join(n.dir, "nodes.conf"),
				"--cluster-node-timeout", "5000",
			})
			if err == nil || !errors.Is(err, errExited) {
				break
			}
		}
		if err != nil {
			t.Fatalf("testutil: redis cluster node %d: %v", i, err)
		}
		rc.Addrs = append(rc.Addrs, n.Addr)
	}
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	args := append([]string{"--cluster", "create"}, rc.Addrs...)
	args = append(args, "--cluster-replicas", "0", "--cluster-yes")
	if out, err := exec.CommandContext(ctx, cli, args...).CombinedOutput(); err != nil {
		t.Fatalf("testutil: redis-cli --cluster create: %v: %s", err, out)
	}
	var last string
	ok := poll(startTimeout, func() bool {
		for _, a := range rc.Addrs {
			info, err := redisDo(a, "CLUSTER", "INFO")
			if err != nil {
				last = err.Error()
				return false
			}
			if !strings.Contains(info, "cluster_state:ok") || !strings.Contains(info, "cluster_slots_ok:16384") {
				last = a + ": " + info
				return false
			}
		}
		return true
	})
	if !ok {
		t.Fatalf("testutil: redis cluster not ok within %v: %s", startTimeout, last)
	}
	return rc
}

// clusterPort returns a port p such that p and its cluster bus port
// p+10000 are both free on 127.0.0.1.
func clusterPort() (int, error) {
	for i := 0; i < 50; i++ {
		p, err := freePort()
		if err != nil {
			return 0, err
		}
		if p+10000 > 65535 {
			continue
		}
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p+10000)))
		if err != nil {
			continue
		}
		l.Close()
		return p, nil
	}
	return 0, errors.New("no port p with p+10000 free")
}
