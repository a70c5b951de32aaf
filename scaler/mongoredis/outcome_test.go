package mongoredis

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"

	"github.com/sss-go/sss/internal/testutil"
	"github.com/sss-go/sss/protocol"
	"github.com/sss-go/sss/scaler"
)

// mongoHost returns the host:port of a mongodb:// URI.
func mongoHost(t testing.TB, uri string) string {
	u, err := url.Parse(uri)
	if err != nil {
		t.Fatal(err)
	}
	return u.Host
}

// TestPublishUncertain: a publish whose insert is on the wire when its
// context ends ("delay": the insert lands later), or when the writer gives
// up after WriteTimeout ("blackhole": no answer ever comes), returns
// ErrUncertain, not ErrUnavailable; a publish that never left the process
// returns ErrUnavailable; retries with the same idempotency key return
// one uid and the log holds one copy.
func TestPublishUncertain(t *testing.T) {
	rd := testutil.StartRedis(t)
	mg := testutil.SharedMongo(t)
	for _, fault := range []string{"delay", "blackhole"} {
		t.Run(fault, func(t *testing.T) {
			proxy := testutil.NewProxy(t, mongoHost(t, mg.URI))
			env := newEnv(t, rd.URL, mg.URI)
			s := env.newScaler(t, func(o *Options) {
				o.MongoURI = "mongodb://" + proxy.Addr + "/"
				o.WriteTimeout = time.Second
			})
			closeAtEnd(t, s)
			ctx := tctx(t)
			ch := "uncertain-" + fault
			if _, err := s.Publish(ctx, ch, "t", json.RawMessage(`0`), scaler.PublishOptions{}); err != nil {
				t.Fatal(err)
			}
			key := "key-" + fault
			switch fault {
			case "delay":
				proxy.SetDelay(time.Second)
			case "blackhole":
				proxy.Blackhole(true)
			}
			var wg sync.WaitGroup
			var firstErr error
			wait := 400 * time.Millisecond // ends while the insert is on the wire
			if fault == "blackhole" {
				wait = 10 * time.Second // outlasts WriteTimeout: the writer gives up
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				c, cancel := context.WithTimeout(ctx, wait)
				defer cancel()
				_, firstErr = s.Publish(c, ch, "t", json.RawMessage(`"first"`), scaler.PublishOptions{IdempotencyKey: key})
			}()
			// A second publish queued behind the insert in flight never
			// leaves the process: its outcome is certain.
			w := s.writers.get(ch)
			testutil.WaitFor(t, 5*time.Second, func() bool {
				w.mu.Lock()
				defer w.mu.Unlock()
				return w.running && len(w.pending) == 0
			}, "the first publish to be on the wire")
			c2, cancel2 := context.WithTimeout(ctx, 100*time.Millisecond)
			_, err := s.Publish(c2, ch, "t", json.RawMessage(`"second"`), scaler.PublishOptions{})
			cancel2()
			if !errors.Is(err, scaler.ErrUnavailable) || errors.Is(err, scaler.ErrUncertain) {
				t.Errorf("a publish that never left the process: %v, want ErrUnavailable", err)
			}
			wg.Wait()
			if !errors.Is(firstErr, scaler.ErrUncertain) || errors.Is(firstErr, scaler.ErrUnavailable) {
				t.Fatalf("a publish whose insert got no answer: %v, want ErrUncertain (and not ErrUnavailable)", firstErr)
			}
			proxy.SetDelay(0)
			proxy.Blackhole(false)
			proxy.CutAll()
			var uid protocol.UID
			testutil.WaitFor(t, 20*time.Second, func() bool {
				c, cancel := context.WithTimeout(ctx, 2*time.Second)
				defer cancel()
				uid, err = s.Publish(c, ch, "t", json.RawMessage(`"first"`), scaler.PublishOptions{IdempotencyKey: key})
				return err == nil
			}, "a retry with the same key to succeed")
			again, err := s.Publish(ctx, ch, "t", json.RawMessage(`"first"`), scaler.PublishOptions{IdempotencyKey: key})
			if err != nil || again != uid {
				t.Fatalf("second retry = %v, %v; want %v", again, err, uid)
			}
			pubs, _ := env.collections(t, mg)
			n, err := pubs.CountDocuments(ctx, bson.D{{Key: "ch", Value: ch}, {Key: "m", Value: `"first"`}})
			if err != nil || n != 1 {
				t.Fatalf("the log holds %d copies of the publication (%v), want 1", n, err)
			}
			got, err := s.Since(ctx, ch, protocol.UID{Epoch: uid.Epoch}, 0)
			if err != nil {
				t.Fatal(err)
			}
			for i, p := range got {
				if p.UID.Seq != uint64(i+1) {
					t.Fatalf("log has a hole: %v at %d", p.UID, i)
				}
			}
		})
	}
}

// TestConnectTimeout: New gives up after Options.ConnectTimeout when
// MongoDB or Redis does not answer, with an error that names the address
// and wraps ErrUnavailable.
func TestConnectTimeout(t *testing.T) {
	rd := testutil.StartRedis(t)
	mg := testutil.SharedMongo(t)
	dead := fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t))
	hole, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var conns []net.Conn
	var mu sync.Mutex
	go func() {
		for {
			c, err := hole.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c) // accepted, never answered
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		hole.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
	})
	for _, tc := range []struct {
		name, mongo, redis, addr string
	}{
		{"mongo refused", "mongodb://user:secret@" + dead + "/", rd.URL, dead},
		{"mongo blackhole", "mongodb://" + hole.Addr().String() + "/", rd.URL, hole.Addr().String()},
		{"redis refused", mg.URI, "redis://:secret@" + dead, dead},
		{"redis blackhole", mg.URI, "redis://" + hole.Addr().String(), hole.Addr().String()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := Options{MongoURI: tc.mongo, RedisURL: tc.redis, Database: testutil.DBName(t), Logger: testLogger}
			setConnectTimeout(&o, 500*time.Millisecond)
			start := time.Now()
			s, err := New(context.Background(), o)
			took := time.Since(start)
			if err == nil {
				_ = s.Close(context.Background())
				t.Fatal("New succeeded")
			}
			t.Logf("after %v: %v", took.Round(time.Millisecond), err)
			if took > 5*time.Second {
				t.Errorf("New took %v with a 500ms ConnectTimeout", took)
			}
			if !errors.Is(err, scaler.ErrUnavailable) || !strings.Contains(err.Error(), tc.addr) || strings.Contains(err.Error(), "secret") {
				t.Errorf("error %q: want one wrapping ErrUnavailable that names %s and no password", err, tc.addr)
			}
		})
	}
}

func setConnectTimeout(o *Options, d time.Duration) { o.ConnectTimeout = d }
