package mongoredis

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sss-go/sss/scaler"
)

// Shared state in Redis, under the instance's lease. A lease is named
// "<instance id>:<token>"; the token is new for each lease, so entries
// written under an ended lease never count again, even when a restarted
// process reuses the instance id.
//
//	<prefix>:instances              sorted set: lease -> expiry (Redis clock, ms)
//	<prefix>:pr:{<channel>}:<lease> hash: member id -> member JSON
//	<prefix>:us:<lease>             set: user ids
//
// A lease is live while its score is in the future. Every renewal (each
// LeaseTTL/3) moves the score LeaseTTL ahead, removes the ended leases
// from the sorted set, and, in one pipeline, gives every key of the lease
// a time to live of LeaseTTL again and writes what is dirty (see held), so
// a failed Join, Leave, AddUser or RemoveUser is made good at the next
// renewal. A crashed instance's keys expire within LeaseTTL and its lease
// leaves the sorted set at the next renewal of any other instance; nothing
// sweeps. Readers list the live leases, then read their keys of the
// channel (one pipeline; the channel's keys share a hash slot). An
// instance that finds its lease ended (paused, Redis restarted) takes a
// new one and writes everything it holds again.

// renewScript extends the lease ARGV[1] by ARGV[2] ms; with ARGV[3] = "0"
// only while it is still live (else it returns 0: the lease ended), with
// "1" in any case (a new lease). It drops ended leases and lets the sorted
// set expire with its last lease.
var renewScript = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if ARGV[3] ~= '1' then
  local cur = redis.call('ZSCORE', KEYS[1], ARGV[1])
  if not cur or tonumber(cur) <= now then return 0 end
end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local top = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
redis.call('PEXPIREAT', KEYS[1], top[2])
return 1`)

// liveScript returns the live leases.
var liveScript = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
return redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. string.format('%.0f', now), '+inf')`)

// applyScript changes one per-instance key and sets its time to live, in
// one step (so no key is ever left without one). KEYS[1] is a hash
// (ARGV[1] = "h") or a set ("s"); ARGV[2] the time to live in ms; ARGV[3]
// the number n of entries to add, then the n entries (field and value for
// a hash, member for a set), then the fields or members to remove. It
// returns 1 when the key exists afterwards.
var applyScript = redis.NewScript(`
local hash = ARGV[1] == 'h'
local last = 3 + (hash and 2 or 1) * tonumber(ARGV[3])
if last > 3 then
  redis.call(hash and 'HSET' or 'SADD', KEYS[1], unpack(ARGV, 4, last))
end
if #ARGV > last then
  redis.call(hash and 'HDEL' or 'SREM', KEYS[1], unpack(ARGV, last + 1))
end
return redis.call('PEXPIRE', KEYS[1], ARGV[2])`)

// maxApply bounds the entries of one applyScript call (Lua's unpack has a
// limit); a larger change takes several calls.
const maxApply = 256

// leases is the instance's lease and what it holds under it: the
// presence members and users (held.go), written to Redis and renewed.
type leases struct {
	rdb    redis.UniversalClient
	run    *group
	out    *sink
	id     string // the instance id
	prefix string
	ttl    time.Duration

	mu    sync.Mutex // token, held
	token string     // the lease is "<id>:<token>"
	held  held       // presence and users held under the lease

	ok     atomic.Bool   // the lease is held (Health)
	paused atomic.Bool   // renewals stopped (fault injection)
	resume chan struct{} // renew at once (fault injection)
}

func newLeases(rdb redis.UniversalClient, run *group, out *sink, o *Options, id string) *leases {
	return &leases{
		rdb:    rdb,
		run:    run,
		out:    out,
		id:     id,
		prefix: o.Prefix,
		ttl:    o.LeaseTTL,
		token:  newID(),
		held:   newHeld(),
		resume: make(chan struct{}, 1),
	}
}

// leaseInstance returns the instance id of a lease name.
func leaseInstance(lease string) string {
	id, _, _ := strings.Cut(lease, ":")
	return id
}

func (ls *leases) instancesKey() string { return ls.prefix + ":instances" }

func (ls *leases) presenceKey(ch, lease string) string {
	return ls.prefix + ":pr:{" + ch + "}:" + lease
}

func (ls *leases) usersKey(lease string) string { return ls.prefix + ":us:" + lease }

// planKey returns the key p is about under lease, and its kind for
// applyScript ("h": a hash of presence members, "s": the set of users).
func (ls *leases) planKey(p *keyPlan, lease string) (key, kind string) {
	if p.users {
		return ls.usersKey(lease), "s"
	}
	return ls.presenceKey(p.channel, lease), "h"
}

func (ls *leases) ttlArg() string { return strconv.FormatInt(ls.ttl.Milliseconds(), 10) }

// leaseLocked returns the current lease's name; the caller holds mu.
func (ls *leases) leaseLocked() string { return ls.id + ":" + ls.token }

