package server

import (
	"context"
	"fmt"
	"sync"

	"github.com/sss-go/sss/protocol"
	"github.com/sss-go/sss/scaler"
)

// The scaler's optional capabilities (package scaler: HistoryReader,
// ControlPlane, PresenceStore, UserRegistry), found once by type assertion
// in New and NewPublisher, each with its fallback.

// controlPlane returns sc's control plane, or local when sc has none.
func controlPlane(sc scaler.Scaler, local scaler.ControlPlane) scaler.ControlPlane {
	if cp, ok := sc.(scaler.ControlPlane); ok {
		return cp
	}
	return local
}

// localPlane is the control plane of a server whose scaler has none: its
// control messages reach its own sockets only, delivered at once.
type localPlane struct{ srv *Server }

func (l localPlane) ID() string { return "local" }

func (l localPlane) Control(_ context.Context, c scaler.Control) error {
	c.Origin = "local"
	l.srv.onControl(c)
	return nil
}

// noPlane is the control plane of a Publisher whose scaler has none:
// there is nobody to reach.
type noPlane struct{}

func (noPlane) ID() string { return "" }

func (noPlane) Control(context.Context, scaler.Control) error {
	return fmt.Errorf("%w: the scaler has no control plane (scaler.ControlPlane)", ErrNotSupported)
}

// presenceStore returns sc's presence store, or one that keeps this
// instance's members in memory.
func presenceStore(sc scaler.Scaler) scaler.PresenceStore {
	if ps, ok := sc.(scaler.PresenceStore); ok {
		return ps
	}
	return &localPresence{m: make(map[string]map[string]scaler.Member)}
}

// localPresence is the presence of this instance's sockets only.
type localPresence struct {
	mu sync.Mutex
	m  map[string]map[string]scaler.Member
}

func (l *localPresence) Join(_ context.Context, channel string, member scaler.Member) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	ms := l.m[channel]
	if ms == nil {
		ms = make(map[string]scaler.Member)
		l.m[channel] = ms
	}
	ms[member.ID] = member
	return nil
}

func (l *localPresence) Leave(_ context.Context, channel, memberID string) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if ms := l.m[channel]; ms != nil {
		delete(ms, memberID)
		if len(ms) == 0 {
			delete(l.m, channel)
		}
	}
	return nil
}

func (l *localPresence) Presence(_ context.Context, channel string) ([]scaler.Member, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]scaler.Member, 0, len(l.m[channel]))
	for _, m := range l.m[channel] {
		out = append(out, m)
	}
	return out, nil
}

func (l *localPresence) Count(_ context.Context, channel string) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.m[channel]), nil
}

// History returns up to limit (at most MaxRecovery; limit <= 0 means
// MaxRecovery) of the newest publications of channel, oldest first, so a
// page can show a channel's recent past and subscribe from the newest uid
// (a SYNC entry with that lastUid then misses nothing). It reads them with
// the scaler's HistoryReader, or else with Position and Since, which fail
// with an error wrapping scaler.ErrTrimmed when the oldest ones asked for
// are no longer kept.
func (s *Server) History(ctx context.Context, channel string, limit int) ([]scaler.Publication, error) {
	if err := checkPublishChannel(channel, s.opts.MaxChannelLen); err != nil {
		return nil, err
	}
	if limit <= 0 || limit > s.opts.MaxRecovery {
		limit = s.opts.MaxRecovery
	}
	if hr, ok := s.sc.(scaler.HistoryReader); ok {
		pubs, err := hr.History(ctx, channel, limit)
		if err != nil {
			return nil, fmt.Errorf("sss/server: history %q: %w", channel, err)
		}
		return pubs, nil
	}
	pos, err := s.sc.Position(ctx, channel)
	if err != nil {
		return nil, fmt.Errorf("sss/server: history %q: %w", channel, err)
	}
	from := protocol.UID{Epoch: pos.Epoch}
	if pos.Seq > uint64(limit) {
		from.Seq = pos.Seq - uint64(limit)
	}
	pubs, err := s.sc.Since(ctx, channel, from, limit)
	if err != nil {
		return nil, fmt.Errorf("sss/server: history %q: %w", channel, err)
	}
	return pubs, nil
}

// UserOnline reports whether user has a socket open on any instance: by
// the scaler's UserRegistry, or else on this instance only.
func (s *Server) UserOnline(ctx context.Context, user string) (bool, error) {
	if s.users == nil {
		return len(s.socketsOf(s.byUser, user)) > 0, nil
	}
	ids, err := s.users.UserInstances(ctx, user)
	if err != nil {
		return false, fmt.Errorf("sss/server: user %q: %w", user, err)
	}
	return len(ids) > 0, nil
}
