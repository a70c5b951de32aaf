package server

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/sss-go/sss/protocol"
	"github.com/sss-go/sss/scaler"
)

// benchReader counts the text frames arriving on a raw connection without
// allocating, so the benchmark's allocations are the server's.
type benchReader struct {
	nc    net.Conn
	br    *bufio.Reader
	count atomic.Int64
}

func (r *benchReader) run(wg *sync.WaitGroup) {
	defer wg.Done()
	var hdr [8]byte
	for {
		if _, err := io.ReadFull(r.br, hdr[:2]); err != nil {
			return
		}
		op := hdr[0] & 0x0f
		n := int64(hdr[1] & 0x7f)
		switch n {
		case 126:
			if _, err := io.ReadFull(r.br, hdr[:2]); err != nil {
				return
			}
			n = int64(binary.BigEndian.Uint16(hdr[:2]))
		case 127:
			if _, err := io.ReadFull(r.br, hdr[:8]); err != nil {
				return
			}
			n = int64(binary.BigEndian.Uint64(hdr[:8]))
		}
		if _, err := r.br.Discard(int(n)); err != nil {
			return
		}
		if op == opText {
			r.count.Add(1)
		}
	}
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkFanout measures one publication delivered through the hub to
// every subscriber over real loopback WebSocket connections, whose client
// side reads every frame. The publications enter where the scaler's
// ordered stream delivers them, so the figures are the server's fast path
// (encode once, hub, writers, syscalls).
func BenchmarkFanout(b *testing.B) {
	for _, subs := range []int{100, 1000} {
		b.Run(fmt.Sprintf("subscribers=%d", subs), func(b *testing.B) {
			benchFanout(b, subs)
		})
	}
}

func benchFanout(b *testing.B, subs int) {
	srv, err := New(context.Background(), nil, Options{HeartbeatInterval: -1, SendQueueMessages: 1 << 14, ShutdownSpread: -1,
		Logger: quietLogger()})
	if err != nil {
		b.Fatal(err)
	}
	hs := newBenchHTTP(b, srv)
	readers := make([]*benchReader, subs)
	var wg sync.WaitGroup
	for i := range readers {
		ws, _, err := websocket.DefaultDialer.Dial(hs, nil)
		if err != nil {
			b.Fatal(err)
		}
		if err := ws.WriteMessage(websocket.TextMessage, []byte(`{"sys":1,"channel":"bench","id":1}`)); err != nil {
			b.Fatal(err)
		}
		if _, _, err := ws.ReadMessage(); err != nil {
			b.Fatal(err)
		}
		r := &benchReader{nc: ws.NetConn(), br: bufio.NewReaderSize(ws.NetConn(), 64<<10)}
		readers[i] = r
		wg.Add(1)
		go r.run(&wg)
	}
	defer func() {
		for _, r := range readers {
			r.nc.Close()
		}
		wg.Wait()
		ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
		defer cancel()
		_ = srv.Shutdown(ctx)
	}()
	pos, err := srv.sc.Position(context.Background(), "bench")
	if err != nil {
		b.Fatal(err)
	}
	msg := json.RawMessage(`{"text":"hello, this is a chat message of typical size","user":"alice"}`)
	waitAll := func(n int64) {
		for _, r := range readers {
			for r.count.Load() < n {
				time.Sleep(20 * time.Microsecond)
			}
		}
	}
	seq := pos.Seq
	inject := func(n int) {
		for i := 0; i < n; i++ {
			seq++
			srv.hub.publication(scaler.Publication{Channel: "bench", UID: protocol.UID{Epoch: pos.Epoch, Seq: seq}, Topic: "message", Msg: msg})
			if i%64 == 63 {
				// Consumers keep up within 128 frames: the steady state
				// of a healthy server, not a backlog.
				waitAll(int64(seq-pos.Seq) - 128)
			}
		}
		waitAll(int64(seq - pos.Seq))
	}
	inject(2000) // warm up: writers started, queues grown
	var ms0, ms1 runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms0)
	cpu0 := cpuTime()
	b.ReportAllocs()
	b.ResetTimer()
	inject(b.N)
	b.StopTimer()
	cpu := cpuTime() - cpu0
	runtime.ReadMemStats(&ms1)
	deliveries := float64(b.N) * float64(subs)
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/deliveries, "ns/delivery")
	b.ReportMetric(float64(cpu.Nanoseconds())/deliveries, "cpu-ns/delivery")
	b.ReportMetric(float64(ms1.Mallocs-ms0.Mallocs)/deliveries, "allocs/delivery")
	b.ReportMetric(deliveries/b.Elapsed().Seconds(), "deliveries/s")
}

