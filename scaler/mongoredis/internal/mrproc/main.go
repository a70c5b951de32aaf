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
	if err := run(*mongoURI, *redisURL, *db, *prefix, *channel, *name, *publishers, *count, *total, *timeout); err != nil {
		fmt.Println("ERR", err)
		os.Exit(1)
	}
}

func run(mongoURI, redisURL, db, prefix, channel, name string, publishers, count, total int, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	s, err := mongoredis.New(ctx, mongoredis.Options{
		MongoURI: mongoURI, RedisURL: redisURL, Database: db, Prefix: prefix,
		CheckInterval: 300 * time.Millisecond, GapWait: 30 * time.Millisecond,
		WriteTimeout: 20 * time.Second, Logger: logger,
	})
	if err != nil {
		return err
	}
	defer s.Close(context.Background())
	var (
		mu     sync.Mutex
		got    []scaler.Publication
		resets []string
		done   = make(chan struct{})
	)
	err = s.Start(ctx, scaler.Handler{
		Publication: func(p scaler.Publication) {
			mu.Lock()
			defer mu.Unlock()
			got = append(got, p)
			if len(got) == total {
				close(done)
			}
		},
		Reset: func(ch string, pos protocol.UID, err error) {
			mu.Lock()
			resets = append(resets, fmt.Sprintf("%s %s %v", ch, pos, err))
			mu.Unlock()
		},
	})
	if err != nil {
		return err
	}
	pos, err := s.Subscribe(ctx, channel)
	if err != nil {
		return err
	}
	fmt.Println("READY", pos)
	if _, err := bufio.NewReader(os.Stdin).ReadString('\n'); err != nil {
		return fmt.Errorf("waiting for the start line: %w", err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, publishers)
	for w := range publishers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := range count {
				msg, _ := json.Marshal(body{Proc: name, W: w, N: n})
				key := fmt.Sprintf("%s-%d-%d", name, w, n)
				var err error
				for attempt := 0; attempt < 5; attempt++ {
					if _, err = s.Publish(ctx, channel, "t", msg, scaler.PublishOptions{IdempotencyKey: key}); err == nil {
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
	if err := <-errs; err != nil {
		return fmt.Errorf("publish: %w", err)
	}
	select {
	case <-done:
	case <-ctx.Done():
		mu.Lock()
		n := len(got)
		mu.Unlock()
		return fmt.Errorf("received %d of %d publications: %w", n, total, ctx.Err())
	}
	mu.Lock()
	defer mu.Unlock()
	w := bufio.NewWriter(os.Stdout)
	for _, r := range resets {
		fmt.Fprintln(w, "RESET", r)
	}
	for _, p := range got {
		var b body
		if err := json.Unmarshal(p.Msg, &b); err != nil {
			return fmt.Errorf("publication %v: %w", p.UID, err)
		}
		fmt.Fprintln(w, "P", p.UID.Seq, b.Proc, b.W, b.N)
	}
	fmt.Fprintln(w, "DONE")
	return w.Flush()
}
