// Command mrproc is one instance of a multi-process mongoredis test: it
// subscribes to a channel, prints "READY <position>", waits for a line on
// stdin, publishes from several goroutines, and once it has received the
// expected number of publications prints each as
// "P <seq> <proc> <publisher> <n>", then "DONE", and exits. With
// -hold-members or -hold-users it runs the presence mode instead (see
// runHold).
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/sss-go/sss/protocol"
	"github.com/sss-go/sss/scaler"
	"github.com/sss-go/sss/scaler/mongoredis"
)

type body struct {
	Proc string `json:"proc"`
	W    int    `json:"w"`
	N    int    `json:"n"`
}

func main() {
	var (
		mongoURI   = flag.String("mongo", "", "MongoDB URI")
		redisURL   = flag.String("redis", "", "Redis URL")
		db         = flag.String("db", "", "database")
		prefix     = flag.String("prefix", "", "key prefix")
		channel    = flag.String("channel", "multi", "channel")
		name       = flag.String("name", "p", "process name")
		publishers = flag.Int("publishers", 16, "publishing goroutines")
		count      = flag.Int("count", 20, "publications per goroutine")
		total      = flag.Int("total", 0, "publications to receive before exiting")
		timeout    = flag.Duration("timeout", 2*time.Minute, "give up after")
		holdM      = flag.Int("hold-members", 0, "presence mode: members to join")
		holdU      = flag.Int("hold-users", 0, "presence mode: users to register")
		lease      = flag.Duration("lease", 0, "presence mode: LeaseTTL")
	)
	flag.Parse()
	if *holdM > 0 || *holdU > 0 {
		if err := runHold(*mongoURI, *redisURL, *db, *prefix, *holdM, *holdU, *lease, *timeout); err != nil {
			fmt.Println("ERR", err)
			os.Exit(1)
		}
		return
	}
	c := config{
		mongoURI: *mongoURI, redisURL: *redisURL, db: *db, prefix: *prefix, channel: *channel, name: *name,
		publishers: *publishers, count: *count, total: *total, timeout: *timeout,
	}
	if err := run(c); err != nil {
		fmt.Println("ERR", err)
		os.Exit(1)
	}
}

// config is what the flags say.
type config struct {
	mongoURI, redisURL, db, prefix, channel, name string
	publishers, count, total                      int
	timeout                                       time.Duration
}

func run(c config) error {
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	s, err := mongoredis.New(ctx, mongoredis.Options{
		MongoURI: c.mongoURI, RedisURL: c.redisURL, Database: c.db, Prefix: c.prefix,
		CheckInterval: 300 * time.Millisecond, GapWait: 30 * time.Millisecond,
		WriteTimeout: 20 * time.Second, Logger: logger,
	})
	if err != nil {
		return err
	}
	defer s.Close(context.Background())
	rec := newReceived(c.total)
	if err := s.Start(ctx, rec.handler()); err != nil {
		return err
	}
	pos, err := s.Subscribe(ctx, c.channel)
	if err != nil {
		return err
	}
	fmt.Println("READY", pos)
	if _, err := bufio.NewReader(os.Stdin).ReadString('\n'); err != nil {
		return fmt.Errorf("waiting for the start line: %w", err)
	}
	if err := publishAll(ctx, s, c); err != nil {
		return fmt.Errorf("publish: %w", err)
	}
	select {
	case <-rec.done:
	case <-ctx.Done():
		return fmt.Errorf("received %d of %d publications: %w", rec.count(), c.total, ctx.Err())
	}
	return rec.report()
}

// received records what the instance's Handler receives.
type received struct {
	mu     sync.Mutex
	total  int
	got    []scaler.Publication
	resets []string
	done   chan struct{} // closed once total publications arrived
}

func newReceived(total int) *received {
	return &received{total: total, done: make(chan struct{})}
}

func (r *received) handler() scaler.Handler {
	return scaler.Handler{
		Publication: func(p scaler.Publication) {
			r.mu.Lock()
			defer r.mu.Unlock()
			r.got = append(r.got, p)
			if len(r.got) == r.total {
				close(r.done)
			}
		},
		Reset: func(ch string, pos protocol.UID, err error) {
			r.mu.Lock()
			r.resets = append(r.resets, fmt.Sprintf("%s %s %v", ch, pos, err))
			r.mu.Unlock()
		},
	}
}

func (r *received) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.got)
}

// report prints the resets, then each publication as
// "P <seq> <proc> <publisher> <n>", then "DONE".
func (r *received) report() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	w := bufio.NewWriter(os.Stdout)
	for _, x := range r.resets {
		fmt.Fprintln(w, "RESET", x)
	}
	for _, p := range r.got {
		var b body
		if err := json.Unmarshal(p.Msg, &b); err != nil {
			return fmt.Errorf("publication %v: %w", p.UID, err)
		}
		fmt.Fprintln(w, "P", p.UID.Seq, b.Proc, b.W, b.N)
	}
	fmt.Fprintln(w, "DONE")
	return w.Flush()
}

// publishAll publishes c.count publications from each of c.publishers
// goroutines, each with an idempotency key and up to five attempts.
func publishAll(ctx context.Context, s *mongoredis.Scaler, c config) error {
	var wg sync.WaitGroup
	errs := make(chan error, c.publishers)
	for w := range c.publishers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := range c.count {
				msg, _ := json.Marshal(body{Proc: c.name, W: w, N: n})
				key := fmt.Sprintf("%s-%d-%d", c.name, w, n)
				var err error
				for attempt := 0; attempt < 5; attempt++ {
					if _, err = s.Publish(ctx, c.channel, "t", msg, scaler.PublishOptions{IdempotencyKey: key}); err == nil {
						break
					}
				}
				if err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	return <-errs
}
