// Command sss-soak is the chaos soak of sss: three chat-like server
// instances as separate processes on the mongoredis scaler, hundreds of Go
// clients, steady publishers with idempotency keys, and a fault injector
// (instance SIGKILL, redis-server restart, client connections cut, an
// instance's Redis connection blackholed, an instance SIGSTOPped past its
// lease). After the run an independent checker reads the channel logs
// straight from MongoDB and compares them with what every client received
// and with every acknowledged publish. It prints one summary line and exits
// non-zero unless nothing was lost, duplicated, reordered or reported not
// recoverable.
//
//	go run ./cmd/sss-soak -duration 60s -lease-ttl 2s -min-faults 1   # short
//	go run ./cmd/sss-soak -duration 30m -min-faults 3                 # long
//
// See README.md in this directory for the flags and the summary line.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"
)

// Exit statuses.
const (
	exitPass        = 0   // every check passed
	exitFail        = 1   // a check failed (loss, duplicate, faults short, ...)
	exitSetup       = 2   // bad flags, or the cluster could not be set up
	exitInterrupted = 130 // Ctrl-C or SIGTERM
)

// instanceFlag as the first argument runs one server instance (the soak
// starts three of itself this way).
const instanceFlag = "-instance"

func main() {
	if len(os.Args) > 1 && os.Args[1] == instanceFlag {
		os.Exit(runInstance(os.Args[2:]))
	}
	cfg, err := parseFlags(os.Args[1:], os.Stderr)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(exitPass)
		}
		fmt.Fprintln(os.Stderr, "sss-soak:", err)
		os.Exit(exitSetup)
	}
	if !cfg.verbose {
		// go-redis logs every failed dial of the publisher's client while
		// redis-server restarts.
		redis.SetLogger(discardLogger{})
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	go func() {
		// After the first signal, a second one kills the soak at once
		// (its children die with it: parent-death signal).
		<-ctx.Done()
		stop()
	}()
	os.Exit(run(ctx, cfg, os.Stdout, os.Stderr))
}

// discardLogger drops go-redis's log lines.
type discardLogger struct{}

func (discardLogger) Printf(context.Context, string, ...any) {}

// config is what the command line sets.
type config struct {
	duration      time.Duration
	clients       int
	channels      int
	subsPerClient int
	rate          float64
	retention     int
	mongoPool     int
	minFaults     int
	faults        []string
	faultEvery    time.Duration
	leaseTTL      time.Duration
	probeTimeout  time.Duration
	heartbeat     time.Duration
	drain         time.Duration
	settle        time.Duration
	progress      time.Duration
	users         bool
	failover      string
	dropOne       bool
	keep          bool
	clientLog     string
	verbose       bool
}

// Failover policies of the clients (-failover).
const (
	failoverRandom = "random"
	failoverRotate = "rotate"
)

// Fault kinds, in rotation order.
var faultKinds = []string{"kill", "redis", "cut", "blackhole", "stop"}

