package services

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Redis is a data-less redis-server (no RDB, no AOF) on a loopback port.
type Redis struct {
	// Addr is host:port, e.g. 127.0.0.1:34567.
	Addr string
	// URL is the go-redis URL of the server, e.g. redis://127.0.0.1:34567.
	URL string

	bin   string
	dir   string
	port  int
	extra []string

	mu   sync.Mutex
	proc *Process
}

// LookRedis returns the path of the program name (redis-server or
// redis-cli), or an error wrapping ErrMissing.
func LookRedis(name string) (string, error) {
	p, err := exec.LookPath(name)
	if err != nil {
		return "", fmt.Errorf("%w: %s not found in PATH (apt-get install redis-server)", ErrMissing, name)
	}
	return p, nil
}

// StartRedis starts redis-server on a free loopback port with its
// directory and log in dir, extra arguments appended, and waits until it
// answers PING.
func StartRedis(dir string, extra ...string) (*Redis, error) {
	bin, err := LookRedis("redis-server")
	if err != nil {
		return nil, err
	}
	r := &Redis{bin: bin, dir: dir, extra: extra}
	for attempt := 0; attempt < 3; attempt++ {
		if r.port, err = FreePort(); err != nil {
			return nil, err
		}
		r.setAddr()
		if err = r.Start(); err == nil || !errors.Is(err, ErrExited) {
			break
		}
	}
	if err != nil {
		return nil, err
	}
	return r, nil
}

func (r *Redis) setAddr() {
	r.Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(r.port))
	r.URL = "redis://" + r.Addr
}

// Running reports whether the server process is running.
func (r *Redis) Running() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.proc != nil && r.proc.Alive()
}

// Process returns the current server process, nil before the first start.
func (r *Redis) Process() *Process {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.proc
}

// Stop stops the server (SIGTERM, then SIGKILL after StopTimeout) and
// waits for it to exit.
func (r *Redis) Stop() {
	if p := r.Process(); p != nil {
		p.Stop()
	}
}

// Start starts the server again on the same port, empty, and waits until
// it answers PING. It does nothing if the server is running.
func (r *Redis) Start() error {
	if r.Running() {
		return nil
	}
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
	args = append(args, r.extra...)
	p, err := StartProcess("redis-server", r.bin, args, nil, filepath.Join(r.dir, "redis.log"))
	if err != nil {
		return err
	}
	r.mu.Lock()
	r.proc = p
	r.mu.Unlock()
	return waitRedis(p, r.Addr)
}

// Do sends one command to the server over a new connection (see RedisDo).
func (r *Redis) Do(args ...string) (string, error) { return RedisDo(r.Addr, args...) }

// waitRedis waits until the server at addr answers PING, failing early if
// the process exits.
func waitRedis(p *Process, addr string) error {
	var last error
	ok := Poll(StartTimeout, func() bool {
		if !p.Alive() {
			return true
		}
		_, last = RedisDo(addr, "PING")
		return last == nil
	})
	switch {
	case !p.Alive():
		return fmt.Errorf("redis-server on %s: %w (%v): %s", addr, ErrExited, p.Err(), p.LogTail())
	case !ok:
		p.Stop()
		return fmt.Errorf("redis-server on %s did not answer PING within %v: %v: %s", addr, StartTimeout, last, p.LogTail())
	}
	return nil
}

// RedisDo sends one command to addr over a new connection and returns the
// reply of a simple, integer or bulk string type.
func RedisDo(addr string, args ...string) (string, error) {
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

// RedisCluster is a Redis Cluster of three masters and no replicas.
type RedisCluster struct {
	// Addrs are the nodes' host:port.
	Addrs []string
	// Nodes are the node servers, in Addrs order.
	Nodes []*Redis
}

// StartRedisCluster starts three cluster-enabled redis-servers on free
// loopback ports (each port and its bus port, port+10000, free), with their
// directories under dir, joins them with `redis-cli --cluster create` and
// waits until every node reports cluster_state:ok. On error, the nodes
// started are stopped.
func StartRedisCluster(dir string) (*RedisCluster, error) {
	bin, err := LookRedis("redis-server")
	if err != nil {
		return nil, err
	}
	cli, err := LookRedis("redis-cli")
	if err != nil {
		return nil, err
	}
	rc := &RedisCluster{}
	ok := false
	defer func() {
		if !ok {
			rc.Stop()
		}
	}()
	for i := 0; i < 3; i++ {
		n, err := startClusterNode(bin, filepath.Join(dir, "node"+strconv.Itoa(i)))
		if err != nil {
			return nil, fmt.Errorf("redis cluster node %d: %w", i, err)
		}
		rc.Nodes = append(rc.Nodes, n)
		rc.Addrs = append(rc.Addrs, n.Addr)
	}
	ctx, cancel := context.WithTimeout(context.Background(), StartTimeout)
	defer cancel()
	args := append([]string{"--cluster", "create"}, rc.Addrs...)
	args = append(args, "--cluster-replicas", "0", "--cluster-yes")
	if out, err := exec.CommandContext(ctx, cli, args...).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("redis-cli --cluster create: %w: %s", err, out)
	}
	var last string
	ready := Poll(StartTimeout, func() bool {
		for _, a := range rc.Addrs {
			info, err := RedisDo(a, "CLUSTER", "INFO")
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
	if !ready {
		return nil, fmt.Errorf("redis cluster not ok within %v: %s", StartTimeout, last)
	}
	ok = true
	return rc, nil
}

func startClusterNode(bin, dir string) (*Redis, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	var err error
	for attempt := 0; attempt < 5; attempt++ {
		n := &Redis{bin: bin, dir: dir, extra: []string{
			"--cluster-enabled", "yes",
			"--cluster-config-file", filepath.Join(dir, "nodes.conf"),
			"--cluster-node-timeout", "5000",
		}}
		if n.port, err = clusterPort(); err != nil {
			continue
		}
		n.setAddr()
		if err = n.Start(); err == nil {
			return n, nil
		}
		if !errors.Is(err, ErrExited) {
			return nil, err
		}
	}
	return nil, err
}

// Stop stops every node.
func (rc *RedisCluster) Stop() {
	for _, n := range rc.Nodes {
		n.Stop()
	}
}

// clusterPort returns a port p such that p and its cluster bus port
// p+10000 are both free on 127.0.0.1.
func clusterPort() (int, error) {
	for i := 0; i < 50; i++ {
		p, err := FreePort()
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
