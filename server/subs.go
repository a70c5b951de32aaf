package server

import (
	"context"

	"github.com/sss-go/sss/protocol"
	"github.com/sss-go/sss/scaler"
)

// subscribeSocket subscribes sock to channel. fn runs under the socket's
// and the channel's locks (see hub.join) with the position the socket is
// live from and whether the subscription is new (else the socket held the
// channel already), and should queue the reply; a new subscription is
// recorded before fn. Each scaler call is bounded by BackendTimeout and
// ends when the socket closes.
func (s *Server) subscribeSocket(sock *Socket, channel string, co ChannelOptions, fn func(ch *hubChannel, pos protocol.UID, added bool)) error {
	added := false
	ctx, cancel := sock.backend()
	occupied, err := s.hub.join(ctx, sock, channel, co.MaxSubscribers, func(ch *hubChannel, pos protocol.UID) {
		if _, ok := sock.subs[channel]; !ok {
			if sock.subs == nil {
				sock.subs = make(map[string]ChannelOptions)
			}
			sock.subs[channel] = co
			added = true
		}
		fn(ch, pos, added)
	})
	cancel()
	if err != nil {
		return err
	}
	if occupied && s.opts.OnChannelOccupied != nil {
		s.hook("OnChannelOccupied", sock, func() { s.opts.OnChannelOccupied(channel) }, "channel", channel)
	}
	if added {
		s.joined(sock, channel, co)
	}
	return nil
}

// joined runs after a new subscription: hooks, then presence when the
// subscription's options have it on.
func (s *Server) joined(sock *Socket, channel string, co ChannelOptions) {
	if s.opts.OnSubscribe != nil {
		s.hook("OnSubscribe", sock, func() { s.opts.OnSubscribe(sock, channel) }, "channel", channel)
	}
	if !co.Presence || protocol.ReservedChannel(channel) {
		return
	}
	m := sock.member()
	ctx, cancel := sock.backend()
	err := s.presence.Join(ctx, channel, m)
	cancel()
	if err != nil {
		s.backendError(sock, channel, err)
		s.log.Warn("sss: scaler join failed", "socket", sock.id, "channel", channel, "err", err)
	}
	ctx, cancel = sock.backend()
	err = s.cp.Control(ctx, scaler.Control{Kind: scaler.ControlJoin, Target: channel, Member: &m})
	cancel()
	if err != nil {
		s.log.Warn("sss: presence join event failed", "channel", channel, "err", err)
	}
}

func (sock *Socket) member() scaler.Member {
	return scaler.Member{ID: sock.id, User: sock.user, Info: sock.info}
}

// unsubscribeSocket removes sock's subscription to channel; ctx bounds
// the scaler calls.
func (s *Server) unsubscribeSocket(ctx context.Context, sock *Socket, channel string) {
	sock.mu.Lock()
	co, ok := sock.subs[channel]
	delete(sock.subs, channel)
	delete(sock.excl, channel)
	delete(sock.skipTo, channel)
	sock.updateSlowLocked()
	sock.mu.Unlock()
	if !ok {
		return
	}
	if s.hub.leave(ctx, sock, channel) && s.opts.OnChannelVacated != nil {
		s.hook("OnChannelVacated", sock, func() { s.opts.OnChannelVacated(channel) }, "channel", channel)
	}
	if s.opts.OnUnsubscribe != nil {
		s.hook("OnUnsubscribe", sock, func() { s.opts.OnUnsubscribe(sock, channel) }, "channel", channel)
	}
	if !co.Presence || protocol.ReservedChannel(channel) {
		return
	}
	if err := s.presence.Leave(ctx, channel, sock.id); err != nil {
		s.backendError(sock, channel, err)
		s.log.Warn("sss: scaler leave failed", "socket", sock.id, "channel", channel, "err", err)
	}
	m := sock.member()
	if err := s.cp.Control(ctx, scaler.Control{Kind: scaler.ControlLeave, Target: channel, Member: &m}); err != nil {
		s.log.Warn("sss: presence leave event failed", "channel", channel, "err", err)
	}
}
