package server

import (
	"context"
	"fmt"

	"github.com/sss-go/sss/scaler"
)

// Presence returns the members of channel on every instance: the
// sockets subscribed to it with Presence on. It returns an error wrapping
// ErrPresenceOff when the channel's rule (Options.Channels, else
// Options.DefaultChannel) has Presence off. The rule decides, whatever a
// SubscriptionParser returned for individual sockets: such an override
// only decides whether that socket is recorded and announced, so a
// channel whose members are read should have Presence on in its rule.
func (s *Server) Presence(ctx context.Context, channel string) ([]scaler.Member, error) {
	if err := s.presenceOn(channel); err != nil {
		return nil, err
	}
	return s.presence.Presence(ctx, channel)
}

// Count returns the number of members of channel on every instance (see
// Presence; ErrPresenceOff under the same rule).
func (s *Server) Count(ctx context.Context, channel string) (int, error) {
	if err := s.presenceOn(channel); err != nil {
		return 0, err
	}
	return s.presence.Count(ctx, channel)
}

func (s *Server) presenceOn(channel string) error {
	if !s.opts.channelOptions(channel).Presence {
		return fmt.Errorf("%w: %q", ErrPresenceOff, channel)
	}
	return nil
}
