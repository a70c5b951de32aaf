package testutil

import (
	"bufio"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"testing"
	"time"
)

// echoServer accepts connections and echoes lines back until the test ends.
func echoServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, _ = io.Copy(c, c)
				c.Close()
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().String()
}

type lineConn struct {
	net.Conn
	r *bufio.Reader
}

func dialLine(t *testing.T, addr string) *lineConn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	t.Cleanup(func() { c.Close() })
	return &lineConn{Conn: c, r: bufio.NewReader(c)}
}

// roundTrip writes line and reads one line back within timeout.
func (c *lineConn) roundTrip(line string, timeout time.Duration) (string, error) {
	_ = c.SetDeadline(time.Now().Add(timeout))
	if _, err := c.Write([]byte(line + "\n")); err != nil {
		return "", err
	}
	s, err := c.r.ReadString('\n')
	if len(s) > 0 {
		s = s[:len(s)-1]
	}
	return s, err
}

func TestProxyForwards(t *testing.T) {
	CheckLeaks(t)
	p := NewProxy(t, echoServer(t))
	c := dialLine(t, p.Addr)
	if got, err := c.roundTrip("hello", 10*time.Second); err != nil || got != "hello" {
		t.Fatalf("roundTrip = %q, %v", got, err)
	}
	WaitFor(t, 10*time.Second, func() bool { return p.Conns() == 1 }, "Conns() == 1")
}

func TestProxyCutAll(t *testing.T) {
	CheckLeaks(t)
	p := NewProxy(t, echoServer(t))
	a, b := dialLine(t, p.Addr), dialLine(t, p.Addr)
	for _, c := range []*lineConn{a, b} {
		if _, err := c.roundTrip("x", 10*time.Second); err != nil {
			t.Fatalf("before cut: %v", err)
		}
	}
	WaitFor(t, 10*time.Second, func() bool { return p.Conns() == 2 }, "Conns() == 2")
	p.CutAll()
	for _, c := range []*lineConn{a, b} {
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := c.r.ReadByte(); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("read after CutAll: %v, want connection closed", err)
		}
	}
	WaitFor(t, 10*time.Second, func() bool { return p.Conns() == 0 }, "Conns() == 0 after CutAll")
	// The proxy still accepts new connections.
	if got, err := dialLine(t, p.Addr).roundTrip("again", 10*time.Second); err != nil || got != "again" {
		t.Fatalf("after CutAll: %q, %v", got, err)
	}
}

func TestProxyBlackhole(t *testing.T) {
	CheckLeaks(t)
	p := NewProxy(t, echoServer(t))
	c := dialLine(t, p.Addr)
	if _, err := c.roundTrip("before", 10*time.Second); err != nil {
		t.Fatalf("before blackhole: %v", err)
	}
	p.Blackhole(true)
	// Nothing comes back, and the connection is not closed either: the
	// read times out. 300 ms is the observation window, not a sync.
	if got, err := c.roundTrip("lost", 300*time.Millisecond); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("blackholed roundTrip = %q, %v; want a timeout", got, err)
	}
	// New connections are accepted but stay silent too.
	d := dialLine(t, p.Addr)
	if got, err := d.roundTrip("lost too", 300*time.Millisecond); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("new conn while blackholed = %q, %v; want a timeout", got, err)
	}
	if n := p.Conns(); n != 2 {
		t.Fatalf("Conns() = %d while blackholed, want 2 (kept open)", n)
	}
	p.Blackhole(false)
	// The line sent while blackholed is gone for good; the next one passes.
	if got, err := c.roundTrip("after", 10*time.Second); err != nil || got != "after" {
		t.Fatalf("after blackhole: %q, %v", got, err)
	}
}

func TestProxyDelay(t *testing.T) {
	CheckLeaks(t)
	p := NewProxy(t, echoServer(t))
	c := dialLine(t, p.Addr)
	if _, err := c.roundTrip("warm", 10*time.Second); err != nil {
		t.Fatal(err)
	}
	const d = 150 * time.Millisecond
	p.SetDelay(d)
	start := time.Now()
	if got, err := c.roundTrip("slow", 10*time.Second); err != nil || got != "slow" {
		t.Fatalf("delayed roundTrip = %q, %v", got, err)
	}
	// Both directions are delayed: at least 2d.
	if rtt := time.Since(start); rtt < 2*d {
		t.Fatalf("round trip with delay %v took %v, want >= %v", d, rtt, 2*d)
	}
	p.SetDelay(0)
	if got, err := c.roundTrip("fast", 10*time.Second); err != nil || got != "fast" {
		t.Fatalf("after SetDelay(0): %q, %v", got, err)
	}

	// A chunk held back by a long delay does not hold up CutAll.
	p.SetDelay(time.Hour)
	if _, err := c.Write([]byte("held\n")); err != nil {
		t.Fatal(err)
	}
	p.CutAll()
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.r.ReadByte(); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read after CutAll with a delayed chunk: %v, want connection closed", err)
	}
	WaitFor(t, 10*time.Second, func() bool { return p.Conns() == 0 }, "Conns() == 0 after CutAll")
}

func TestProxyPause(t *testing.T) {
	CheckLeaks(t)
	p := NewProxy(t, echoServer(t))
	old := dialLine(t, p.Addr)
	if _, err := old.roundTrip("x", 10*time.Second); err != nil {
		t.Fatal(err)
	}
	p.Pause()
	// A paused proxy resets new connections: the reset may already reach
	// the dial, or only the first round trip.
	if nc, err := net.DialTimeout("tcp", p.Addr, 5*time.Second); err == nil {
		t.Cleanup(func() { nc.Close() })
		c := &lineConn{Conn: nc, r: bufio.NewReader(nc)}
		if got, err := c.roundTrip("refused", 10*time.Second); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("roundTrip while paused = %q, %v; want the connection closed", got, err)
		}
	} else if !errors.Is(err, syscall.ECONNRESET) && !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("dial while paused: %v; want a reset, a refusal or a closed connection", err)
	}
	if got, err := old.roundTrip("old", 10*time.Second); err != nil || got != "old" {
		t.Fatalf("existing conn while paused: %q, %v", got, err)
	}
	p.Resume()
	if got, err := dialLine(t, p.Addr).roundTrip("back", 10*time.Second); err != nil || got != "back" {
		t.Fatalf("after Resume: %q, %v", got, err)
	}
}
