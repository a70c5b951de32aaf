package mongoredis

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sss-go/sss/internal/testutil"
	"github.com/sss-go/sss/scaler"
)

// delivered is one publication as an instance received it.
type delivered struct {
	seq  uint64
	proc string
	w, n int
}

// checkSameOrder verifies that every instance received seqs from+1..from+total
// exactly once, in order, that all agree on which publication has which
// seq, and that each publisher's publications are in its publish order.
func checkSameOrder(t *testing.T, from uint64, total int, streams map[string][]delivered) {
	t.Helper()
	var ref []delivered
	var refName string
	for name, st := range streams {
		if len(st) != total {
			t.Errorf("%s received %d publications, want %d", name, len(st), total)
			continue
		}
		next := map[string]int{}
		for i, d := range st {
			if d.seq != from+uint64(i)+1 {
				t.Errorf("%s: publication %d has seq %d, want %d (gap, duplicate or disorder)", name, i, d.seq, from+uint64(i)+1)
				break
			}
			key := fmt.Sprintf("%s/%d", d.proc, d.w)
			if d.n != next[key] {
				t.Errorf("%s: publisher %s sent n=%d at seq %d, want n=%d", name, key, d.n, d.seq, next[key])
				break
			}
			next[key]++
		}
		if ref == nil {
			ref, refName = st, name
			continue
		}
		for i := range st {
			if st[i] != ref[i] {
				t.Errorf("%s and %s disagree at seq %d: %+v vs %+v", name, refName, st[i].seq, st[i], ref[i])
				break
			}
		}
	}
}

func toDelivered(t *testing.T, ps []scaler.Publication) []delivered {
	t.Helper()
	out := make([]delivered, 0, len(ps))
	for _, p := range ps {
		var b struct {
			Proc string `json:"proc"`
			W    int    `json:"w"`
			N    int    `json:"n"`
		}
		if err := json.Unmarshal(p.Msg, &b); err != nil {
			t.Fatalf("publication %v: %v", p.UID, err)
		}
		out = append(out, delivered{p.UID.Seq, b.Proc, b.W, b.N})
	}
	return out
}

// TestThreeInstances: three instances on one MongoDB + Redis, each
// publishing from several goroutines; every instance receives every
// publication once, in one order.
func TestThreeInstances(t *testing.T) {
	testutil.CheckLeaks(t)
	rd := testutil.StartRedis(t)
	mg := testutil.SharedMongo(t)
	env := newEnv(t, rd.URL, mg.URI)
	const (
		ch         = "three"
		publishers = 8
		each       = 30
		total      = 3 * publishers * each
	)
	names := []string{"a", "b", "c"}
	scs := make([]*Scaler, 3)
	recs := make([]*recorder, 3)
	for i := range scs {
		scs[i] = env.newScaler(t, nil)
		recs[i] = startScaler(t, scs[i])
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var from uint64
	for i, s := range scs {
		pos, err := s.Subscribe(ctx, ch)
		if err != nil {
			t.Fatal(err)
		}
		if i > 0 && pos.Seq != from {
			t.Fatalf("positions differ: %v vs seq %d", pos, from)
		}
		from = pos.Seq
	}
	var wg sync.WaitGroup
	errc := make(chan error, 3*publishers)
	for i, s := range scs {
		for w := range publishers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for n := range each {
					msg := fmt.Sprintf(`{"proc":%q,"w":%d,"n":%d}`, names[i], w, n)
					if _, err := s.Publish(ctx, ch, "t", json.RawMessage(msg), scaler.PublishOptions{}); err != nil {
						errc <- err
						return
					}
				}
			}()
		}
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Fatal(err)
	}
	streams := map[string][]delivered{}
	for i, r := range recs {
		r.waitFor(t, 30*time.Second, names[i]+" to receive everything", func() bool { return len(r.stream(ch)) >= total })
		streams[names[i]] = toDelivered(t, r.stream(ch))
	}
	checkSameOrder(t, from, total, streams)
}

// TestThreeProcesses runs three instances as separate OS processes
// (internal/mrproc), each publishing from 16 goroutines and recording the
// sequence it receives.
func TestThreeProcesses(t *testing.T) {
	rd := testutil.StartRedis(t)
	mg := testutil.SharedMongo(t)
	env := newEnv(t, rd.URL, mg.URI)
	const (
		procs      = 3
		publishers = 16
		each       = 15
		total      = procs * publishers * each
	)
	bin := filepath.Join(t.TempDir(), "mrproc")
	build := exec.Command("go", "build", "-o", bin, "./internal/mrproc")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build ./internal/mrproc: %v\n%s", err, out)
	}
	type child struct {
		name  string
		cmd   *exec.Cmd
		stdin io.WriteCloser
		lines chan string
	}
	children := make([]*child, procs)
	for i := range children {
		name := fmt.Sprintf("p%d", i)
		cmd := exec.Command(bin, "-mongo", env.mongoURI, "-redis", env.redisURL, "-db", env.db,
			"-prefix", env.prefix, "-channel", "multi", "-name", name,
			"-publishers", fmt.Sprint(publishers), "-count", fmt.Sprint(each), "-total", fmt.Sprint(total),
			"-timeout", "90s")
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
		c := &child{name: name, cmd: cmd, stdin: stdin, lines: make(chan string, 4096)}
		children[i] = c
		go func() {
			sc := bufio.NewScanner(stdout)
			for sc.Scan() {
				c.lines <- sc.Text()
			}
			close(c.lines)
		}()
		t.Cleanup(func() {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
			if t.Failed() && stderr.Len() > 0 {
				t.Logf("%s stderr:\n%s", name, stderr.String())
			}
		})
	}
	timeout := time.NewTimer(120 * time.Second)
	defer timeout.Stop()
	next := func(c *child) string {
		select {
		case l, ok := <-c.lines:
			if !ok {
				t.Fatalf("%s exited early", c.name)
			}
			if strings.HasPrefix(l, "ERR") {
				t.Fatalf("%s: %s", c.name, l)
			}
			return l
		case <-timeout.C:
			t.Fatalf("timed out waiting for %s", c.name)
		}
		return ""
	}
	var from uint64
	for i, c := range children {
		l := next(c)
		var epoch string
		var seq uint64
		if _, err := fmt.Sscanf(strings.Replace(l, ".", " ", 1), "READY %s %d", &epoch, &seq); err != nil {
			t.Fatalf("%s: %q: %v", c.name, l, err)
		}
		if i > 0 && seq != from {
			t.Fatalf("%s starts at %d, others at %d", c.name, seq, from)
		}
		from = seq
	}
	for _, c := range children {
		if _, err := io.WriteString(c.stdin, "go\n"); err != nil {
			t.Fatal(err)
		}
	}
	streams := map[string][]delivered{}
	for _, c := range children {
		var st []delivered
		for {
			l := next(c)
			if l == "DONE" {
				break
			}
			if strings.HasPrefix(l, "RESET") {
				t.Errorf("%s: unexpected %s", c.name, l)
				continue
			}
			var d delivered
			if _, err := fmt.Sscanf(l, "P %d %s %d %d", &d.seq, &d.proc, &d.w, &d.n); err != nil {
				t.Fatalf("%s: %q: %v", c.name, l, err)
			}
			st = append(st, d)
		}
		streams[c.name] = st
	}
	checkSameOrder(t, from, total, streams)
}
