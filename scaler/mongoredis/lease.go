package mongoredis

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sss-go/sss/scaler"
)

// Shared state in Redis, under the instance's lease:
//
//	<prefix>:lease:<id>   = token, with TTL LeaseTTL, renewed every LeaseTTL/3
//	<prefix>:pr:<channel> hash member id -> {"i": instance, "g": token, "m": member}
//	<prefix>:u:<user>     hash instance id -> token
//
// An entry counts only while its instance's lease key holds the entry's
// token, so a crashed or paused instance's entries vanish when its lease
// ends, without a sweeper. Readers delete the dead entries they come
// across (compare-and-delete, so a re-registered entry survives). An
// instance that finds its lease gone takes a new token and writes again
// everything it holds.

type presenceEntry struct {
	Instance string        `json:"i"`
	Token    string        `json:"g"`
	Member   scaler.Member `json:"m"`
}

// delIfSame deletes hash fields whose value is still the one read.
var delIfSame = redis.NewScript(`
local n = 0
for i = 1, #ARGV, 2 do
  if redis.call('HGET', KEYS[1], ARGV[i]) == ARGV[i+1] then
    n = n + redis.call('HDEL', KEYS[1], ARGV[i])
  end
end
return n`)

func (s *Scaler) leaseKey(id string) string    { return s.opts.Prefix + ":lease:" + id }
func (s *Scaler) presenceKey(ch string) string { return s.opts.Prefix + ":pr:" + ch }
func (s *Scaler) userKey(user string) string   { return s.opts.Prefix + ":u:" + user }

