package mongoredis

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sss-go/sss/internal/testutil"
	"github.com/sss-go/sss/scaler"
)

// await waits with testutil.WaitFor until check (which returns "" once
// the awaited state holds, else what it saw) holds; on failure it also
// logs the last thing seen. It returns how long it took.
func await(t *testing.T, d time.Duration, what string, check func() string) time.Duration {
	t.Helper()
	start := time.Now()
	var last string
	done := false
	defer func() {
		if !done {
			t.Logf("last seen while waiting for %s: %s", what, last)
		}
	}()
	testutil.WaitFor(t, d, func() bool {
		last = check()
		return last == ""
	}, what)
	done = true
	return time.Since(start)
}

// presenceIs returns "" when s sees exactly ids on ch, by Presence and
// Count.
func presenceIs(s *Scaler, ch string, ids ...string) string {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ms, err := s.Presence(ctx, ch)
	if err != nil {
		return "Presence: " + err.Error()
	}
	got := make([]string, 0, len(ms))
	for _, m := range ms {
		got = append(got, m.ID)
	}
	slices.Sort(got)
	slices.Sort(ids)
	if !slices.Equal(got, ids) {
		return fmt.Sprintf("Presence(%q) = %v, want %v", ch, got, ids)
	}
	if n, err := s.Count(ctx, ch); err != nil || n != len(ids) {
		return fmt.Sprintf("Count(%q) = %d, %v; want %d", ch, n, err, len(ids))
	}
	return ""
}

// usersAre returns "" when s sees exactly ids as UserInstances(user).
func usersAre(s *Scaler, user string, ids ...string) string {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	got, err := s.UserInstances(ctx, user)
	if err != nil {
		return "UserInstances: " + err.Error()
	}
	got = slices.Clone(got)
	slices.Sort(got)
	slices.Sort(ids)
	if !slices.Equal(got, ids) {
		return fmt.Sprintf("UserInstances(%q) = %v, want %v", user, got, ids)
	}
	return ""
}