func parseFlags(args []string, out io.Writer) (config, error) {
	var c config
	fs := flag.NewFlagSet("sss-soak", flag.ContinueOnError)
	fs.SetOutput(out)
	fs.DurationVar(&c.duration, "duration", 5*time.Minute, "how long publishers publish and faults are injected (the run takes longer: start-up, drain, settle, check)")
	fs.IntVar(&c.clients, "clients", 200, "number of Go clients (each with the URLs of all three instances)")
	fs.IntVar(&c.channels, "channels", 24, "number of channels")
	fs.IntVar(&c.subsPerClient, "subs", 3, "channels each client subscribes to")
	fs.Float64Var(&c.rate, "rate", 10, "publications per second, over all channels")
	fs.IntVar(&c.retention, "retention", 0, "publications kept per channel (0: the publications of 2 minutes at -rate, at least 50)")
	fs.IntVar(&c.mongoPool, "mongo-pool", 8, "MongoDB connections per instance and for the publisher (0: the driver's default, 100)")
	fs.IntVar(&c.minFaults, "min-faults", 3, "minimum count of each fault kind in -faults; fewer fails the run")
	faults := fs.String("faults", strings.Join(faultKinds, ","), "fault kinds to rotate through (comma-separated; \"none\" for none)")
	fs.DurationVar(&c.faultEvery, "fault-every", 0, "time from one fault's start to the next (0: spread so every kind reaches -min-faults within -duration, at most 30s)")
	fs.DurationVar(&c.leaseTTL, "lease-ttl", 10*time.Second, "instances' mongoredis LeaseTTL; a stopped instance stays stopped past it")
	fs.DurationVar(&c.probeTimeout, "probe-timeout", 3*time.Second, "instances' mongoredis ProbeTimeout; a blackhole lasts twice as long")
	fs.DurationVar(&c.heartbeat, "hb", 5*time.Second, "instances' heartbeat interval (clients notice a stopped instance after it plus 2.5 s)")
	fs.DurationVar(&c.drain, "drain", 30*time.Second, "after -duration, how long unacknowledged publishes keep being retried")
	fs.DurationVar(&c.settle, "settle", 90*time.Second, "after the drain, how long clients may take to be live and caught up")
	fs.DurationVar(&c.progress, "progress", 10*time.Second, "interval of progress lines on stderr")
	fs.StringVar(&c.failover, "failover", failoverRandom, "how a client picks the instance of each reconnection attempt: \""+failoverRandom+"\" (any of the three, like a load balancer) or \""+failoverRotate+"\" (the client's own failover: its URLs in turn)")
	fs.BoolVar(&c.users, "users", false, "give each client a user id, hence a user channel each instance it reaches must subscribe to (a log read per client on reconnection)")
	fs.BoolVar(&c.dropOne, "drop-one", false, "self-test: one client silently drops one delivery (the soak must report lost=1 and fail)")
	fs.BoolVar(&c.keep, "keep", false, "keep the temporary directory (service and instance logs) and an external MongoDB's database")
	fs.StringVar(&c.clientLog, "client-log", "", "write the clients' logs (level info: drops with their close codes, reconnections) to this file")
	fs.BoolVar(&c.verbose, "v", false, "verbose: print every anomaly found by the checker (else the first 20) and the publisher's Redis client logs")
	fs.Usage = func() {
		fmt.Fprintf(out, "usage: sss-soak [flags]\n\nA chaos soak of three sss instances on mongoredis with an independent checker.\n"+
			"It starts redis-server and the test MongoDB itself unless REDIS_URL and MONGO_URI are set.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	var err error
	if c.faults, err = parseFaults(*faults); err != nil {
		return c, err
	}
	return c, c.validate()
}

func parseFaults(s string) ([]string, error) {
	s = strings.TrimSpace(s)
	if s == "" || s == "none" {
		return nil, nil
	}
	var out []string
	seen := map[string]bool{}
	for _, k := range strings.Split(s, ",") {
		k = strings.TrimSpace(k)
		known := false
		for _, f := range faultKinds {
			known = known || f == k
		}
		if !known {
			return nil, fmt.Errorf("-faults: unknown kind %q (kinds: %s)", k, strings.Join(faultKinds, ","))
		}
		if !seen[k] {
			seen[k] = true
			out = append(out, k)
		}
	}
	return out, nil
}

func (c config) validate() error {
	switch {
	case c.duration <= 0:
		return errors.New("-duration must be positive")
	case c.clients < 1:
		return errors.New("-clients must be at least 1")
	case c.channels < 1:
		return errors.New("-channels must be at least 1")
	case c.subsPerClient < 1 || c.subsPerClient > c.channels:
		return errors.New("-subs must be between 1 and -channels")
	case c.rate <= 0:
		return errors.New("-rate must be positive")
	case c.failover != failoverRandom && c.failover != failoverRotate:
		return fmt.Errorf("-failover must be %s or %s", failoverRandom, failoverRotate)
	case c.retention < 0 || c.mongoPool < 0:
		return errors.New("-retention and -mongo-pool must not be negative")
	case c.minFaults < 0:
		return errors.New("-min-faults must not be negative")
	case c.leaseTTL < 500*time.Millisecond:
		return errors.New("-lease-ttl must be at least 500ms")
	case c.probeTimeout <= 0 || c.heartbeat <= 0:
		return errors.New("-probe-timeout and -hb must be positive")
	case c.drain < 0 || c.settle <= 0 || c.progress <= 0:
		return errors.New("-drain must not be negative; -settle and -progress must be positive")
	}
	return nil
}

// retentionCount is the number of publications kept per channel.
func (c config) retentionCount() int {
	if c.retention > 0 {
		return c.retention
	}
	return max(50, int(math.Ceil(c.rate/float64(c.channels)*120)))
}

// stopFor is how long a "stop" fault keeps an instance stopped: past its
// lease, with a margin.
func (c config) stopFor() time.Duration {
	return c.leaseTTL + max(time.Second, c.leaseTTL/2)
}

// blackholeFor is how long a "blackhole" fault lasts: past the probe
// timeout, so the instance notices and replaces its connections.
func (c config) blackholeFor() time.Duration { return 2 * c.probeTimeout }

// maxFaultEvery bounds the automatic time between faults: a long run
// injects more than the minimum.
const maxFaultEvery = 30 * time.Second

// interval is the time from one fault's start to the next.
func (c config) interval() time.Duration {
	if c.faultEvery > 0 {
		return c.faultEvery
	}
	if len(c.faults) == 0 {
		return maxFaultEvery
	}
	// Leave the first and last 5% quiet (and at least a second).
	window := c.duration - 2*max(time.Second, c.duration/20)
	every := window / time.Duration(len(c.faults)*max(c.minFaults, 1))
	return min(max(every, 100*time.Millisecond), maxFaultEvery)
}
