package server

import (
	"context"
	"encoding/json"
	"errors"

	"github.com/sss-go/sss/protocol"
	"github.com/sss-go/sss/scaler"
)

// Subscriptions: BEGIN's user channel, SUBSCRIBE, UNSUBSCRIBE, and what
// every new or ended subscription does (hooks, presence).

// handleBegin answers BEGIN, granting the user channel.
func (s *Socket) handleBegin() {
	prot := s.srv.prot()
	if s.user == "" {
		s.sendText(protocol.AppendBeginReply(nil, prot, "", protocol.UID{}))
		return
	}
	uc := protocol.UserChannel(s.user)
	err := s.srv.subscribeSocket(s, uc, ChannelOptions{}, func(_ *hubChannel, pos protocol.UID, _ bool) {
		s.enqueueLocked(outItem{data: protocol.AppendBeginReply(nil, prot, uc, pos), op: opText})
	})
	if err != nil {
		s.srv.log.Warn("sss: user channel subscribe failed", "socket", s.id, "user", s.user, "err", err)
		s.Close(protocol.CloseTryAgainLater, "backend unavailable")
	}
}

// handleSubscribe answers SUBSCRIBE (handler goroutine).
func (s *Socket) handleSubscribe(msg *protocol.Message) {
	channel := msg.Channel
	co, _, perr := s.checkChannel(s.ctx, channel, msg.Query, s.numSubs(), false)
	if perr != nil {
		s.sendText(appendSubscribeFail(msg.ID, channel, perr))
		return
	}
	err := s.srv.subscribeSocket(s, channel, co, func(_ *hubChannel, pos protocol.UID, _ bool) {
		s.enqueueLocked(outItem{data: protocol.AppendSubscribeOK(nil, msg.ID, channel, pos), op: opText})
	})
	if err != nil {
		e, _ := joinError(err)
		if !errors.Is(err, errChannelFull) {
			s.srv.log.Warn("sss: subscribe failed", "socket", s.id, "channel", channel, "err", err)
		}
		s.sendText(appendSubscribeFail(msg.ID, channel, e))
	}
}

// appendSubscribeFail encodes a refused SUBSCRIBE reply, keeping the
// channel key even for the empty name (protocol.AppendSubscribeFail leaves
// it out then, for bad_request replies).
func appendSubscribeFail(id json.RawMessage, channel string, e *protocol.Error) []byte {
	if channel != "" {
		return protocol.AppendSubscribeFail(nil, id, channel, e)
	}
	errJSON, err := json.Marshal(e)
	if err != nil {
		errJSON = []byte(`{"name":"Internal","message":"internal error","code":"internal"}`)
	}
	b := append([]byte(`{"sys":1,"result":false,"channel":"","id":`), id...)
	b = append(b, `,"err":`...)
	b = append(b, errJSON...)
	return append(b, '}')
}

func (s *Socket) handleUnsubscribe(channel string) {
	if !s.subscribed(channel) {
		return
	}
	ctx, cancel := s.backend()
	defer cancel()
	s.srv.unsubscribeSocket(ctx, s, channel)
}

// subscription checks common to SUBSCRIBE and SYNC entries. It returns the
// channel's options, or the error object refusing it.
func (s *Socket) checkChannel(ctx context.Context, channel string, query json.RawMessage, subCount int, sync bool) (ChannelOptions, bool, *protocol.Error) {
	if protocol.ReservedChannel(channel) {
		if sync && s.user != "" && channel == protocol.UserChannel(s.user) {
			return ChannelOptions{}, s.subscribed(channel), nil
		}
		if _, ok := protocol.UserFromChannel(channel); ok && sync {
			return ChannelOptions{}, false, protocol.NewError(protocol.CodeForbidden, "not this session's user channel")
		}
		return ChannelOptions{}, false, protocol.NewError(protocol.CodeReservedChannel, "channel names beginning with _ are reserved")
	}
	if !protocol.ValidChannel(channel, s.srv.opts.MaxChannelLen) {
		return ChannelOptions{}, false, protocol.NewError(protocol.CodeBadChannel, "invalid channel name")
	}
	already := s.subscribed(channel)
	if already {
		s.mu.Lock()
		co := s.subs[channel]
		s.mu.Unlock()
		return co, true, nil
	}
	if subCount >= s.srv.opts.MaxSubscriptions {
		return ChannelOptions{}, false, protocol.NewError(protocol.CodeTooManySubscriptions, "subscription limit reached")
	}
	co := s.srv.opts.channelOptions(channel)
	if p := s.srv.opts.SubscriptionParser; p != nil {
		o, err := s.parse(ctx, p, channel, query)
		if err != nil {
			return co, false, s.srv.appError(err, protocol.CodeRefused, "subscription parser", channel, s)
		}
		if o != nil {
			co = *o
		}
	}
	return co, false, nil
}

// parse runs the subscription parser, recovering a panic.
func (s *Socket) parse(ctx context.Context, p SubscriptionParser, channel string, query json.RawMessage) (o *ChannelOptions, err error) {
	defer func() {
		if r := recover(); r != nil {
			s.srv.log.Error("sss: subscription parser panicked", "socket", s.id, "channel", channel, "panic", r)
			o, err = nil, protocol.NewInternalError()
		}
	}()
	return p(ctx, s, channel, query)
}

// joinError maps a hub join failure to a wire error; unavailable is true
// when the backend cannot answer now.
func joinError(err error) (e *protocol.Error, unavailable bool) {
	if errors.Is(err, errChannelFull) {
		return protocol.NewError(protocol.CodeTooManySubscriptions, "channel is full"), false
	}
	return protocol.NewError(protocol.CodeUnavailable, "backend unavailable, retry later"), true
}

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
