package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sss-go/sss/internal/services"
	"github.com/sss-go/sss/internal/testutil"
)

func TestMain(m *testing.M) { testutil.Main(m) }

// These tests build the soak without -race (the test binary may have it;
// the soak is a program of its own) and run it as a process, with its own
// redis-server and test MongoDB.

// soakResult is one run of the soak.
type soakResult struct {
	code    int
	fields  map[string]int // the summary line's counts
	faults  map[string]int // its faults= field
	summary string
	stderr  string
	took    time.Duration
}

// runSoak builds the soak and runs it with args, bounded by limit.
func runSoak(t *testing.T, limit time.Duration, args ...string) soakResult {
	t.Helper()
	env := soakEnv(t)
	bin := filepath.Join(t.TempDir(), "sss-soak")
	build := exec.Command("go", "build", "-o", bin, ".")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build the soak: %v\n%s", err, out)
	}
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = env
	// Past the limit: Ctrl-C (the soak cleans up), then SIGKILL.
	cmd.Cancel = func() error { return cmd.Process.Signal(os.Interrupt) }
	cmd.WaitDelay = 30 * time.Second
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	err := cmd.Run()
	r := soakResult{stderr: stderr.String(), took: time.Since(start)}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
	default:
		t.Fatalf("run the soak: %v\n%s", err, r.stderr)
	}
	if ctx.Err() != nil {
		t.Fatalf("the soak did not end within %v:\n%s", limit, r.stderr)
	}
	for _, line := range strings.Split(stdout.String(), "\n") {
		if strings.HasPrefix(line, "published=") {
			r.summary = line
		}
	}
	if r.summary == "" {
		t.Fatalf("no summary line; exit status %d; stdout:\n%s\nstderr:\n%s", r.code, stdout.String(), r.stderr)
	}
	r.fields, r.faults = parseSummary(t, r.summary)
	t.Logf("soak %s: exit %d in %v\n%s", strings.Join(args, " "), r.code, r.took.Round(time.Second), r.summary)
	return r
}

// soakEnv is the environment of the soak: the FerretDB program resolved
// (and built if need be) here, so a missing one fails the test naming it;
// the test's external services, if any, as MONGO_URI and REDIS_URL.
func soakEnv(t *testing.T) []string {
	t.Helper()
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "MONGO_URI=") && !strings.HasPrefix(kv, "REDIS_URL=") {
			env = append(env, kv)
		}
	}
	if u := os.Getenv("SSS_TEST_MONGO_URI"); u != "" {
		env = append(env, "MONGO_URI="+u)
	} else {
		bin, err := services.FerretBin(os.Stderr)
		if err != nil {
			missing(t, "the test MongoDB: %v", err)
		}
		env = append(env, services.EnvFerretBin+"="+bin)
	}
	if u := os.Getenv("SSS_TEST_REDIS_URL"); u != "" {
		env = append(env, "REDIS_URL="+u)
	} else if _, err := services.LookRedis("redis-server"); err != nil {
		missing(t, "%v", err)
	}
	return env
}

// missing fails the test, or skips it with SSS_TEST_SKIP_MISSING=1.
func missing(t *testing.T, format string, args ...any) {
	t.Helper()
	if os.Getenv("SSS_TEST_SKIP_MISSING") == "1" {
		t.Skipf(format+" (skipped: SSS_TEST_SKIP_MISSING=1)", args...)
	}
	t.Fatalf(format+" (set SSS_TEST_SKIP_MISSING=1 to skip instead)", args...)
}

