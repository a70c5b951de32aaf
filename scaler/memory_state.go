package scaler

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/sss-go/sss/protocol"
)

// Join records member as present on channel under the instance's lease.
func (m *Memory) Join(ctx context.Context, channel string, member Member) error {
	if err := m.check(ctx, "join", channel); err != nil {
		return err
	}
	member.Info = append([]byte(nil), member.Info...)
	if len(member.Info) == 0 {
		member.Info = nil
	}
	b := m.b
	b.mu.Lock()
	defer b.mu.Unlock()
	if err := m.liveLocked("join", channel); err != nil {
		return err
	}
	m.mu.Lock()
	j := m.joined[channel]
	if j == nil {
		j = make(map[string]Member)
		m.joined[channel] = j
	}
	j[member.ID] = member
	m.mu.Unlock()
	b.putPresenceLocked(m.id, channel, member)
	return nil
}

// liveLocked returns an error unless the instance is started and open.
func (m *Memory) liveLocked(op, channel string) error {
	switch {
	case m.closed.Load():
		return fmt.Errorf("sss/scaler: %s %q: %w", op, channel, ErrClosed)
	case !m.started:
		return fmt.Errorf("sss/scaler: %s %q: %w", op, channel, ErrNotStarted)
	}
	return nil
}

func (b *MemoryBackend) putPresenceLocked(owner, channel string, member Member) {
	p := b.presence[channel]
	if p == nil {
		p = make(map[string]memPresence)
		b.presence[channel] = p
	}
	p[member.ID] = memPresence{owner: owner, member: member}
}

// Leave removes this instance's member with that id from channel.
func (m *Memory) Leave(ctx context.Context, channel, memberID string) error {
	if err := m.check(ctx, "leave", channel); err != nil {
		return err
	}
	b := m.b
	b.mu.Lock()
	defer b.mu.Unlock()
	m.mu.Lock()
	if j := m.joined[channel]; j != nil {
		delete(j, memberID)
		if len(j) == 0 {
			delete(m.joined, channel)
		}
	}
	m.mu.Unlock()
	if p := b.presence[channel]; p != nil {
		if e, ok := p[memberID]; ok && e.owner == m.id {
			delete(p, memberID)
			if len(p) == 0 {
				delete(b.presence, channel)
			}
		}
	}
	return nil
}

// Presence returns the members of channel held by instances whose lease
// is alive.
func (m *Memory) Presence(ctx context.Context, channel string) ([]Member, error) {
	if err := m.check(ctx, "presence", channel); err != nil {
		return nil, err
	}
	b := m.b
	now := time.Now()
	b.mu.Lock()
	defer b.mu.Unlock()
	out := []Member{}
	for _, e := range b.presence[channel] {
		if b.leaseAliveLocked(e.owner, now) {
			mb := e.member
			mb.Info = append([]byte(nil), mb.Info...)
			if len(mb.Info) == 0 {
				mb.Info = nil
			}
			out = append(out, mb)
		}
	}
	return out, nil
}

// Count returns how many members Presence would return.
func (m *Memory) Count(ctx context.Context, channel string) (int, error) {
	if err := m.check(ctx, "count", channel); err != nil {
		return 0, err
	}
	b := m.b
	now := time.Now()
	b.mu.Lock()
	defer b.mu.Unlock()
	n := 0
	for _, e := range b.presence[channel] {
		if b.leaseAliveLocked(e.owner, now) {
			n++
		}
	}
	return n, nil
}

// AddUser records one more socket of user on this instance.
func (m *Memory) AddUser(ctx context.Context, user string) error {
	if err := m.check(ctx, "add user", user); err != nil {
		return err
	}
	b := m.b
	b.mu.Lock()
	defer b.mu.Unlock()
	if err := m.liveLocked("add user", user); err != nil {
		return err
	}
	m.mu.Lock()
	m.users[user]++
	m.mu.Unlock()
	b.addUserLocked(m.id, user, 1)
	return nil
}

func (b *MemoryBackend) addUserLocked(owner, user string, n int) {
	u := b.users[user]
	if u == nil {
		u = make(map[string]int)
		b.users[user] = u
	}
	u[owner] += n
	if u[owner] <= 0 {
		delete(u, owner)
		if len(u) == 0 {
			delete(b.users, user)
		}
	}
}

// RemoveUser undoes one AddUser; without a matching AddUser it does
// nothing.
func (m *Memory) RemoveUser(ctx context.Context, user string) error {
	if err := m.check(ctx, "remove user", user); err != nil {
		return err
	}
	b := m.b
	b.mu.Lock()
	defer b.mu.Unlock()
	m.mu.Lock()
	n := m.users[user]
	if n > 0 {
		if n == 1 {
			delete(m.users, user)
		} else {
			m.users[user] = n - 1
		}
	}
	m.mu.Unlock()
	if n > 0 {
		b.addUserLocked(m.id, user, -1)
	}
	return nil
}

