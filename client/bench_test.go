package client_test

import (
	"context"
	"encoding/json"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sss-go/sss/client"
	"github.com/sss-go/sss/server"
)

func benchServer(b *testing.B) (*testServer, *client.Client) {
	b.Helper()
	srv, err := server.New(context.Background(), nil, serverOpts())
	if err != nil {
		b.Fatal(err)
	}
	srv.HandleAsk("echo", func(ctx context.Context, sock *server.Socket, msg json.RawMessage) (any, error) {
		return msg, nil
	})
	ts := httptest.NewServer(srv)
	s := &testServer{srv: srv, ts: ts, addr: ts.Listener.Addr().String()}
	c, err := client.Dial(context.Background(), s.url(""), clientOpts())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		_ = c.Close()
		<-c.Done()
		_ = srv.Shutdown(context.Background())
		ts.Close()
	})
	return s, c
}

// BenchmarkAsk: round trips of a small ask over loopback, sequential and
// from parallel goroutines.
func BenchmarkAsk(b *testing.B) {
	_, c := benchServer(b)
	ctx := context.Background()
	b.Run("sequential", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			var n int
			if err := c.Ask(ctx, "echo", i, &n); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			var n int
			for pb.Next() {
				if err := c.Ask(ctx, "echo", 1, &n); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
}

// BenchmarkReceive: publications delivered to a subscription handler, with
// at most 256 in flight (beyond the server's send queue a slow consumer is
// closed with 4002, which is not what this measures).
func BenchmarkReceive(b *testing.B) {
	s, c := benchServer(b)
	ctx := context.Background()
	sub, err := c.Subscribe(ctx, "bench", nil)
	if err != nil {
		b.Fatal(err)
	}
	window := make(chan struct{}, 256)
	done := make(chan struct{})
	var got atomic.Int64
	n := int64(b.N)
	sub.On("n", func(msg json.RawMessage, uid string) {
		<-window
		if got.Add(1) == n {
			close(done)
		}
	})
	msg := json.RawMessage(`{"text":"a short chat message","n":1}`)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		window <- struct{}{}
		if _, err := s.srv.Publish(ctx, "bench", "n", msg, server.PublishOptions{}); err != nil {
			b.Fatal(err)
		}
	}
	select {
	case <-done:
	case <-time.After(wait):
		b.Fatalf("received %d of %d", got.Load(), b.N)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
}