// parseSummary reads "published=N ... faults=kill:N,... max_recovery_ms=N".
func parseSummary(t *testing.T, line string) (map[string]int, map[string]int) {
	t.Helper()
	fields, faults := map[string]int{}, map[string]int{}
	want := []string{"published", "acknowledged", "stored", "delivered", "faults", "lost", "duplicated", "outoforder", "notrecoverable", "max_recovery_ms"}
	parts := strings.Fields(line)
	if len(parts) != len(want) {
		t.Fatalf("summary %q: %d fields, want %d", line, len(parts), len(want))
	}
	for i, p := range parts {
		k, v, ok := strings.Cut(p, "=")
		if !ok || k != want[i] {
			t.Fatalf("summary %q: field %d is %q, want %s=", line, i, p, want[i])
		}
		if k == "faults" {
			for _, f := range strings.Split(v, ",") {
				kind, n, _ := strings.Cut(f, ":")
				c, err := strconv.Atoi(n)
				if err != nil {
					t.Fatalf("summary %q: fault %q", line, f)
				}
				faults[kind] = c
			}
			continue
		}
		n, err := strconv.Atoi(v)
		if err != nil {
			t.Fatalf("summary %q: %s is not a number", line, p)
		}
		fields[k] = n
	}
	for _, k := range faultKinds {
		if _, ok := faults[k]; !ok {
			t.Fatalf("summary %q: no count for fault kind %s", line, k)
		}
	}
	return fields, faults
}

// subsPerChannel is the soak's default: 200 clients x 3 channels / 24.
const subsPerChannel = 25

// TestSoakShort runs the short soak (LeaseTTL 2 s, every fault kind at
// least once): it must pass with nothing lost, duplicated, reordered or
// not recoverable, every publication delivered to each of its channel's
// subscribers exactly once.
func TestSoakShort(t *testing.T) {
	testutil.CheckLeaks(t)
	args := []string{"-duration", "50s", "-lease-ttl", "2s", "-min-faults", "1", "-progress", "10s"}
	external := os.Getenv("SSS_TEST_REDIS_URL") != ""
	if external {
		args = append(args, "-faults", "kill,cut,blackhole,stop") // Redis is not ours to restart
	}
	r := runSoak(t, 4*time.Minute, args...)
	if r.code != exitPass {
		t.Errorf("exit status %d, want %d (pass)\n%s", r.code, exitPass, r.stderr)
	}
	for _, k := range []string{"lost", "duplicated", "outoforder", "notrecoverable"} {
		if r.fields[k] != 0 {
			t.Errorf("%s=%d, want 0", k, r.fields[k])
		}
	}
	for _, k := range faultKinds {
		if r.faults[k] < 1 && !(external && k == "redis") {
			t.Errorf("fault %s injected %d times, want at least 1", k, r.faults[k])
		}
	}
	pub, ack, stored := r.fields["published"], r.fields["acknowledged"], r.fields["stored"]
	if pub < 300 || float64(ack) < 0.99*float64(pub) || stored < ack || stored > pub {
		t.Errorf("published=%d acknowledged=%d stored=%d: want >= 300 published, >= 99%% acknowledged, acknowledged <= stored <= published", pub, ack, stored)
	}
	if d := r.fields["delivered"]; d != subsPerChannel*stored {
		t.Errorf("delivered=%d, want %d (each stored publication to each of its channel's %d subscribers)", d, subsPerChannel*stored, subsPerChannel)
	}
	if r.took > 2*time.Minute {
		t.Errorf("the short soak took %v, want at most 2 minutes", r.took.Round(time.Second))
	}
}

// TestSoakDropOne is the soak's self-test: with -drop-one one client
// silently drops one delivery, and the checker must notice it: lost=1,
// exit status 1.
func TestSoakDropOne(t *testing.T) {
	testutil.CheckLeaks(t)
	r := runSoak(t, 3*time.Minute, "-duration", "8s", "-faults", "none", "-min-faults", "0", "-drop-one")
	if r.code != exitFail {
		t.Errorf("exit status %d, want %d (fail)\n%s", r.code, exitFail, r.stderr)
	}
	want := map[string]int{"lost": 1, "duplicated": 0, "outoforder": 0, "notrecoverable": 0}
	for k, v := range want {
		if r.fields[k] != v {
			t.Errorf("%s=%d, want %d", k, r.fields[k], v)
		}
	}
	stored := r.fields["stored"]
	if stored == 0 || r.fields["delivered"] != subsPerChannel*stored-1 {
		t.Errorf("stored=%d delivered=%d: want %d delivered (all but the dropped one)", stored, r.fields["delivered"], subsPerChannel*stored-1)
	}
	if !strings.Contains(r.stderr, "FAIL: lost=1") {
		t.Errorf("stderr lacks the failure reason \"FAIL: lost=1\":\n%s", r.stderr)
	}
}
