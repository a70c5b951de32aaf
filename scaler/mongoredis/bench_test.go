package mongoredis

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/sss-go/sss/internal/testutil"
	"github.com/sss-go/sss/scaler"
)

// BenchmarkPublish measures acknowledged publishes per second into one
// channel (FerretDB-backed in tests: says nothing about MongoDB).
func BenchmarkPublish(b *testing.B) {
	rd := testutil.StartRedis(b)
	mg := testutil.SharedMongo(b)
	for _, publishers := range []int{1, 16} {
		b.Run(fmt.Sprintf("publishers=%d", publishers), func(b *testing.B) {
			env := newEnv(b, rd.URL, mg.URI)
			s := env.newScaler(b, nil)
			b.Cleanup(func() { _ = s.Close(context.Background()) })
			msg := json.RawMessage(`{"text":"hello, this is a benchmark message"}`)
			ctx := context.Background()
			b.ReportAllocs()
			b.ResetTimer()
			start := time.Now()
			var wg sync.WaitGroup
			per := (b.N + publishers - 1) / publishers
			for range publishers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for range per {
						if _, err := s.Publish(ctx, "bench", "t", msg, scaler.PublishOptions{}); err != nil {
							b.Error(err)
							return
						}
					}
				}()
			}
			wg.Wait()
			b.ReportMetric(float64(per*publishers)/time.Since(start).Seconds(), "pubs/s")
		})
	}
}

// BenchmarkDeliveryLatency measures the time from Publish on instance A to
// delivery on instance B (FerretDB-backed in tests).
func BenchmarkDeliveryLatency(b *testing.B) {
	rd := testutil.StartRedis(b)
	mg := testutil.SharedMongo(b)
	env := newEnv(b, rd.URL, mg.URI)
	a, bb := env.newScaler(b, nil), env.newScaler(b, nil)
	startScaler(b, a)
	got := make(chan time.Time, 1024)
	ctx := context.Background()
	if err := bb.Start(ctx, scaler.Handler{Publication: func(scaler.Publication) { got <- time.Now() }}); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = bb.Close(context.Background()) })
	if _, err := bb.Subscribe(ctx, "lat"); err != nil {
		b.Fatal(err)
	}
	msg := json.RawMessage(`{"text":"latency"}`)
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for range b.N {
		start := time.Now()
		if _, err := a.Publish(ctx, "lat", "t", msg, scaler.PublishOptions{}); err != nil {
			b.Fatal(err)
		}
		select {
		case at := <-got:
			lat = append(lat, at.Sub(start))
		case <-time.After(10 * time.Second):
			b.Fatal("publication not delivered within 10s")
		}
	}
	b.StopTimer()
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
}
