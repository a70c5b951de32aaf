package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
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
	s := &session{cfg: cfg, began: time.Now(), errw: errw}
	s.logf("starting: %d clients on %d channels (%d each), %.0f publications/s for %v, faults %s (at least %d each, one every %v), lease %v, retention %d",
		cfg.clients, cfg.channels, cfg.subsPerClient, cfg.rate, cfg.duration, faultList(cfg.faults), cfg.minFaults, cfg.interval(), cfg.leaseTTL, cfg.retentionCount())
	defer s.tearDown()
	if err := s.setUp(ctx); err != nil {
		return s.fail(ctx, err)
	}
	if !soak(ctx, s.cfg, s.pubs, s.inj, s.fl, s.st, s.logf) {
		s.logf("interrupted")
		return exitInterrupted
	}
	s.pubs.close()
	if !settle(ctx, s.cfg, s.st, s.fl, s.logf) && ctx.Err() != nil {
		s.logf("interrupted")
		return exitInterrupted
	}
	s.fl.close()
	s.stopFollow()
	if err := s.st.pollRetry(ctx); err != nil {
		return s.fail(ctx, fmt.Errorf("read the stored logs: %w", err))
	}
	res := check(s.st.logs(), s.pubs.led, s.fl)
	short, faultErrs := s.inj.short()
	ok, why := res.passed(minAckRatio, short, faultErrs)
	res.print(out, s.inj.summary(), cfg.verbose)
	if !ok {
		s.logf("FAIL: %s", strings.Join(why, "; "))
		return exitFail
	}
	s.logf("PASS in %v", time.Since(s.began).Round(time.Second))
	return exitPass
}

// session is one run's parts, torn down in reverse order.
type session struct {
	cfg   config
	began time.Time
	errw  io.Writer
	logMu sync.Mutex

	cl         *cluster
	st         *store
	pubs       *publishers
	fl         *fleet
	inj        *injector
	stopFollow func() // stops the checker's reads and waits for them
	closeLog   func() error
}

// logf writes a progress line with the time since the start.
func (s *session) logf(format string, args ...any) {
	s.logMu.Lock()
	defer s.logMu.Unlock()
	fmt.Fprintf(s.errw, "%6.1fs  %s\n", time.Since(s.began).Seconds(), fmt.Sprintf(format, args...))
}

// fail reports a setup error (or the interruption that caused it).
func (s *session) fail(ctx context.Context, err error) int {
	if ctx.Err() != nil {
		s.logf("interrupted")
		return exitInterrupted
	}
	s.logf("%v", err)
	return exitSetup
}

// setUp starts the cluster, the checker's reads, the publishers and the
// clients.
func (s *session) setUp(ctx context.Context) error {
	var err error
	if s.cl, err = startCluster(ctx, s.cfg, s.logf); err != nil {
		return fmt.Errorf("start: %w", err)
	}
	if s.cl.redisExt && slices.Contains(s.cfg.faults, "redis") {
		s.cfg.faults = slices.DeleteFunc(slices.Clone(s.cfg.faults), func(k string) bool { return k == "redis" })
		s.cl.cfg = s.cfg
	}
	s.logf("cluster up: redis %s, mongo %s, instances %s", s.cl.redisURL, s.cl.mongoURI, strings.Join(s.cl.urls(0), " "))
	if s.st, err = openStore(s.cl); err != nil {
		return err
	}
	// The checker reads the logs every few seconds, before retention
	// trims them.
	fctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.st.follow(fctx, 2*time.Second)
	}()
	s.stopFollow = func() {
		cancel()
		<-done
	}
	if s.pubs, err = newPublishers(ctx, s.cfg, s.cl); err != nil {
		return err
	}
	clientLog := slog.New(slog.NewTextHandler(io.Discard, nil))
	if s.cfg.clientLog != "" {
		f, err := os.Create(s.cfg.clientLog)
		if err != nil {
			return err
		}
		s.closeLog = f.Close
		clientLog = slog.New(slog.NewTextHandler(f, nil))
	}
	if s.fl, err = dialFleet(ctx, s.cfg, s.cl, clientLog); err != nil {
		return fmt.Errorf("clients: %w", err)
	}
	s.logf("%d clients subscribed", len(s.fl.clients))
	s.inj = newInjector(s.cfg, s.cl, s.logf)
	return nil
}

// tearDown stops whatever setUp started; each part may be stopped already.
func (s *session) tearDown() {
	if s.fl != nil {
		s.fl.close()
	}
	if s.closeLog != nil {
		_ = s.closeLog()
	}
	if s.pubs != nil {
		s.pubs.close()
	}
	if s.stopFollow != nil {
		s.stopFollow()
	}
	if s.st != nil {
		if s.cl.mongoExt && !s.cfg.keep {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			_ = s.st.dropDatabase(ctx)
			cancel()
		}
		s.st.close()
	}
	if s.cl != nil {
		s.logf("stopping the cluster")
		s.cl.close()
		if s.cfg.keep {
			s.logf("kept %s", s.cl.dir)
		}
	}
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
		logf("progress: published=%d acknowledged=%d delivered=%d clients_live=%d/%d conns=%s reconnects=%d faults=%s log_reads=%d/%d",
			published, acked, fl.delivered(), fl.readyCount(), len(fl.clients), inj.cl.conns(), fl.reconnects(), inj.summary(), reads-errs, reads)
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