// TestPresenceReconcile: a Join, Leave, AddUser or RemoveUser whose Redis
// write fails (the connection to Redis cut for the call) is made good at
// the next lease renewals, without the lease being lost: local state and
// Redis converge.
func TestPresenceReconcile(t *testing.T) {
	testutil.CheckLeaks(t)
	rd := testutil.StartRedis(t)
	mg := testutil.SharedMongo(t)
	env := newEnv(t, rd.URL, mg.URI)
	px := testutil.NewProxy(t, rd.Addr)
	const lease = 2 * time.Second
	// Converged within a few renewals (every lease/3), generous for a
	// loaded machine; the unfixed code never converges.
	const bound = 2 * lease
	a := env.newScaler(t, func(o *Options) { o.RedisURL = "redis://" + px.Addr; o.LeaseTTL = lease })
	b := env.newScaler(t, func(o *Options) { o.LeaseTTL = lease })
	ra := startScaler(t, a)
	startScaler(t, b)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, id := range []string{"m1", "m2"} {
		if err := a.Join(ctx, "leave", scaler.Member{ID: id, User: "u"}); err != nil {
			t.Fatal(err)
		}
	}
	if err := a.Join(ctx, "join", scaler.Member{ID: "m1"}); err != nil {
		t.Fatal(err)
	}
	if err := a.AddUser(ctx, "removed"); err != nil {
		t.Fatal(err)
	}
	await(t, bound, "A's members and user on B", func() string {
		if msg := presenceIs(b, "leave", "m1", "m2"); msg != "" {
			return msg
		}
		if msg := presenceIs(b, "join", "m1"); msg != "" {
			return msg
		}
		return usersAre(b, "removed", a.ID())
	})
	for _, tc := range []struct {
		name  string
		op    func(ctx context.Context) error
		check func() string // "" once B sees the effect of op
	}{
		{"Leave", func(c context.Context) error { return a.Leave(c, "leave", "m1") },
			func() string { return presenceIs(b, "leave", "m2") }},
		{"Join", func(c context.Context) error { return a.Join(c, "join", scaler.Member{ID: "m2"}) },
			func() string { return presenceIs(b, "join", "m1", "m2") }},
		{"RemoveUser", func(c context.Context) error { return a.RemoveUser(c, "removed") },
			func() string { return usersAre(b, "removed") }},
		{"AddUser", func(c context.Context) error { return a.AddUser(c, "added") },
			func() string { return usersAre(b, "added", a.ID()) }},
	} {
		t.Run("failed "+tc.name, func(t *testing.T) {
			// The write fails: Redis is unreachable from A for the call.
			px.Pause()
			px.CutAll()
			cctx, ccancel := context.WithTimeout(ctx, 300*time.Millisecond)
			err := tc.op(cctx)
			ccancel()
			px.Resume()
			if err == nil {
				t.Fatalf("%s with Redis unreachable succeeded; the fault was not injected", tc.name)
			}
			took := await(t, bound, "B to see the effect of the failed "+tc.name, tc.check)
			t.Logf("failed %s reconciled after %v", tc.name, took.Round(time.Millisecond))
		})
	}
	t.Run("keys lost", func(t *testing.T) {
		// A's keys vanish from Redis (evicted, or lost in a failover)
		// while its lease lives on: a renewal finds them missing and
		// writes them again.
		rc := redis.NewClient(&redis.Options{Addr: rd.Addr})
		defer rc.Close()
		lease := a.leases.current()
		keys := []string{a.leases.presenceKey("join", lease), a.leases.usersKey(lease)}
		if n, err := rc.Del(ctx, keys...).Result(); err != nil || n != 2 {
			t.Fatalf("DEL %v = %d, %v; want both deleted", keys, n, err)
		}
		took := await(t, bound, "A's deleted keys to be written again", func() string {
			if msg := presenceIs(b, "join", "m1", "m2"); msg != "" {
				return msg
			}
			return usersAre(b, "added", a.ID())
		})
		t.Logf("lost keys rewritten after %v", took.Round(time.Millisecond))
	})
	// A's own view agrees, and all this was repaired by renewals, not by
	// a lost lease re-registering everything.
	if msg := presenceIs(a, "leave", "m2"); msg != "" {
		t.Error("A:", msg)
	}
	if n := ra.count(scaler.EventLeaseLost); n != 0 {
		t.Errorf("A lost its lease %d times; the test meant to exercise reconciliation under a live lease", n)
	}
}

