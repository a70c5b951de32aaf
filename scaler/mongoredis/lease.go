package mongoredis

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
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

// leaseInstance returns the instance id of a lease name.
func leaseInstance(lease string) string {
	id, _, _ := strings.Cut(lease, ":")
	return id
}

func (s *Scaler) instancesKey() string { return s.opts.Prefix + ":instances" }

func (s *Scaler) presenceKey(ch, lease string) string {
	return s.opts.Prefix + ":pr:{" + ch + "}:" + lease
}

func (s *Scaler) usersKey(lease string) string { return s.opts.Prefix + ":us:" + lease }

func (s *Scaler) ttlArg() string { return strconv.FormatInt(s.opts.LeaseTTL.Milliseconds(), 10) }

// leaseLocked returns the current lease's name; the caller holds stateMu.
func (s *Scaler) leaseLocked() string { return s.id + ":" + s.leaseToken }

func (s *Scaler) currentLease() string {
	s.stateMu.Lock()
	defer s.stateMu.Unlock()
	return s.leaseLocked()
}

// leaseLoop renews the lease every LeaseTTL/3 (and at once on ResumeLease).
func (s *Scaler) leaseLoop() {
	t := time.NewTicker(s.opts.LeaseTTL / 3)
	defer t.Stop()
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-t.C:
		case <-s.resume:
		}
		if s.paused.Load() {
			continue
		}
		s.renew()
	}
}

func (s *Scaler) renew() {
	ctx, cancel := context.WithTimeout(s.ctx, s.opts.LeaseTTL/3)
	defer cancel()
	lease := s.currentLease()
	ok, err := renewScript.Run(ctx, s.rdb, []string{s.instancesKey()}, lease, s.ttlArg(), "0").Int()
	if err != nil {
		if s.leaseOK.Swap(false) {
			s.event(scaler.EventBackendError, "", 0, unavailable("renew lease", err))
		}
		return
	}
	if ok == 1 {
		s.leaseOK.Store(true)
		if err := s.sync(ctx); err != nil {
			s.event(scaler.EventBackendError, "", 0, err)
		}
		return
	}
	// The lease ended (paused process, Redis restarted): take a new one
	// and write again everything held under it.
	s.stateMu.Lock()
	s.leaseToken = newID()
	s.stateMu.Unlock()
	if err := s.register(ctx); err != nil {
		s.leaseOK.Store(false)
		s.event(scaler.EventBackendError, "", 0, err)
		return
	}
	s.leaseOK.Store(true)
	s.log.Warn("sss/mongoredis: lease was lost; re-registered presence and users")
	s.event(scaler.EventLeaseLost, "", 0, nil)
}