func (ls *leases) current() string {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	return ls.leaseLocked()
}

// start takes the lease (writing what is held) and runs the renewals.
func (ls *leases) start(ctx context.Context) error {
	if err := ls.register(ctx); err != nil {
		return err
	}
	ls.ok.Store(true)
	ls.run.spawn(ls.loop)
	return nil
}

// loop renews the lease every LeaseTTL/3 (and at once after a resume).
func (ls *leases) loop() {
	t := time.NewTicker(ls.ttl / 3)
	defer t.Stop()
	for {
		select {
		case <-ls.run.ctx.Done():
			return
		case <-t.C:
		case <-ls.resume:
		}
		if ls.paused.Load() {
			continue
		}
		ls.renew()
	}
}

// pause stops the renewals; unpause resumes them, at once.
func (ls *leases) pause() { ls.paused.Store(true) }

func (ls *leases) unpause() {
	ls.paused.Store(false)
	select {
	case ls.resume <- struct{}{}:
	default:
	}
}

func (ls *leases) renew() {
	ctx, cancel := context.WithTimeout(ls.run.ctx, ls.ttl/3)
	defer cancel()
	lease := ls.current()
	ok, err := renewScript.Run(ctx, ls.rdb, []string{ls.instancesKey()}, lease, ls.ttlArg(), "0").Int()
	if err != nil {
		if ls.ok.Swap(false) {
			ls.out.event(scaler.EventBackendError, "", 0, opError("renew lease", unavailable("lease script", err)))
		}
		return
	}
	if ok == 1 {
		ls.ok.Store(true)
		if err := ls.sync(ctx); err != nil {
			ls.out.event(scaler.EventBackendError, "", 0, opError("renew lease", err))
		}
		return
	}
	// The lease ended (paused process, Redis restarted): take a new one
	// and write again everything held under it.
	ls.mu.Lock()
	ls.token = newID()
	ls.mu.Unlock()
	if err := ls.register(ctx); err != nil {
		ls.ok.Store(false)
		ls.out.event(scaler.EventBackendError, "", 0, opError("renew lease", err))
		return
	}
	ls.ok.Store(true)
	ls.out.logger.Warn("sss/mongoredis: lease was lost; re-registered presence and users")
	ls.out.event(scaler.EventLeaseLost, "", 0, nil)
}

// register writes every presence and user entry held under the current
// lease, then makes the lease live (so others see the entries at once).
func (ls *leases) register(ctx context.Context) error {
	ls.mu.Lock()
	ls.held.markAll()
	lease := ls.leaseLocked()
	ls.mu.Unlock()
	// A new lease may follow a Redis restart, which lost the scripts:
	// load the one sync pipelines, so that its first pipeline need not be
	// run twice.
	_ = applyScript.Load(ctx, ls.rdb).Err()
	syncErr := ls.sync(ctx)
	if err := renewScript.Run(ctx, ls.rdb, []string{ls.instancesKey()}, lease, ls.ttlArg(), "1").Err(); err != nil {
		return unavailable("register lease", err)
	}
	if syncErr != nil {
		// The lease is live; what failed is written at the next renewal.
		ls.out.event(scaler.EventBackendError, "", 0, opError("register lease", syncErr))
	}
	return nil
}

// keyOp is the Redis side of one keyPlan.
type keyOp struct {
	plan keyPlan
	cmds []redis.Cmder
}

// result reports whether every command of op succeeded, and whether the key
// exists afterwards (its time to live was set).
func (op *keyOp) result() (ok, exists bool) {
	for _, c := range op.cmds {
		if c.Err() != nil {
			return false, false
		}
	}
	switch c := op.cmds[len(op.cmds)-1].(type) {
	case *redis.BoolCmd:
		return true, c.Val()
	case *redis.Cmd:
		n, err := c.Int()
		return err == nil, n == 1
	}
	return true, false
}

// sync brings Redis to what this instance holds under its lease: it writes
// the dirty entries and refreshes every key's time to live, in one
// pipeline. A key found missing although it should hold entries (its
// time to live ran out) has them written again in a second round.
func (ls *leases) sync(ctx context.Context) error {
	var err error
	for round := 0; round < 2; round++ {
		var again bool
		again, err = ls.syncRound(ctx)
		if err != nil || !again {
			break
		}
	}
	return err
}

// syncRound is one round of sync; it reports whether a key must be
// written again.
func (ls *leases) syncRound(ctx context.Context) (bool, error) {
	ls.mu.Lock()
	lease := ls.leaseLocked()
	plans := ls.held.plan()
	ls.mu.Unlock()
	if len(plans) == 0 {
		return false, nil
	}
	ops := make([]keyOp, len(plans))
	for i := range plans {
		ops[i].plan = plans[i]
	}
	err := ls.runOps(ctx, lease, ops)
	ls.mu.Lock()
	defer ls.mu.Unlock()
	if ls.leaseLocked() != lease {
		return false, err // a new lease rewrites everything anyway
	}
	again := false
	for i := range ops {
		ok, exists := ops[i].result()
		p := &ops[i].plan
		ls.held.settlePlan(p, ok)
		if set := ls.held.set(p); ok && !exists && set != nil && set.markLive() {
			again = true
		}
	}
	return again, err
}