func (s *Scaler) token() string {
	s.stateMu.Lock()
	defer s.stateMu.Unlock()
	return s.leaseToken
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
	ok, err := s.rdb.SetXX(ctx, s.leaseKey(s.id), s.token(), s.opts.LeaseTTL).Result()
	if err != nil {
		if s.leaseOK.Swap(false) {
			s.event(scaler.EventBackendError, "", 0, unavailable("renew lease", err))
		}
		return
	}
	if ok {
		s.leaseOK.Store(true)
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

// register writes the lease and every presence and user entry held.
func (s *Scaler) register(ctx context.Context) error {
	s.stateMu.Lock()
	tok := s.leaseToken
	pipe := s.rdb.Pipeline()
	pipe.Set(ctx, s.leaseKey(s.id), tok, s.opts.LeaseTTL)
	for ch, members := range s.presence {
		for _, m := range members {
			v, err := json.Marshal(presenceEntry{Instance: s.id, Token: tok, Member: m})
			if err != nil {
				continue
			}
			pipe.HSet(ctx, s.presenceKey(ch), m.ID, v)
		}
	}
	for user := range s.users {
		pipe.HSet(ctx, s.userKey(user), s.id, tok)
	}
	s.stateMu.Unlock()
	if _, err := pipe.Exec(ctx); err != nil {
		return unavailable("register lease", err)
	}
	return nil
}

// Join records member as present on channel under this instance's lease.
func (s *Scaler) Join(ctx context.Context, channel string, member scaler.Member) error {
	if s.isClosed() {
		return scaler.ErrClosed
	}
	if member.ID == "" {
		return fmt.Errorf("sss/mongoredis: join %q: empty member id", channel)
	}
	s.stateMu.Lock()
	ms := s.presence[channel]
	if ms == nil {
		ms = make(map[string]scaler.Member)
		s.presence[channel] = ms
	}
	ms[member.ID] = member
	tok := s.leaseToken
	s.stateMu.Unlock()
	v, err := json.Marshal(presenceEntry{Instance: s.id, Token: tok, Member: member})
	if err != nil {
		return fmt.Errorf("sss/mongoredis: join %q: %w", channel, err)
	}
	if err := s.rdb.HSet(ctx, s.presenceKey(channel), member.ID, v).Err(); err != nil {
		return unavailable("join", err)
	}
	return nil
}

// Leave removes the member with that id from channel.
func (s *Scaler) Leave(ctx context.Context, channel, memberID string) error {
	if s.isClosed() {
		return scaler.ErrClosed
	}
	s.stateMu.Lock()
	if ms := s.presence[channel]; ms != nil {
		delete(ms, memberID)
		if len(ms) == 0 {
			delete(s.presence, channel)
		}
	}
	s.stateMu.Unlock()
	if err := s.rdb.HDel(ctx, s.presenceKey(channel), memberID).Err(); err != nil {
		return unavailable("leave", err)
	}
	return nil
}

// liveTokens returns the current lease token of each instance (absent when
// its lease ended).
func (s *Scaler) liveTokens(ctx context.Context, ids map[string]bool) (map[string]string, error) {
	out := make(map[string]string, len(ids))
	if len(ids) == 0 {
		return out, nil
	}
	pipe := s.rdb.Pipeline()
	cmds := make(map[string]*redis.StringCmd, len(ids))
	for id := range ids {
		cmds[id] = pipe.Get(ctx, s.leaseKey(id))
	}
	if _, err := pipe.Exec(ctx); err != nil && err != redis.Nil {
		return nil, unavailable("read leases", err)
	}
	for id, c := range cmds {
		if v, err := c.Result(); err == nil {
			out[id] = v
		}
	}
	return out, nil
}

// Presence returns the members present on channel on every instance whose
// lease is alive.
func (s *Scaler) Presence(ctx context.Context, channel string) ([]scaler.Member, error) {
	if s.isClosed() {
		return nil, scaler.ErrClosed
	}
	key := s.presenceKey(channel)
	all, err := s.rdb.HGetAll(ctx, key).Result()
	if err != nil {
		return nil, unavailable("presence", err)
	}
	entries := make(map[string]presenceEntry, len(all))
	ids := make(map[string]bool)
	var dead []any
	for field, v := range all {
		var e presenceEntry
		if json.Unmarshal([]byte(v), &e) != nil || e.Member.ID != field {
			dead = append(dead, field, v)
			continue
		}
		entries[field] = e
		ids[e.Instance] = true
	}
	live, err := s.liveTokens(ctx, ids)
	if err != nil {
		return nil, err
	}
	members := make([]scaler.Member, 0, len(entries))
	for field, e := range entries {
		if live[e.Instance] != e.Token {
			dead = append(dead, field, all[field])
			continue
		}
		members = append(members, e.Member)
	}
	if len(dead) > 0 {
		_ = delIfSame.Run(ctx, s.rdb, []string{key}, dead...).Err()
	}
	return members, nil
}

// Count returns the number of members Presence would return.
func (s *Scaler) Count(ctx context.Context, channel string) (int, error) {
	m, err := s.Presence(ctx, channel)
	return len(m), err
}

// AddUser records that this instance holds a socket of user.
func (s *Scaler) AddUser(ctx context.Context, user string) error {
	if s.isClosed() {
		return scaler.ErrClosed
	}
	s.stateMu.Lock()
	s.users[user]++
	first := s.users[user] == 1
	tok := s.leaseToken
	s.stateMu.Unlock()
	if !first {
		return nil
	}
	if err := s.rdb.HSet(ctx, s.userKey(user), s.id, tok).Err(); err != nil {
		return unavailable("add user", err)
	}
	return nil
}

// RemoveUser undoes one AddUser.
func (s *Scaler) RemoveUser(ctx context.Context, user string) error {
	if s.isClosed() {
		return scaler.ErrClosed
	}
	s.stateMu.Lock()
	n, ok := s.users[user]
	if !ok {
		s.stateMu.Unlock()
		return nil
	}
	last := n <= 1
	if last {
		delete(s.users, user)
	} else {
		s.users[user] = n - 1
	}
	s.stateMu.Unlock()
	if !last {
		return nil
	}
	if err := s.rdb.HDel(ctx, s.userKey(user), s.id).Err(); err != nil {
		return unavailable("remove user", err)
	}
	return nil
}

// UserInstances returns the ids of the live instances holding a socket of
// user.
func (s *Scaler) UserInstances(ctx context.Context, user string) ([]string, error) {
	if s.isClosed() {
		return nil, scaler.ErrClosed
	}
	key := s.userKey(user)
	all, err := s.rdb.HGetAll(ctx, key).Result()
	if err != nil {
		return nil, unavailable("user instances", err)
	}
	ids := make(map[string]bool, len(all))
	for id := range all {
		ids[id] = true
	}
	live, err := s.liveTokens(ctx, ids)
	if err != nil {
		return nil, err
	}
	out := make([]string, 0, len(all))
	var dead []any
	for id, tok := range all {
		if live[id] == tok {
			out = append(out, id)
		} else {
			dead = append(dead, id, tok)
		}
	}
	if len(dead) > 0 {
		_ = delIfSame.Run(ctx, s.rdb, []string{key}, dead...).Err()
	}
	return out, nil
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

// unregister removes the lease and every entry held (on Close).
func (s *Scaler) unregister(ctx context.Context) {
	s.stateMu.Lock()
	pipe := s.rdb.Pipeline()
	pipe.Del(ctx, s.leaseKey(s.id))
	for ch, members := range s.presence {
		for id := range members {
			pipe.HDel(ctx, s.presenceKey(ch), id)
		}
	}
	for user := range s.users {
		pipe.HDel(ctx, s.userKey(user), s.id)
	}
	s.stateMu.Unlock()
	_, _ = pipe.Exec(ctx)
}
