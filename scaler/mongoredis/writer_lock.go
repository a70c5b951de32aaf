package mongoredis

import (
	"context"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sss-go/sss/internal/backoff"
)

// Taking turns under contention.
//
// A writer that keeps finding seqs taken by other writers (instances
// publishing on the same channel: contendedAfter conflicts for one batch)
// writes in turns for a while: around each batch it holds the channel's
// write lock in Redis (SET NX with a time to live), so that writers stop
// colliding and none starves. An occasional conflict costs less than
// turns, so one alone does not start them. The lock comes
// with the channel's seq hint, so the holder starts right after the last
// seq written, and its release raises the hint. A writer that had to wait
// leaves a mark; the holder that finds it pauses before its next batch,
// so turns go round. The unique index stays the safety net: a lock that
// expired under a slow insert, or a Redis that cannot be reached (the
// writer then writes without turns for a while), costs conflicts, never
// a wrong seq.
//
// Keys (one hash tag, so one Redis Cluster slot, per channel):
//
//	<prefix>:w:{<channel>}:lock  holder's token, with lockTTL
//	<prefix>:w:{<channel>}:seq   the seq hint "<epoch>:<seq>"
//	<prefix>:w:{<channel>}:wait  set by a writer that waited for the lock

const (
	// lockTTL bounds how long a lock outlives a holder that died.
	lockTTL = 2 * time.Second
	// contendedAfter is how many conflicts one batch meets before its
	// writer starts taking turns.
	contendedAfter = 3
	// contendedFor is how long a writer keeps taking turns after it last
	// saw another writer.
	contendedFor = 30 * time.Second
	// noLockFor is how long a writer writes without turns after Redis
	// failed to answer a lock request.
	noLockFor = time.Second
	// lockCallTimeout bounds one lock or unlock call.
	lockCallTimeout = 250 * time.Millisecond
)

// takeLock: KEYS lock, seq, wait; ARGV token, ttl ms. Returns {1, hint}
// when taken, {0, ""} (and marks the wait) when held by another.
var takeLock = redis.NewScript(`
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return {1, redis.call('GET', KEYS[2]) or ''}
end
redis.call('SET', KEYS[3], '1', 'PX', ARGV[2])
return {0, ''}`)

// dropLock: KEYS lock, seq, wait; ARGV token, epoch, seq (0: none), hint
// ttl ms. Releases the lock if still held, raises the hint, and returns
// 1 when another writer waited meanwhile.
var dropLock = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
end
if tonumber(ARGV[3]) > 0 then
  local v = redis.call('GET', KEYS[2])
  local raise = true
  if v then
    local ep, seq = string.match(v, '^(.*):(%d+)$')
    if ep == ARGV[2] and tonumber(seq) >= tonumber(ARGV[3]) then raise = false end
  end
  if raise then
    redis.call('SET', KEYS[2], ARGV[2] .. ':' .. ARGV[3], 'PX', ARGV[4])
  else
    redis.call('PEXPIRE', KEYS[2], ARGV[4])
  end
end
if redis.call('GET', KEYS[3]) then
  redis.call('DEL', KEYS[3])
  return 1
end
return 0`)

// raiseHint: KEYS seq; ARGV epoch, seq, ttl ms. Sets the hint unless it
// holds a higher seq of the same epoch.
var raiseHint = redis.NewScript(`
local v = redis.call('GET', KEYS[1])
if v then
  local ep, seq = string.match(v, '^(.*):(%d+)$')
  if ep == ARGV[1] and tonumber(seq) >= tonumber(ARGV[2]) then
    redis.call('PEXPIRE', KEYS[1], ARGV[3])
    return 0
  end
end
redis.call('SET', KEYS[1], ARGV[1] .. ':' .. ARGV[2], 'PX', ARGV[3])
return 1`)

// keys returns the lock, seq hint and wait keys of ch.
func (ws *writers) keys(ch string) []string {
	base := ws.prefix + ":w:{" + ch + "}:"
	return []string{base + "lock", base + "seq", base + "wait"}
}

func (ws *writers) hintKey(ch string) string { return ws.keys(ch)[1] }

// parseHint reads a seq hint of epoch ep.
func parseHint(v, ep string) (uint64, bool) {
	hep, hseq, ok := strings.Cut(v, ":")
	if !ok || hep != ep {
		return 0, false
	}
	n, err := strconv.ParseUint(hseq, 10, 64)
	return n, err == nil
}

// contended reports whether the writer takes turns now.
func (w *writer) contended() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	now := time.Now()
	return now.Before(w.contendedUntil) && !now.Before(w.lockOffUntil)
}

// sawContention records that another writer is active on the channel.
func (w *writer) sawContention() {
	w.mu.Lock()
	w.contendedUntil = time.Now().Add(contendedFor)
	w.mu.Unlock()
}

// lock waits for the channel's write lock (bounded by lockTTL and ctx)
// and returns its token ("" when writing without it) and the seq hint.
func (w *writer) lock(ctx context.Context) (token, hint string) {
	token = newID()
	keys := w.ws.keys(w.ch)
	deadline := time.Now().Add(lockTTL)
	for {
		c, cancel := context.WithTimeout(ctx, lockCallTimeout)
		res, err := takeLock.Run(c, w.ws.rdb, keys, token, lockTTL.Milliseconds()).Slice()
		cancel()
		if err != nil {
			if ctx.Err() == nil {
				w.mu.Lock()
				w.lockOffUntil = time.Now().Add(noLockFor)
				w.mu.Unlock()
			}
			return "", ""
		}
		if len(res) == 2 {
			if n, _ := res[0].(int64); n == 1 {
				h, _ := res[1].(string)
				return token, h
			}
		}
		w.sawContention()
		if time.Now().After(deadline) || !backoff.Sleep(ctx, 500*time.Microsecond+backoff.Jitter(1500*time.Microsecond)) {
			return "", "" // the holder is slow or gone: go without turns
		}
	}
}

// unlock releases the lock taken with token and raises the seq hint to
// (ep, seq) when seq > 0. It returns how long to wait before the next
// turn: a while when another writer waited for this one.
func (w *writer) unlock(token, ep string, seq uint64) time.Duration {
	ctx, cancel := context.WithTimeout(w.ws.run.ctx, lockCallTimeout)
	defer cancel()
	n, err := dropLock.Run(ctx, w.ws.rdb, w.ws.keys(w.ch), token, ep, seq, hintTTL.Milliseconds()).Int64()
	if err != nil || n == 0 {
		return 0
	}
	w.sawContention()
	return time.Millisecond + backoff.Jitter(2*time.Millisecond)
}
