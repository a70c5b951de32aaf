package testutil

import (
	"fmt"
	"runtime"
	"strings"
	"testing"
)

// recTB records Fatalf and Skipf and ends the calling goroutine, as the
// testing package does.
type recTB struct {
	testing.TB
	fatal, skip string
}

func (r *recTB) Helper() {}
func (r *recTB) Fatalf(s string, a ...any) {
	r.fatal = fmt.Sprintf(s, a...)
	runtime.Goexit()
}
func (r *recTB) Skipf(s string, a ...any) {
	r.skip = fmt.Sprintf(s, a...)
	runtime.Goexit()
}

// run calls fn with r in a goroutine of its own, so Goexit ends only it.
func (r *recTB) run(fn func(tb testing.TB)) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		fn(r)
	}()
	<-done
}

func TestMissing(t *testing.T) {
	tests := []struct {
		env      string
		wantSkip bool
	}{
		{"", false},
		{"0", false},
		{"1", true},
	}
	for _, tc := range tests {
		t.Run("SSS_TEST_SKIP_MISSING="+tc.env, func(t *testing.T) {
			t.Setenv(envSkipMissing, tc.env)
			r := &recTB{TB: t}
			r.run(func(tb testing.TB) { missing(tb, "redis-server not found in PATH: apt-get install redis-server") })
			msg := r.fatal
			if tc.wantSkip {
				msg = r.skip
			}
			if (r.skip != "") != tc.wantSkip || (r.fatal != "") == tc.wantSkip {
				t.Fatalf("fatal %q, skip %q; want skip=%v", r.fatal, r.skip, tc.wantSkip)
			}
			if !strings.Contains(msg, "apt-get install redis-server") {
				t.Fatalf("message %q does not say how to install", msg)
			}
		})
	}
}

func TestExternalServices(t *testing.T) {
	t.Setenv(envRedisURL, "redis://127.0.0.1:1")
	t.Setenv(envMongoURI, "mongodb://127.0.0.1:1/")
	r := StartRedis(t)
	if r.URL != "redis://127.0.0.1:1" || r.Addr != "127.0.0.1:1" || r.CanRestart() {
		t.Fatalf("external Redis = %+v, CanRestart %v", r, r.CanRestart())
	}
	for _, m := range []*Mongo{StartMongo(t), SharedMongo(t)} {
		if m.URI != "mongodb://127.0.0.1:1/" || m.CanRestart() || m.Dir != "" {
			t.Fatalf("external Mongo = %+v, CanRestart %v", m, m.CanRestart())
		}
	}
	ops := []struct {
		name string
		fn   func(tb testing.TB)
	}{
		{"Redis.Stop", func(tb testing.TB) { r.t = tb; r.Stop() }},
		{"Redis.Start", func(tb testing.TB) { r.t = tb; r.Start() }},
		{"Redis.Restart", func(tb testing.TB) { r.t = tb; r.Restart() }},
		{"Mongo.Stop", func(tb testing.TB) { m := StartMongo(tb); m.Stop() }},
		{"Mongo.Start", func(tb testing.TB) { m := StartMongo(tb); m.Start() }},
		{"Mongo.Wipe", func(tb testing.TB) { m := StartMongo(tb); m.Wipe() }},
	}
	for _, op := range ops {
		t.Run(op.name, func(t *testing.T) {
			rec := &recTB{TB: t}
			rec.run(op.fn)
			if !strings.Contains(rec.fatal, "CanRestart") {
				t.Fatalf("%s on an external server: fatal %q, want a failure pointing to CanRestart", op.name, rec.fatal)
			}
		})
	}
}