// BenchmarkPublish measures Server.Publish end to end through the
// in-memory scaler to 100 subscribers.
func BenchmarkPublish(b *testing.B) {
	srv, err := New(context.Background(), nil, Options{HeartbeatInterval: -1, SendQueueMessages: 1 << 14, ShutdownSpread: -1, Logger: quietLogger()})
	if err != nil {
		b.Fatal(err)
	}
	hs := newBenchHTTP(b, srv)
	const subs = 100
	readers := make([]*benchReader, subs)
	var wg sync.WaitGroup
	for i := range readers {
		ws, _, err := websocket.DefaultDialer.Dial(hs, nil)
		if err != nil {
			b.Fatal(err)
		}
		_ = ws.WriteMessage(websocket.TextMessage, []byte(`{"sys":1,"channel":"bench","id":1}`))
		if _, _, err := ws.ReadMessage(); err != nil {
			b.Fatal(err)
		}
		readers[i] = &benchReader{nc: ws.NetConn(), br: bufio.NewReaderSize(ws.NetConn(), 64<<10)}
		wg.Add(1)
		go readers[i].run(&wg)
	}
	defer func() {
		for _, r := range readers {
			r.nc.Close()
		}
		wg.Wait()
		ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
		defer cancel()
		_ = srv.Shutdown(ctx)
	}()
	msg := json.RawMessage(`{"text":"hello","user":"alice"}`)
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := srv.Publish(ctx, "bench", "message", msg, PublishOptions{}); err != nil {
			b.Fatal(err)
		}
		if i%256 == 255 {
			for _, r := range readers {
				for r.count.Load() < int64(i+1-512) {
					time.Sleep(20 * time.Microsecond)
				}
			}
		}
	}
	for _, r := range readers {
		for r.count.Load() < int64(b.N) {
			time.Sleep(20 * time.Microsecond)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "publishes/s")
}

// BenchmarkAskRoundTrip measures one ask answered over a loopback
// connection.
func BenchmarkAskRoundTrip(b *testing.B) {
	srv, err := New(context.Background(), nil, Options{HeartbeatInterval: -1, ShutdownSpread: -1, Logger: quietLogger()})
	if err != nil {
		b.Fatal(err)
	}
	srv.HandleAsk("echo", func(ctx context.Context, s *Socket, msg json.RawMessage) (any, error) { return msg, nil })
	hs := newBenchHTTP(b, srv)
	ws, _, err := websocket.DefaultDialer.Dial(hs, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer func() {
		ws.Close()
		ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
		defer cancel()
		_ = srv.Shutdown(ctx)
	}()
	req := []byte(`{"sys":5,"topic":"echo","msg":{"n":1},"id":1}`)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := ws.WriteMessage(websocket.TextMessage, req); err != nil {
			b.Fatal(err)
		}
		if _, _, err := ws.ReadMessage(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkIdleConnMemory reports the heap and stack a server holds per
// idle connection (after BEGIN and one SUBSCRIBE). The clients are raw TCP
// connections with a hand-made handshake, so their own memory is small.
func BenchmarkIdleConnMemory(b *testing.B) {
	const conns = 1000
	srv, err := New(context.Background(), nil, Options{HeartbeatInterval: 30 * time.Second, ShutdownSpread: -1, Logger: quietLogger()})
	if err != nil {
		b.Fatal(err)
	}
	url := newBenchHTTP(b, srv)
	addr := strings.TrimPrefix(url, "ws://")
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
		defer cancel()
		_ = srv.Shutdown(ctx)
	}()
	mem := func() (heap, stack uint64) {
		runtime.GC()
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.HeapAlloc, ms.StackInuse
	}
	// One measurement whatever b.N is: it takes seconds (writers must go
	// idle), and is a size, not a speed.
	for i := 0; i < min(b.N, 1); i++ {
		heap0, stack0 := mem()
		ncs := make([]net.Conn, 0, conns)
		for j := 0; j < conns; j++ {
			nc, err := net.Dial("tcp", addr)
			if err != nil {
				b.Fatal(err)
			}
			ncs = append(ncs, nc)
			req := "GET / HTTP/1.1\r\nHost: " + addr + "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
				"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
			if _, err := nc.Write([]byte(req)); err != nil {
				b.Fatal(err)
			}
			var buf [512]byte
			n, err := nc.Read(buf[:])
			if err != nil || !strings.Contains(string(buf[:n]), "101") {
				b.Fatalf("handshake: %v %q", err, buf[:n])
			}
			// A masked text frame {"sys":3} then a SUBSCRIBE, each answered.
			for _, f := range []string{`{"sys":3}`, `{"sys":1,"channel":"idle","id":1}`} {
				if _, err := nc.Write(maskedFrame(f)); err != nil {
					b.Fatal(err)
				}
				if _, err := nc.Read(buf[:]); err != nil {
					b.Fatal(err)
				}
			}
		}
		waitStats := time.Now().Add(testTimeout)
		for srv.Stats().Sockets != conns && time.Now().Before(waitStats) {
			time.Sleep(time.Millisecond)
		}
		// Let the writers go idle.
		time.Sleep(writerIdle + 500*time.Millisecond)
		heap1, stack1 := mem()
		b.ReportMetric(float64(int64(heap1)-int64(heap0))/conns, "heap-bytes/conn")
		b.ReportMetric(float64(int64(stack1)-int64(stack0))/conns, "stack-bytes/conn")
		for _, nc := range ncs {
			nc.Close()
		}
		for srv.Stats().Sockets != 0 && time.Now().Before(waitStats.Add(testTimeout)) {
			time.Sleep(time.Millisecond)
		}
	}
}

// maskedFrame builds a client text frame (masked with a zero key).
func maskedFrame(s string) []byte {
	b := []byte{0x81, 0x80 | byte(len(s)), 0, 0, 0, 0}
	return append(b, s...)
}
