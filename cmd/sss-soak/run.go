package main

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"time"
)

// minAckRatio is the share of publishes that must be acknowledged.
const minAckRatio = 0.99

// run runs the soak and returns the exit status. The summary goes to out,
// progress and errors to errw.
func run(ctx context.Context, cfg config, out, errw io.Writer) int {
	began := time.Now()
	var logMu sync.Mutex
	logf := func(format string, args ...any) {
		logMu.Lock()
		defer logMu.Unlock()
		fmt.Fprintf(errw, "%6.1fs  %s\n", time.Since(began).Seconds(), fmt.Sprintf(format, args...))
	}
	fail := func(what string, err error) int {
		if ctx.Err() != nil {
			logf("interrupted")
			return exitInterrupted
		}
		logf("%s: %v", what, err)
		return exitSetup
	}
	logf("starting: %d clients on %d channels (%d each), %.0f publications/s for %v, faults %s (at least %d each, one every %v), lease %v",
		cfg.clients, cfg.channels, cfg.subsPerClient, cfg.rate, cfg.duration, faultList(cfg.faults), cfg.minFaults, cfg.interval(), cfg.leaseTTL)
	cl, err := startCluster(ctx, cfg, logf)
	if err != nil {
		return fail("start", err)
	}
	defer func() {
		logf("stopping the cluster")
		cl.close()
		if cfg.keep {
			logf("kept %s", cl.dir)
		}
	}()
	if cl.redisExt && slices.Contains(cfg.faults, "redis") {
		cfg.faults = slices.DeleteFunc(slices.Clone(cfg.faults), func(k string) bool { return k == "redis" })
		cl.cfg = cfg
	}
	logf("cluster up: redis %s, mongo %s, instances %s", cl.redisURL, cl.mongoURI, strings.Join(cl.urls(0), " "))
	st, err := openStore(cl)
	if err != nil {
		return fail("checker", err)
	}
	defer st.close()
	if cl.mongoExt && !cfg.keep {
		defer func() {
			dctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			_ = st.dropDatabase(dctx)
		}()
	}
	// The checker reads the logs every few seconds, before retention
	// trims them.
	fctx, stopFollow := context.WithCancel(ctx)
	followDone := make(chan struct{})
	go func() {
		defer close(followDone)
		st.follow(fctx, 2*time.Second)
	}()
	defer func() {
		stopFollow()
		<-followDone
	}()
	pubs, err := newPublishers(ctx, cfg, cl)
	if err != nil {
		return fail("publishers", err)
	}
	pubsOpen := true
	defer func() {
		if pubsOpen {
			pubs.close()
		}
	}()
	fl, err := dialFleet(ctx, cfg, cl)
	if err != nil {
		return fail("clients", err)
	}
	defer fl.close()
	logf("%d clients subscribed", len(fl.clients))

	inj := newInjector(cfg, cl, logf)
	if !soak(ctx, cfg, pubs, inj, fl, st, logf) {
		logf("interrupted")
		return exitInterrupted
	}
	pubs.close()
	pubsOpen = false
	if !settle(ctx, cfg, st, fl, logf) && ctx.Err() != nil {
		logf("interrupted")
		return exitInterrupted
	}
	fl.close()
	stopFollow()
	<-followDone
	if err := st.pollRetry(ctx); err != nil {
		return fail("read the stored logs", err)
	}
	res := check(st.logs(), pubs.led, fl)
	short, faultErrs := inj.short()
	ok, why := res.passed(minAckRatio, short, faultErrs)
	res.print(out, inj.summary(), cfg.verbose)
	if !ok {
		logf("FAIL: %s", strings.Join(why, "; "))
		return exitFail
	}
	logf("PASS in %v", time.Since(began).Round(time.Second))
	return exitPass
}

func faultList(kinds []string) string {
	if len(kinds) == 0 {
		return "none"
	}
	return strings.Join(kinds, ",")
}

// soak publishes and injects faults for cfg.duration, then stops the
// faults (healed) and lets unacknowledged publishes retry for cfg.drain.
// It reports false if ctx ended (interrupted).
func soak(ctx context.Context, cfg config, pubs *publishers, inj *injector, fl *fleet, st *store, logf func(string, ...any)) bool {
	stopCtx, stopPub := context.WithTimeout(ctx, cfg.duration)
	defer stopPub()
	hard, stopHard := context.WithCancel(ctx)
	defer stopHard()
	pubs.start(stopCtx, hard)
	injDone := make(chan struct{})
	go func() {
		defer close(injDone)
		inj.run(stopCtx, ctx)
	}()
	progDone := make(chan struct{})
	progCtx, stopProg := context.WithCancel(ctx)
	go func() {
		defer close(progDone)
		progress(progCtx, cfg.progress, pubs, inj, fl, st, logf)
	}()
	defer func() {
		stopProg()
		<-progDone
	}()
	<-stopCtx.Done()
	logf("publishing stopped; stopping the faults (the last one is healed)")
	<-injDone
	pubDone := make(chan struct{})
	go func() {
		pubs.wait()
		close(pubDone)
	}()
	t := time.NewTimer(cfg.drain)
	defer t.Stop()
	select {
	case <-pubDone:
	case <-t.C:
		logf("drain: %v passed; unacknowledged publishes stop retrying", cfg.drain)
		stopHard()
		<-pubDone
	case <-ctx.Done():
		<-pubDone
	}
	published, acked := pubs.led.counts()
	logf("publishers done: published=%d acknowledged=%d faults=%s", published, acked, inj.summary())
	return ctx.Err() == nil
}

// progress logs the counts every interval until ctx ends.
func progress(ctx context.Context, every time.Duration, pubs *publishers, inj *injector, fl *fleet, st *store, logf func(string, ...any)) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		published, acked := pubs.led.counts()
		reads, errs := st.stats()
		logf("progress: published=%d acknowledged=%d delivered=%d clients_live=%d/%d reconnects=%d faults=%s log_reads=%d/%d",
			published, acked, fl.delivered(), fl.readyCount(), len(fl.clients), fl.reconnects(), inj.summary(), reads-errs, reads)
	}
}

// settle waits, at most cfg.settle, until every client is live and every
// subscription has delivered up to its channel's last stored publication.
// It reports whether they settled.
func settle(ctx context.Context, cfg config, st *store, fl *fleet, logf func(string, ...any)) bool {
	deadline := time.Now().Add(cfg.settle)
	start := time.Now()
	for {
		behind, down, err := lagging(ctx, st, fl)
		switch {
		case err == nil && behind == 0 && down == 0:
			logf("settled in %v", time.Since(start).Round(time.Millisecond))
			return true
		case time.Now().After(deadline):
			logf("not settled after %v: %d subscriptions behind, %d clients not live (%s) (err %v)", cfg.settle, behind, down, fl.statuses(), err)
			return false
		}
		if !sleepCtx(ctx, time.Second) {
			return false
		}
	}
}

// lagging counts the subscriptions behind their channel's stored log and
// the clients not live.
func lagging(ctx context.Context, st *store, fl *fleet) (behind, down int, err error) {
	if err := st.poll(ctx); err != nil {
		return 0, 0, err
	}
	logs := st.logs()
	for ch, subs := range fl.subs {
		last := logs[ch].lastSeq()
		for _, s := range subs {
			if s.last.Load() < last {
				behind++
			}
		}
	}
	return behind, len(fl.clients) - fl.readyCount(), nil
}
