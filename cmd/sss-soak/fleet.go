package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sss-go/sss/client"
	"github.com/sss-go/sss/protocol"
)

// delivery is one publication a subscription handed to the application.
type delivery struct {
	seq uint64
	id  int64 // payload id; -1 when the payload had none
	ok  bool  // uid parsed and of the subscription's epoch
}

// subRec records one subscription of one client: where it started and
// every delivery, in order.
type subRec struct {
	client  int
	channel string
	epoch   string // of the SUBSCRIBE reply's uid ("" if none)
	start   uint64 // its seq: deliveries are expected after it

	mu       sync.Mutex
	got      []delivery
	badUIDs  []string // uids that did not parse or had another epoch
	dropNext bool     // -drop-one: do not record the next delivery

	last           atomic.Uint64 // seq of the last delivery
	notRecoverable atomic.Int64
	changes        atomic.Int64 // status changes
	failed         atomic.Int64 // final statuses before the end (refused, ...)
}

// handler records a delivery (runs on the client's callback goroutine).
func (r *subRec) handler(msg json.RawMessage, uid string) {
	u, err := protocol.ParseUID(uid)
	d := delivery{id: payloadID(msg)}
	if err == nil && (r.epoch == "" || u.Epoch == r.epoch) {
		d.seq, d.ok = u.Seq, true
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.dropNext {
		r.dropNext = false
		return // the self-test's silent loss
	}
	r.got = append(r.got, d)
	if !d.ok {
		r.badUIDs = append(r.badUIDs, uid)
		return
	}
	if d.seq > r.last.Load() {
		r.last.Store(d.seq)
	}
}

// snapshot returns the deliveries recorded so far.
func (r *subRec) snapshot() ([]delivery, []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]delivery(nil), r.got...), append([]string(nil), r.badUIDs...)
}

// payloadID returns the "id" of a soak payload, -1 if there is none.
func payloadID(msg json.RawMessage) int64 {
	var p struct {
		ID *int64 `json:"id"`
	}
	if json.Unmarshal(msg, &p) != nil || p.ID == nil {
		return -1
	}
	return *p.ID
}

// clientRec is one Go client of the fleet and its recovery times.
type clientRec struct {
	idx  int
	c    *client.Client
	subs []*subRec

	ready atomic.Bool

	mu          sync.Mutex // the fields below; callbacks and the reporter
	downSince   time.Time  // zero while live
	maxRecovery time.Duration
}

// onStatus tracks drops and returns to ready (callback goroutine, so it
// runs after the recovered publications of the SYNC reply were handed
// over).
func (cr *clientRec) onStatus(s, old client.Status) {
	now := time.Now()
	cr.mu.Lock()
	defer cr.mu.Unlock()
	switch {
	case s == client.StatusReady:
		if !cr.downSince.IsZero() {
			cr.maxRecovery = max(cr.maxRecovery, now.Sub(cr.downSince))
			cr.downSince = time.Time{}
		}
		cr.ready.Store(true)
	case s == client.StatusClosed:
		// Closed by the soak at the end: not a drop.
		cr.ready.Store(false)
	case s.Final():
		// Booted or gave up: down for good.
		if cr.downSince.IsZero() {
			cr.downSince = now
		}
		cr.ready.Store(false)
	case old == client.StatusReady:
		cr.downSince = now
		cr.ready.Store(false)
	}
}

// recovery returns the longest time from a drop to ready, counting a
// drop still unrecovered up to now, and whether the client is down.
func (cr *clientRec) recovery() (time.Duration, bool) {
	cr.mu.Lock()
	defer cr.mu.Unlock()
	if !cr.downSince.IsZero() {
		return max(cr.maxRecovery, time.Since(cr.downSince)), true
	}
	return cr.maxRecovery, false
}

// fleet is every client of the soak.
type fleet struct {
	users    bool   // clients have a user id (and a user channel)
	failover string // failoverRandom or failoverRotate
	log      *slog.Logger
	clients  []*clientRec
	subs     map[string][]*subRec // by channel
}

// channelName is the name of channel i.
func channelName(i int) string { return fmt.Sprintf("room-%02d", i) }

