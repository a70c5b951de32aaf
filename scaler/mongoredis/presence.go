package mongoredis

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"

	"github.com/redis/go-redis/v9"

	"github.com/sss-go/sss/scaler"
)

// Presence and users: see lease.go for the keys. Every change is recorded
// locally first (the truth), then written to Redis; when the write fails
// the method returns an error wrapping scaler.ErrUnavailable, the change
// is kept, and the next lease renewal writes it.

// Join records member as present on channel under this instance's lease;
// joining again with the same Member.ID replaces the entry.
func (s *Scaler) Join(ctx context.Context, channel string, member scaler.Member) error {
	if s.isClosed() {
		return scaler.ErrClosed
	}
	if member.ID == "" {
		return fmt.Errorf("sss/mongoredis: join %q: empty member id", channel)
	}
	if len(member.Info) == 0 {
		member.Info = nil
	}
	v, err := json.Marshal(member)
	if err != nil {
		return fmt.Errorf("sss/mongoredis: join %q: %w", channel, err)
	}
	s.stateMu.Lock()
	ver := s.held.join(channel, member.ID, string(v))
	lease := s.leaseLocked()
	s.stateMu.Unlock()
	w := write{id: member.ID, val: string(v), ver: ver, live: true}
	return s.writeEntry(ctx, fmt.Sprintf("join %q", channel), keyPlan{channel: channel, writes: []write{w}}, lease)
}

// Leave removes the member with that id from channel (one this instance
// joined; others are left alone).
func (s *Scaler) Leave(ctx context.Context, channel, memberID string) error {
	if s.isClosed() {
		return scaler.ErrClosed
	}
	s.stateMu.Lock()
	ver, ok := s.held.leave(channel, memberID)
	lease := s.leaseLocked()
	s.stateMu.Unlock()
	if !ok {
		return nil
	}
	w := write{id: memberID, ver: ver}
	return s.writeEntry(ctx, fmt.Sprintf("leave %q", channel), keyPlan{channel: channel, writes: []write{w}}, lease)
}

// Presence returns the members present on channel on every instance whose
// lease is alive, in no particular order (empty when there are none). A
// member id joined on two instances is listed once per instance.
func (s *Scaler) Presence(ctx context.Context, channel string) ([]scaler.Member, error) {
	if s.isClosed() {
		return nil, scaler.ErrClosed
	}
	leases, err := s.liveLeases(ctx)
	if err != nil {
		return nil, fmt.Errorf("sss/mongoredis: presence %q: %w", channel, err)
	}
	members := []scaler.Member{}
	if len(leases) == 0 {
		return members, nil
	}
	pipe := s.rdb.Pipeline()
	cmds := make([]*redis.MapStringStringCmd, len(leases))
	for i, l := range leases {
		cmds[i] = pipe.HGetAll(ctx, s.presenceKey(channel, l))
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return nil, unavailable(fmt.Sprintf("presence %q", channel), err)
	}
	for _, c := range cmds {
		for id, v := range c.Val() {
			var m scaler.Member
			if json.Unmarshal([]byte(v), &m) != nil || m.ID != id {
				s.log.Debug("sss/mongoredis: skipped a malformed presence entry", "channel", channel, "member", id)
				continue
			}
			members = append(members, m)
		}
	}
	return members, nil
}

// Count returns the number of members Presence would return, reading only
// the number of entries of each live instance.
func (s *Scaler) Count(ctx context.Context, channel string) (int, error) {
	if s.isClosed() {
		return 0, scaler.ErrClosed
	}
	leases, err := s.liveLeases(ctx)
	if err != nil {
		return 0, fmt.Errorf("sss/mongoredis: count %q: %w", channel, err)
	}
	if len(leases) == 0 {
		return 0, nil
	}
	pipe := s.rdb.Pipeline()
	cmds := make([]*redis.IntCmd, len(leases))
	for i, l := range leases {
		cmds[i] = pipe.HLen(ctx, s.presenceKey(channel, l))
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return 0, unavailable(fmt.Sprintf("count %q", channel), err)
	}
	n := 0
	for _, c := range cmds {
		n += int(c.Val())
	}
	return n, nil
}

// AddUser records that this instance holds a socket of user; calls are
// counted, and RemoveUser undoes one.
func (s *Scaler) AddUser(ctx context.Context, user string) error {
	if s.isClosed() {
		return scaler.ErrClosed
	}
	s.stateMu.Lock()
	ver, first := s.held.addUser(user)
	lease := s.leaseLocked()
	s.stateMu.Unlock()
	if !first {
		return nil
	}
	w := write{id: user, ver: ver, live: true}
	return s.writeEntry(ctx, fmt.Sprintf("add user %q", user), keyPlan{users: true, writes: []write{w}}, lease)
}

// RemoveUser undoes one AddUser; without a matching AddUser it does
// nothing.
func (s *Scaler) RemoveUser(ctx context.Context, user string) error {
	if s.isClosed() {
		return scaler.ErrClosed
	}
	s.stateMu.Lock()
	ver, last := s.held.removeUser(user)
	lease := s.leaseLocked()
	s.stateMu.Unlock()
	if !last {
		return nil
	}
	w := write{id: user, ver: ver}
	return s.writeEntry(ctx, fmt.Sprintf("remove user %q", user), keyPlan{users: true, writes: []write{w}}, lease)
}

// UserInstances returns the sorted ids of the live instances holding a
// socket of user.
func (s *Scaler) UserInstances(ctx context.Context, user string) ([]string, error) {
	if s.isClosed() {
		return nil, scaler.ErrClosed
	}
	leases, err := s.liveLeases(ctx)
	if err != nil {
		return nil, fmt.Errorf("sss/mongoredis: user instances %q: %w", user, err)
	}
	out := []string{}
	if len(leases) == 0 {
		return out, nil
	}
	pipe := s.rdb.Pipeline()
	cmds := make([]*redis.BoolCmd, len(leases))
	for i, l := range leases {
		cmds[i] = pipe.SIsMember(ctx, s.usersKey(l), user)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return nil, unavailable(fmt.Sprintf("user instances %q", user), err)
	}
	for i, c := range cmds {
		if c.Val() {
			out = append(out, leaseInstance(leases[i]))
		}
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}
