package testutil

import (
	"strings"
	"testing"
)

func TestRedisStopStartRestart(t *testing.T) {
	CheckLeaks(t)
	r := StartRedis(t)
	if !r.CanRestart() {
		t.Skip("SSS_TEST_REDIS_URL set: cannot restart")
	}
	if !strings.HasPrefix(r.Addr, "127.0.0.1:") || r.URL != "redis://"+r.Addr {
		t.Fatalf("Addr %q URL %q", r.Addr, r.URL)
	}
	if _, err := redisDo(r.Addr, "SET", "k", "v"); err != nil {
		t.Fatalf("SET: %v", err)
	}
	addr := r.Addr

	r.Stop()
	if _, err := redisDo(r.Addr, "PING"); err == nil {
		t.Fatal("PING succeeded after Stop")
	}
	r.Start()
	if r.Addr != addr {
		t.Fatalf("Start moved the server from %s to %s", addr, r.Addr)
	}
	if v, err := redisDo(r.Addr, "GET", "k"); err == nil && v != "" {
		t.Fatalf("GET after restart = %q, want no data", v)
	}
	r.Start() // running: no-op
	if _, err := redisDo(r.Addr, "SET", "k", "v2"); err != nil {
		t.Fatalf("SET after Start: %v", err)
	}
	r.Restart()
	if r.Addr != addr {
		t.Fatalf("Restart moved the server from %s to %s", addr, r.Addr)
	}
	if _, err := redisDo(r.Addr, "PING"); err != nil {
		t.Fatalf("PING after Restart: %v", err)
	}
	if v, err := redisDo(r.Addr, "GET", "k"); err == nil && v != "" {
		t.Fatalf("GET after Restart = %q, want no data", v)
	}
}

func TestRedisCluster(t *testing.T) {
	CheckLeaks(t)
	c := StartRedisCluster(t)
	if len(c.Addrs) != 3 {
		t.Fatalf("Addrs = %v, want 3", c.Addrs)
	}
	for _, a := range c.Addrs {
		info, err := redisDo(a, "CLUSTER", "INFO")
		if err != nil || !strings.Contains(info, "cluster_state:ok") || !strings.Contains(info, "cluster_known_nodes:3") {
			t.Fatalf("%s CLUSTER INFO: %v %q", a, err, info)
		}
	}
}