// dialFleet dials cfg.clients clients, spread over the instances, each
// with the URLs of all three, and subscribes each to cfg.subsPerClient
// channels. It returns once every subscription is granted; nothing is
// published meanwhile, so each subscription's start is exact.
func dialFleet(ctx context.Context, cfg config, cl *cluster, log *slog.Logger) (*fleet, error) {
	f := &fleet{subs: map[string][]*subRec{}, users: cfg.users, failover: cfg.failover, log: log}
	for i := range cfg.clients {
		cr := &clientRec{idx: i}
		for j := range cfg.subsPerClient {
			ch := channelName((i*cfg.subsPerClient + j) % cfg.channels)
			cr.subs = append(cr.subs, &subRec{client: i, channel: ch})
		}
		f.clients = append(f.clients, cr)
	}
	if cfg.dropOne {
		f.clients[0].subs[0].dropNext = true
	}
	dctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	work := make(chan *clientRec)
	errs := make(chan error, len(f.clients))
	var wg sync.WaitGroup
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for cr := range work {
				errs <- f.dial(dctx, cl, cr)
			}
		}()
	}
	for _, cr := range f.clients {
		work <- cr
	}
	close(work)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			f.close()
			return nil, err
		}
	}
	for _, cr := range f.clients {
		for _, r := range cr.subs {
			f.subs[r.channel] = append(f.subs[r.channel], r)
		}
	}
	return f, nil
}

func (f *fleet) dial(ctx context.Context, cl *cluster, cr *clientRec) error {
	urls := cl.urls(cr.idx % numInstances)
	if f.users {
		for i := range urls {
			urls[i] += "?user=u" + strconv.Itoa(cr.idx)
		}
	}
	opts := client.Options{
		ReconnectBase: 100 * time.Millisecond,
		ReconnectCap:  2 * time.Second,
		// Generous: recovery on an instance where the channel is not
		// live reads the log (a scan per read on the test MongoDB,
		// served one at a time), and a reply that comes too late is
		// thrown away with all the reads it took.
		HandshakeTimeout: 15 * time.Second,
		Logger:           f.log.With("client", cr.idx),
		Setup:            func(c *client.Client) { c.OnStatusChange(cr.onStatus) },
	}
	if f.failover == failoverRotate {
		opts.URLs = urls[1:]
	} else {
		// A load balancer: each attempt after the first goes to any
		// instance.
		opts.SelectURL = func(attempt int) string {
			if attempt == 0 {
				return urls[0]
			}
			return urls[rand.IntN(len(urls))]
		}
	}
	c, err := client.Dial(ctx, urls[0], opts)
	if err != nil {
		return fmt.Errorf("client %d: %w", cr.idx, err)
	}
	cr.c = c
	for _, r := range cr.subs {
		sub, err := c.Subscribe(ctx, r.channel, nil)
		if err != nil {
			return fmt.Errorf("client %d: %w", cr.idx, err)
		}
		if u, err := protocol.ParseUID(sub.LastUID()); err == nil {
			r.epoch, r.start = u.Epoch, u.Seq
		}
		r.last.Store(r.start)
		sub.On("", r.handler)
		sub.OnStatusChange(func(s, _ client.SubStatus, _ error) {
			r.changes.Add(1)
			switch {
			case s == client.SubNotRecoverable:
				r.notRecoverable.Add(1)
			case s.Final() && s != client.SubClosed:
				r.failed.Add(1)
			}
		})
	}
	return nil
}

// readyCount returns how many clients are live.
func (f *fleet) readyCount() int {
	n := 0
	for _, cr := range f.clients {
		if cr.ready.Load() {
			n++
		}
	}
	return n
}

// statuses counts the clients not live by status, e.g. "syncing:3".
func (f *fleet) statuses() string {
	n := map[string]int{}
	for _, cr := range f.clients {
		if cr.c != nil && cr.c.Status() != client.StatusReady {
			n[cr.c.Status().String()]++
		}
	}
	keys := make([]string, 0, len(n))
	for k := range n {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s:%d", k, n[k])
	}
	return strings.Join(parts, ",")
}

// delivered returns the number of deliveries recorded.
func (f *fleet) delivered() int {
	n := 0
	for _, cr := range f.clients {
		for _, r := range cr.subs {
			r.mu.Lock()
			n += len(r.got)
			r.mu.Unlock()
		}
	}
	return n
}

// reconnects sums the clients' completed reconnections.
func (f *fleet) reconnects() uint64 {
	var n uint64
	for _, cr := range f.clients {
		if cr.c != nil {
			n += cr.c.Stats().Reconnects
		}
	}
	return n
}

// close closes every client and waits for its callbacks.
func (f *fleet) close() {
	var wg sync.WaitGroup
	for _, cr := range f.clients {
		if cr.c == nil {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = cr.c.Close()
		}()
	}
	wg.Wait()
}
