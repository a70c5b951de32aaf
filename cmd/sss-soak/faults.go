package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"syscall"
	"time"
)

// errCutShort: the run ended before the fault lasted its full time (a
// blackhole past the probe timeout, a stop past the lease); it is healed
// and not counted.
var errCutShort = errors.New("cut short by the end of the run")

// injector injects faults one at a time, rotating kinds and instances.
type injector struct {
	cfg  config
	cl   *cluster
	logf func(string, ...any)

	mu     sync.Mutex
	counts map[string]int
	errs   []string
}

func newInjector(cfg config, cl *cluster, logf func(string, ...any)) *injector {
	return &injector{cfg: cfg, cl: cl, logf: logf, counts: map[string]int{}}
}

// run injects faults until ctx ends; a fault under way is healed first
// (the instance restarted or resumed, Redis back, the blackhole off)
// unless heal ends too (Ctrl-C). Fault n starts at warm-up + n*interval,
// or when fault n-1 is healed if that is later.
func (f *injector) run(ctx, heal context.Context) {
	if len(f.cfg.faults) == 0 {
		return
	}
	every := f.cfg.interval()
	start := time.Now().Add(max(time.Second, f.cfg.duration/20))
	for n := 0; ; n++ {
		if !sleepCtx(ctx, time.Until(start.Add(time.Duration(n)*every))) {
			return
		}
		kind := f.cfg.faults[n%len(f.cfg.faults)]
		in := f.cl.insts[n%numInstances]
		t0 := time.Now()
		err := f.inject(ctx, heal, kind, in)
		took := time.Since(t0).Round(time.Millisecond)
		f.mu.Lock()
		switch {
		case err == nil:
			f.counts[kind]++
		case !errors.Is(err, errCutShort):
			f.errs = append(f.errs, fmt.Sprintf("%s on instance%d: %v", kind, in.idx, err))
		}
		f.mu.Unlock()
		switch {
		case err == nil:
			f.logf("fault %d %s instance%d done in %v", n+1, kind, in.idx, took)
		case errors.Is(err, errCutShort):
			f.logf("fault %d %s instance%d cut short after %v by the end of the run (not counted)", n+1, kind, in.idx, took)
		default:
			f.logf("fault %d %s instance%d FAILED after %v: %v", n+1, kind, in.idx, took, err)
		}
	}
}

// inject performs one fault and heals it. When ctx ends, the fault is cut
// short and healed at once; heal bounds the healing.
func (f *injector) inject(ctx, heal context.Context, kind string, in *instance) error {
	switch kind {
	case "kill":
		in.process().Kill()
		sleepCtx(ctx, time.Second)
		return f.cl.start(heal, in)
	case "redis":
		return f.restartRedis(ctx, heal)
	case "cut":
		in.clientProxy.CutAll()
		return nil
	case "blackhole":
		in.redisProxy.Blackhole(true)
		full := sleepCtx(ctx, f.cfg.blackholeFor())
		in.redisProxy.Blackhole(false)
		if !full {
			return errCutShort
		}
		return nil
	case "stop":
		p := in.process()
		if err := p.Signal(syscall.SIGSTOP); err != nil {
			return err
		}
		full := sleepCtx(ctx, f.cfg.stopFor())
		if err := p.Signal(syscall.SIGCONT); err != nil || full {
			return err
		}
		return errCutShort
	}
	return fmt.Errorf("unknown fault kind %q", kind)
}

// restartRedis kills redis-server and starts it again, empty, on the same
// port (retrying for a while if the port is taken meanwhile).
func (f *injector) restartRedis(ctx, heal context.Context) error {
	if f.cl.redis == nil {
		return fmt.Errorf("the Redis of REDIS_URL cannot be restarted")
	}
	f.cl.redis.Process().Kill()
	sleepCtx(ctx, 500*time.Millisecond)
	var err error
	for attempt := 0; attempt < 10; attempt++ {
		if err = f.cl.redis.Start(); err == nil || !sleepCtx(heal, time.Second) {
			return err
		}
	}
	return err
}

// summary returns "kill:N,redis:N,cut:N,blackhole:N,stop:N".
func (f *injector) summary() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	parts := make([]string, len(faultKinds))
	for i, k := range faultKinds {
		parts[i] = fmt.Sprintf("%s:%d", k, f.counts[k])
	}
	return strings.Join(parts, ",")
}

// short returns the fault kinds of -faults injected fewer than
// -min-faults times, and the faults that failed.
func (f *injector) short() (short, failed []string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, k := range f.cfg.faults {
		if n := f.counts[k]; n < f.cfg.minFaults {
			short = append(short, fmt.Sprintf("%s injected %d times, minimum %d", k, n, f.cfg.minFaults))
		}
	}
	return short, append([]string(nil), f.errs...)
}