// UserInstances returns the sorted ids of the live instances holding a
// socket of user.
func (m *Memory) UserInstances(ctx context.Context, user string) ([]string, error) {
	if err := m.check(ctx, "user instances", user); err != nil {
		return nil, err
	}
	b := m.b
	now := time.Now()
	b.mu.Lock()
	out := []string{}
	for id, n := range b.users[user] {
		if n > 0 && b.leaseAliveLocked(id, now) {
			out = append(out, id)
		}
	}
	b.mu.Unlock()
	slices.Sort(out)
	return out, nil
}

// dropOwnedLocked removes every presence and user entry of instance id.
func (b *MemoryBackend) dropOwnedLocked(id string) {
	for ch, p := range b.presence {
		for k, e := range p {
			if e.owner == id {
				delete(p, k)
			}
		}
		if len(p) == 0 {
			delete(b.presence, ch)
		}
	}
	for user, u := range b.users {
		delete(u, id)
		if len(u) == 0 {
			delete(b.users, user)
		}
	}
}

// renew extends the lease unless it is paused. When the lease had already
// ended, the instance re-registers what it holds and reports
// EventLeaseLost.
func (m *Memory) renew(h Handler) {
	b := m.b
	now := time.Now()
	b.mu.Lock()
	m.mu.Lock()
	paused := m.paused
	m.mu.Unlock()
	if paused || m.closed.Load() {
		b.mu.Unlock()
		return
	}
	lost := !b.leaseAliveLocked(m.id, now)
	if lost {
		b.dropOwnedLocked(m.id)
		m.mu.Lock()
		for ch, j := range m.joined {
			for _, mb := range j {
				b.putPresenceLocked(m.id, ch, mb)
			}
		}
		for user, n := range m.users {
			b.addUserLocked(m.id, user, n)
		}
		m.mu.Unlock()
	}
	b.leases[m.id] = now.Add(b.opts.LeaseTTL)
	b.mu.Unlock()
	if lost {
		m.log.Warn("lease lost; re-registered presence and users")
		if h.Event != nil {
			h.Event(Event{Kind: EventLeaseLost, Time: now})
		}
	}
}

// DropNextRelay makes this instance miss the next relayed publication of
// channel (it stays in the log).
func (m *Memory) DropNextRelay(channel string) {
	m.mu.Lock()
	m.drop[channel]++
	m.mu.Unlock()
}

// DelayNextRelay makes the next relayed publication of channel reach this
// instance after d; later ones overtake it.
func (m *Memory) DelayNextRelay(channel string, d time.Duration) {
	m.mu.Lock()
	m.delay[channel] = d
	m.mu.Unlock()
}

// PauseLease stops renewing the lease, as if the process were frozen.
func (m *Memory) PauseLease() {
	m.mu.Lock()
	m.paused = true
	m.mu.Unlock()
}

// ResumeLease resumes renewing and renews at once.
func (m *Memory) ResumeLease() {
	m.mu.Lock()
	m.paused = false
	m.mu.Unlock()
	select {
	case m.renewNow <- struct{}{}:
	default:
	}
}

// ResetHistory discards channel's history and starts a new epoch. Streams
// of the channel report Handler.Reset with the new epoch's position 0 and
// go on with its publications.
func (m *Memory) ResetHistory(ctx context.Context, channel string) error {
	if err := m.check(ctx, "reset history", channel); err != nil {
		return err
	}
	b := m.b
	b.mu.Lock()
	c := b.channelLocked(channel)
	epoch := protocol.NewEpoch()
	for epoch == c.epoch {
		epoch = protocol.NewEpoch()
	}
	c.epoch, c.seq = epoch, 0
	clear(c.log)
	c.log = nil
	c.idem, c.idemFIFO = nil, nil
	b.mu.Unlock()
	return nil
}

// Trim removes the stored publications of channel up to and including seq
// of the current epoch.
func (m *Memory) Trim(ctx context.Context, channel string, seq uint64) error {
	if err := m.check(ctx, "trim", channel); err != nil {
		return err
	}
	b := m.b
	b.mu.Lock()
	c := b.peekLocked(channel)
	if first := c.first(); seq >= first && len(c.log) > 0 {
		dropFront(c, int(min(seq-first+1, uint64(len(c.log)))))
	}
	b.mu.Unlock()
	return nil
}