// register writes every presence and user entry held under the current
// lease, then makes the lease live (so others see the entries at once).
func (s *Scaler) register(ctx context.Context) error {
	s.stateMu.Lock()
	s.held.markAll()
	lease := s.leaseLocked()
	s.stateMu.Unlock()
	// A new lease may follow a Redis restart, which lost the scripts:
	// load the one sync pipelines, so that its first pipeline need not be
	// run twice.
	_ = applyScript.Load(ctx, s.rdb).Err()
	syncErr := s.sync(ctx)
	if err := renewScript.Run(ctx, s.rdb, []string{s.instancesKey()}, lease, s.ttlArg(), "1").Err(); err != nil {
		return unavailable("register lease", err)
	}
	if syncErr != nil {
		// The lease is live; what failed is written at the next renewal.
		s.event(scaler.EventBackendError, "", 0, syncErr)
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
func (s *Scaler) sync(ctx context.Context) error {
	var err error
	for round := 0; round < 2; round++ {
		var again bool
		again, err = s.syncRound(ctx)
		if err != nil || !again {
			break
		}
	}
	return err
}

// syncRound is one round of sync; it reports whether a key must be
// written again.
func (s *Scaler) syncRound(ctx context.Context) (bool, error) {
	s.stateMu.Lock()
	lease := s.leaseLocked()
	plans := s.held.plan()
	s.stateMu.Unlock()
	if len(plans) == 0 {
		return false, nil
	}
	ops := make([]keyOp, len(plans))
	for i := range plans {
		ops[i].plan = plans[i]
	}
	err := s.runOps(ctx, lease, ops)
	s.stateMu.Lock()
	defer s.stateMu.Unlock()
	if s.leaseLocked() != lease {
		return false, err // a new lease rewrites everything anyway
	}
	again := false
	for i := range ops {
		ok, exists := ops[i].result()
		p := &ops[i].plan
		for _, w := range p.writes {
			if p.users {
				s.held.users.settle(w.id, w.ver, ok)
			} else {
				s.held.settlePresence(p.channel, w.id, w.ver, ok)
			}
		}
		if set := s.held.set(p); ok && !exists && set != nil && set.markLive() {
			again = true
		}
	}
	return again, err
}

// runOps queues each op's commands in one pipeline and runs it; when
// Redis lost the scripts (restarted), it loads them and runs it again.
func (s *Scaler) runOps(ctx context.Context, lease string, ops []keyOp) error {
	for attempt := 0; ; attempt++ {
		pipe := s.rdb.Pipeline()
		for i := range ops {
			ops[i].cmds = s.queueOp(ctx, pipe, lease, &ops[i].plan)
		}
		_, err := pipe.Exec(ctx)
		if err == nil {
			return nil
		}
		if attempt > 0 || !noScript(ops) {
			return unavailable("sync presence and users", err)
		}
		if err := applyScript.Load(ctx, s.rdb).Err(); err != nil {
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
func (s *Scaler) queueOp(ctx context.Context, pipe redis.Pipeliner, lease string, p *keyPlan) []redis.Cmder {
	key, kind := s.presenceKey(p.channel, lease), "h"
	if p.users {
		key, kind = s.usersKey(lease), "s"
	}
	if len(p.writes) == 0 {
		return []redis.Cmder{pipe.PExpire(ctx, key, s.opts.LeaseTTL)}
	}
	var cmds []redis.Cmder
	for from := 0; from < len(p.writes); from += maxApply {
		ws := p.writes[from:min(from+maxApply, len(p.writes))]
		cmds = append(cmds, applyScript.EvalSha(ctx, pipe, []string{key}, applyArgs(kind, s.ttlArg(), ws)...))
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

// writeEntry writes change ver of one entry at once (Join, Leave, AddUser,
// RemoveUser) and records the outcome; a failed write stays dirty and is
// made good at the next renewal.
func (s *Scaler) writeEntry(ctx context.Context, op string, p keyPlan, lease string) error {
	key, kind := s.presenceKey(p.channel, lease), "h"
	if p.users {
		key, kind = s.usersKey(lease), "s"
	}
	err := applyScript.Run(ctx, s.rdb, []string{key}, applyArgs(kind, s.ttlArg(), p.writes)...).Err()
	s.stateMu.Lock()
	if s.leaseLocked() == lease {
		for _, w := range p.writes {
			if p.users {
				s.held.users.settle(w.id, w.ver, err == nil)
			} else {
				s.held.settlePresence(p.channel, w.id, w.ver, err == nil)
			}
		}
	}
	s.stateMu.Unlock()
	if err != nil {
		return unavailable(op, fmt.Errorf("%w (kept; written at the next lease renewal)", err))
	}
	return nil
}

// liveLeases returns the leases that have not ended.
func (s *Scaler) liveLeases(ctx context.Context) ([]string, error) {
	leases, err := liveScript.Run(ctx, s.rdb, []string{s.instancesKey()}).StringSlice()
	if err != nil && !errors.Is(err, redis.Nil) {
		return nil, unavailable("read leases", err)
	}
	return leases, nil
}

// unregister ends the lease and removes every key held under it (on
// Close).
func (s *Scaler) unregister(ctx context.Context) {
	s.stateMu.Lock()
	lease := s.leaseLocked()
	keys := []string{s.usersKey(lease)}
	for ch := range s.held.pr {
		keys = append(keys, s.presenceKey(ch, lease))
	}
	s.stateMu.Unlock()
	pipe := s.rdb.Pipeline()
	pipe.ZRem(ctx, s.instancesKey(), lease)
	for _, k := range keys {
		pipe.Del(ctx, k) // one key per DEL: they may be in different slots
	}
	_, _ = pipe.Exec(ctx)
}

// Control sends a control message to every running instance, this one
// included.
func (s *Scaler) Control(ctx context.Context, msg scaler.Control) error {
	if s.isClosed() {
		return scaler.ErrClosed
	}
	msg.Origin = s.id
	return s.sendEnvelope(ctx, envelope{Ctl: &msg})
}
