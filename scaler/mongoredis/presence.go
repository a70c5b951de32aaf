package mongoredis

import (
	"context"
	"encoding/json"
	"errors"
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
	op := fmt.Sprintf("join %q", channel)
	if s.isClosed() {
		return closedError(op)
	}
	if member.ID == "" {
		return opError(op, errors.New("empty member id"))
	}
	if len(member.Info) == 0 {
		member.Info = nil
	}
	v, err := json.Marshal(member)
	if err != nil {
		return opError(op, err)
	}
	return wrapNil(op, s.leases.change(ctx, func(h *held) (write, bool) {
		return write{id: member.ID, val: string(v), ver: h.join(channel, member.ID, string(v)), live: true}, true
	}, keyPlan{channel: channel}))
}

// Leave removes the member with that id from channel (one this instance
// joined; others are left alone).
func (s *Scaler) Leave(ctx context.Context, channel, memberID string) error {
	op := fmt.Sprintf("leave %q", channel)
	if s.isClosed() {
		return closedError(op)
	}
	return wrapNil(op, s.leases.change(ctx, func(h *held) (write, bool) {
		ver, held := h.leave(channel, memberID)
		return write{id: memberID, ver: ver}, held
	}, keyPlan{channel: channel}))
}

// Presence returns the members present on channel on every instance whose
// lease is alive, in no particular order (empty when there are none). A
// member id joined on two instances is listed once per instance.
func (s *Scaler) Presence(ctx context.Context, channel string) ([]scaler.Member, error) {
	op := fmt.Sprintf("presence %q", channel)
	if s.isClosed() {
		return nil, closedError(op)
	}
	members := []scaler.Member{}
	cmds, err := perLease(ctx, s.leases, func(pipe redis.Pipeliner, lease string) *redis.MapStringStringCmd {
		return pipe.HGetAll(ctx, s.leases.presenceKey(channel, lease))
	})
	if err != nil {
		return nil, opError(op, err)
	}
	for _, c := range cmds {
		for id, v := range c.Val() {
			var m scaler.Member
			if json.Unmarshal([]byte(v), &m) != nil || m.ID != id {
				s.out.logger.Debug("sss/mongoredis: skipped a malformed presence entry", "channel", channel, "member", id)
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
	op := fmt.Sprintf("count %q", channel)
	if s.isClosed() {
		return 0, closedError(op)
	}
	cmds, err := perLease(ctx, s.leases, func(pipe redis.Pipeliner, lease string) *redis.IntCmd {
		return pipe.HLen(ctx, s.leases.presenceKey(channel, lease))
	})
	if err != nil {
		return 0, opError(op, err)
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
	op := fmt.Sprintf("add user %q", user)
	if s.isClosed() {
		return closedError(op)
	}
	return wrapNil(op, s.leases.change(ctx, func(h *held) (write, bool) {
		ver, first := h.addUser(user)
		return write{id: user, ver: ver, live: true}, first
	}, keyPlan{users: true}))
}

// RemoveUser undoes one AddUser; without a matching AddUser it does
// nothing.
func (s *Scaler) RemoveUser(ctx context.Context, user string) error {
	op := fmt.Sprintf("remove user %q", user)
	if s.isClosed() {
		return closedError(op)
	}
	return wrapNil(op, s.leases.change(ctx, func(h *held) (write, bool) {
		ver, last := h.removeUser(user)
		return write{id: user, ver: ver}, last
	}, keyPlan{users: true}))
}

// UserInstances returns the sorted ids of the live instances holding a
// socket of user.
func (s *Scaler) UserInstances(ctx context.Context, user string) ([]string, error) {
	op := fmt.Sprintf("user instances %q", user)
	if s.isClosed() {
		return nil, closedError(op)
	}
	var leases []string
	cmds, err := perLease(ctx, s.leases, func(pipe redis.Pipeliner, lease string) *redis.BoolCmd {
		leases = append(leases, lease)
		return pipe.SIsMember(ctx, s.leases.usersKey(lease), user)
	})
	if err != nil {
		return nil, opError(op, err)
	}
	out := []string{}
	for i, c := range cmds {
		if c.Val() {
			out = append(out, leaseInstance(leases[i]))
		}
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}

// perLease runs one command per live lease, made by cmd, in one pipeline,
// and returns them (none when no lease is live).
func perLease[C redis.Cmder](ctx context.Context, ls *leases, cmd func(redis.Pipeliner, string) C) ([]C, error) {
	leases, err := ls.liveLeases(ctx)
	if err != nil || len(leases) == 0 {
		return nil, err
	}
	pipe := ls.rdb.Pipeline()
	cmds := make([]C, len(leases))
	for i, l := range leases {
		cmds[i] = cmd(pipe, l)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return nil, unavailable("read Redis", err)
	}
	return cmds, nil
}

// wrapNil is opError for a possibly nil error.
func wrapNil(op string, err error) error {
	if err == nil {
		return nil
	}
	return opError(op, err)
}