// TestPresenceCrash: an instance (a separate OS process) holding 100
// presence entries and some users is killed with SIGKILL; within
// 2 x LeaseTTL no key under the prefix holds anything of it any more
// (checked with SCAN), and the survivor no longer lists its entries.
func TestPresenceCrash(t *testing.T) {
	rd := testutil.StartRedis(t)
	mg := testutil.SharedMongo(t)
	env := newEnv(t, rd.URL, mg.URI)
	const (
		lease   = 2 * time.Second
		members = 100
		users   = 5
		chans   = 10 // as internal/mrproc spreads them
	)
	bin := filepath.Join(t.TempDir(), "mrproc")
	if out, err := exec.Command("go", "build", "-o", bin, "./internal/mrproc").CombinedOutput(); err != nil {
		t.Fatalf("go build ./internal/mrproc: %v\n%s", err, out)
	}
	cmd := exec.Command(bin, "-mongo", env.mongoURI, "-redis", env.redisURL, "-db", env.db, "-prefix", env.prefix,
		"-hold-members", fmt.Sprint(members), "-hold-users", fmt.Sprint(users), "-lease", lease.String(), "-timeout", "60s")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		_ = stdin.Close()
		if t.Failed() && stderr.Len() > 0 {
			t.Logf("mrproc stderr:\n%s", stderr.String())
		}
	})
	line := make(chan string, 1)
	go func() {
		l, _ := bufio.NewReader(stdout).ReadString('\n')
		line <- strings.TrimSpace(l)
		_, _ = io.Copy(io.Discard, stdout)
	}()
	var child string
	select {
	case l := <-line:
		if _, err := fmt.Sscanf(l, "HELD %s", &child); err != nil {
			t.Fatalf("mrproc said %q, want HELD <id>", l)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("timed out waiting for mrproc to hold its entries")
	}

	survivor := env.newScaler(t, func(o *Options) { o.LeaseTTL = lease })
	startScaler(t, survivor)
	count := func() (int, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		total := 0
		for i := range chans {
			n, err := survivor.Count(ctx, fmt.Sprintf("hold-%d", i))
			if err != nil {
				return 0, err
			}
			total += n
		}
		return total, nil
	}
	await(t, 10*time.Second, "the child's entries to be visible", func() string {
		if n, err := count(); err != nil || n != members {
			return fmt.Sprintf("%d members (%v), want %d", n, err, members)
		}
		return usersAre(survivor, "hold-user-0", child)
	})
	rc := redis.NewClient(&redis.Options{Addr: rd.Addr})
	defer rc.Close()
	if left := keysHolding(t, rc, env.prefix, child); len(left) == 0 {
		t.Fatalf("no key under %q mentions the child %s while it is alive; the check below would prove nothing", env.prefix, child)
	}

	if err := cmd.Process.Kill(); err != nil { // SIGKILL
		t.Fatal(err)
	}
	killed := time.Now()
	took := await(t, 2*lease, "Redis to hold nothing of the killed instance "+child+" within 2 x LeaseTTL of SIGKILL", func() string {
		if left := keysHolding(t, rc, env.prefix, child); len(left) > 0 {
			return fmt.Sprintf("%v after SIGKILL, %d keys still hold entries of it: %v",
				time.Since(killed).Round(time.Millisecond), len(left), left[:min(len(left), 5)])
		}
		return ""
	})
	t.Logf("the killed instance's entries were gone from Redis %v after SIGKILL", took.Round(time.Millisecond))
	if n, err := count(); err != nil || n != 0 {
		t.Fatalf("after the crash the survivor counts %d members (%v), want 0", n, err)
	}
	if msg := usersAre(survivor, "hold-user-0"); msg != "" {
		t.Fatal(msg)
	}
}

// keysHolding returns the keys under prefix (found with SCAN) whose name,
// fields, members or values mention instance id. The trimmer's lock is
// not a presence or user entry and is left out.
func keysHolding(t *testing.T, rc *redis.Client, prefix, id string) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var out []string
	iter := rc.Scan(ctx, 0, prefix+":*", 100).Iterator()
	for iter.Next(ctx) {
		key := iter.Val()
		if key == prefix+":trimlock" {
			continue
		}
		var vals []string
		typ, err := rc.Type(ctx, key).Result()
		if err != nil {
			t.Fatalf("TYPE %s: %v", key, err)
		}
		switch typ {
		case "string":
			v, _ := rc.Get(ctx, key).Result()
			vals = []string{v}
		case "hash":
			for f, v := range rc.HGetAll(ctx, key).Val() {
				vals = append(vals, f, v)
			}
		case "set":
			vals = rc.SMembers(ctx, key).Val()
		case "zset":
			vals = rc.ZRange(ctx, key, 0, -1).Val()
		case "list":
			vals = rc.LRange(ctx, key, 0, -1).Val()
		}
		if strings.Contains(key, id) || slices.ContainsFunc(vals, func(v string) bool { return strings.Contains(v, id) }) {
			out = append(out, key)
		}
	}
	if err := iter.Err(); err != nil {
		t.Fatalf("SCAN: %v", err)
	}
	return out
}