// runOps queues each op's commands in one pipeline and runs it; when
// Redis lost the scripts (restarted), it loads them and runs it again.
func (ls *leases) runOps(ctx context.Context, lease string, ops []keyOp) error {
	for attempt := 0; ; attempt++ {
		pipe := ls.rdb.Pipeline()
		for i := range ops {
			ops[i].cmds = ls.queueOp(ctx, pipe, lease, &ops[i].plan)
		}
		_, err := pipe.Exec(ctx)
		if err == nil {
			return nil
		}
		if attempt > 0 || !noScript(ops) {
			return unavailable("sync presence and users", err)
		}
		if err := applyScript.Load(ctx, ls.rdb).Err(); err != nil {
			return unavailable("load script", err)
		}
	}
}

func noScript(ops []keyOp) bool {
	for i := range ops {
		for _, c := range ops[i].cmds {
			if err := c.Err(); err != nil && strings.HasPrefix(err.Error(), "NOSCRIPT") {
				return true
			}
		}
	}
	return false
}

// queueOp queues what p does to its key: a refresh of the time to live,
// or applyScript calls writing the dirty entries.
func (ls *leases) queueOp(ctx context.Context, pipe redis.Pipeliner, lease string, p *keyPlan) []redis.Cmder {
	key, kind := ls.planKey(p, lease)
	if len(p.writes) == 0 {
		return []redis.Cmder{pipe.PExpire(ctx, key, ls.ttl)}
	}
	var cmds []redis.Cmder
	for from := 0; from < len(p.writes); from += maxApply {
		ws := p.writes[from:min(from+maxApply, len(p.writes))]
		cmds = append(cmds, applyScript.EvalSha(ctx, pipe, []string{key}, applyArgs(kind, ls.ttlArg(), ws)...))
	}
	return cmds
}

// applyArgs builds applyScript's arguments for writes ws.
func applyArgs(kind, ttl string, ws []write) []any {
	args := []any{kind, ttl, 0}
	n := 0
	for _, w := range ws {
		if w.live {
			args = append(args, w.id)
			if kind == "h" {
				args = append(args, w.val)
			}
			n++
		}
	}
	for _, w := range ws {
		if !w.live {
			args = append(args, w.id)
		}
	}
	args[2] = n
	return args
}

// change records one change of what is held (Join, Leave, AddUser,
// RemoveUser): f makes it under the lock and returns its write, or false
// when Redis need not learn of it. The write goes to p's key under the
// current lease at once (writeEntry).
func (ls *leases) change(ctx context.Context, f func(h *held) (write, bool), p keyPlan) error {
	ls.mu.Lock()
	w, changed := f(&ls.held)
	lease := ls.leaseLocked()
	ls.mu.Unlock()
	if !changed {
		return nil
	}
	p.writes = []write{w}
	return ls.writeEntry(ctx, p, lease)
}

// writeEntry writes the changes of p at once and records the outcome; a
// failed write stays dirty and is made good at the next renewal.
func (ls *leases) writeEntry(ctx context.Context, p keyPlan, lease string) error {
	key, kind := ls.planKey(&p, lease)
	err := applyScript.Run(ctx, ls.rdb, []string{key}, applyArgs(kind, ls.ttlArg(), p.writes)...).Err()
	ls.mu.Lock()
	if ls.leaseLocked() == lease {
		ls.held.settlePlan(&p, err == nil)
	}
	ls.mu.Unlock()
	if err != nil {
		return unavailable("write to Redis", fmt.Errorf("%w (kept; written at the next lease renewal)", err))
	}
	return nil
}

// liveLeases returns the leases that have not ended.
func (ls *leases) liveLeases(ctx context.Context) ([]string, error) {
	leases, err := liveScript.Run(ctx, ls.rdb, []string{ls.instancesKey()}).StringSlice()
	if err != nil && !errors.Is(err, redis.Nil) {
		return nil, unavailable("read leases", err)
	}
	return leases, nil
}

// unregister ends the lease and removes every key held under it (on
// Close).
func (ls *leases) unregister(ctx context.Context) {
	ls.mu.Lock()
	lease := ls.leaseLocked()
	keys := []string{ls.usersKey(lease)}
	for ch := range ls.held.pr {
		keys = append(keys, ls.presenceKey(ch, lease))
	}
	ls.mu.Unlock()
	pipe := ls.rdb.Pipeline()
	pipe.ZRem(ctx, ls.instancesKey(), lease)
	for _, k := range keys {
		pipe.Del(ctx, k) // one key per DEL: they may be in different slots
	}
	_, _ = pipe.Exec(ctx)
}