// opCounter is a go-redis hook counting the lease's round trips: single
// commands and pipelines (with the commands they carry).
type opCounter struct {
	mu        sync.Mutex
	singles   int
	pipelines int
	piped     int
}

func (c *opCounter) DialHook(next redis.DialHook) redis.DialHook { return next }

// leaseCmd reports whether cmd is one of the lease's and presence's
// (scripts and TTL refreshes), not of the relay, probe or trimmer running
// meanwhile.
func leaseCmd(cmd redis.Cmder) bool {
	switch cmd.Name() {
	case "evalsha", "eval", "script", "pexpire":
		return true
	}
	return false
}

func (c *opCounter) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if leaseCmd(cmd) {
			c.mu.Lock()
			c.singles++
			c.mu.Unlock()
		}
		return next(ctx, cmd)
	}
}

func (c *opCounter) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		if slices.ContainsFunc(cmds, leaseCmd) {
			c.mu.Lock()
			c.pipelines++
			c.piped += len(cmds)
			c.mu.Unlock()
		}
		return next(ctx, cmds)
	}
}

func (c *opCounter) take() (singles, pipelines, piped int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	singles, pipelines, piped = c.singles, c.pipelines, c.piped
	c.singles, c.pipelines, c.piped = 0, 0, 0
	return
}

// TestRenewalCost: with 10,000 presence entries over 1,000 channels and
// 1,000 users held, writing everything again under a new lease and a
// plain renewal each take a constant number of round trips (one
// pipeline), not one per entry.
func TestRenewalCost(t *testing.T) {
	rd := testutil.StartRedis(t)
	mg := testutil.SharedMongo(t)
	env := newEnv(t, rd.URL, mg.URI)
	const (
		chans   = 1000
		members = 10000
		users   = 1000
	)
	// A long lease: the test drives the renewals itself.
	s := env.newScaler(t, func(o *Options) { o.LeaseTTL = time.Minute })
	startScaler(t, s)
	s.leases.mu.Lock()
	for i := range members {
		id := fmt.Sprintf("m%d", i)
		s.leases.held.join(fmt.Sprintf("c%d", i%chans), id, fmt.Sprintf(`{"id":%q,"user":"u%d"}`, id, i%users))
	}
	for i := range users {
		s.leases.held.addUser(fmt.Sprintf("u%d", i))
	}
	s.leases.mu.Unlock()
	var oc opCounter
	s.rdb.AddHook(&oc)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	start := time.Now()
	if err := s.leases.register(ctx); err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	singles, pipelines, piped := oc.take()
	t.Logf("writing %d entries in %d channels and %d users: %v, %d pipeline(s) of %d commands, %d single commands",
		members, chans, users, took.Round(time.Millisecond), pipelines, piped, singles)
	if pipelines != 1 || singles > 2 {
		t.Fatalf("writing everything took %d pipelines and %d single commands; want 1 pipeline, a script load and the lease script", pipelines, singles)
	}
	if msg := presenceIs(s, "c7", "m7", "m1007", "m2007", "m3007", "m4007", "m5007", "m6007", "m7007", "m8007", "m9007"); msg != "" {
		t.Fatal(msg)
	}
	if msg := usersAre(s, "u999", s.ID()); msg != "" {
		t.Fatal(msg)
	}
	oc.take()

	start = time.Now()
	s.leases.renew()
	took = time.Since(start)
	singles, pipelines, piped = oc.take()
	t.Logf("renewal with nothing dirty: %v, %d pipeline(s) of %d commands, %d single commands",
		took.Round(time.Millisecond), pipelines, piped, singles)
	if pipelines != 1 || piped != chans+1 || singles != 1 {
		t.Fatalf("a renewal took %d pipelines (%d commands) and %d single commands; want 1 pipeline of %d and the lease script",
			pipelines, piped, singles, chans+1)
	}
	if !s.leases.ok.Load() {
		t.Fatal("lease not held after the renewal")
	}
}
