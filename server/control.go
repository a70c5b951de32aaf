package server

import (
	"context"
	"encoding/json"
	"fmt"
	"time"
	"unicode/utf8"

	"github.com/sss-go/sss/protocol"
	"github.com/sss-go/sss/scaler"
)

// PublishOptions tunes one Publish.
type PublishOptions struct {
	// Exclude, when set and subscribed to the channel, gets UPDATESUB in
	// place of this publication's FEED, in stream order (PROTOCOL.md).
	Exclude *Socket
	// IdempotencyKey makes a retried publish return the first uid.
	IdempotencyKey string
}

// UserChannel returns the user channel of user id user
// (protocol.UserChannel).
func UserChannel(user string) string { return protocol.UserChannel(user) }

// checkPublishChannel accepts valid channel names and user channels.
func checkPublishChannel(channel string, maxLen int) error {
	if protocol.ValidChannel(channel, maxLen) && !protocol.ReservedChannel(channel) {
		return nil
	}
	if _, ok := protocol.UserFromChannel(channel); ok {
		return nil
	}
	return fmt.Errorf("%w: %q", ErrBadChannel, channel)
}

// publish stores a publication through sc.
func publish(ctx context.Context, sc scaler.Scaler, maxLen int, channel, topic string, msg any, key string) (protocol.UID, json.RawMessage, error) {
	if err := checkPublishChannel(channel, maxLen); err != nil {
		return protocol.UID{}, nil, err
	}
	if topic == "" {
		return protocol.UID{}, nil, ErrBadTopic
	}
	if err := checkText("topic", topic); err != nil {
		return protocol.UID{}, nil, err
	}
	raw, err := marshalMsg(msg)
	if err != nil {
		return protocol.UID{}, nil, err
	}
	uid, err := sc.Publish(ctx, channel, topic, raw, scaler.PublishOptions{IdempotencyKey: key})
	if err != nil {
		return protocol.UID{}, raw, fmt.Errorf("sss/server: publish %q: %w", channel, err)
	}
	return uid, raw, nil
}

// Publish stores msg (marshalled with encoding/json; json.RawMessage
// verbatim) as a publication of channel on topic, and returns its uid once
// durable. Every subscriber on every instance receives it through its
// instance's ordered stream, except opts.Exclude, which gets UPDATESUB in
// its place. channel is a valid channel name or a user channel.
//
// A msg or topic that is not valid UTF-8 is refused with an error
// wrapping ErrInvalidPayload, and nothing is stored. An error wrapping
// scaler.ErrUncertain means the outcome is unknown: the publication may
// or may not have been stored (the write went out, then ctx ended or the
// connection failed); retry with the same opts.IdempotencyKey, which
// stores it at most once and returns its uid. Any other error means it
// was not stored. Options.OnEvent gets EventPublish with the same error.
func (s *Server) Publish(ctx context.Context, channel, topic string, msg any, opts PublishOptions) (protocol.UID, error) {
	start := time.Now()
	ex := opts.Exclude
	if ex != nil && !ex.subscribed(channel) {
		ex = nil
	}
	if ex != nil {
		// Park the channel's deliveries to ex until the exclusion is
		// known, so the UPDATESUB takes the FEED's place in order.
		ex.hold(channel)
	}
	uid, _, err := publish(ctx, s.sc, s.opts.MaxChannelLen, channel, topic, msg, opts.IdempotencyKey)
	if ex != nil {
		ex.mu.Lock()
		if _, still := ex.subs[channel]; err == nil && still {
			if ex.excl == nil {
				ex.excl = make(map[string][]protocol.UID)
			}
			ex.excl[channel] = append(ex.excl[channel], uid)
			ex.updateSlowLocked()
		}
		ex.releaseLocked(channel, nil)
		ex.mu.Unlock()
	}
	if err == nil {
		s.stats.published.Add(1)
	}
	if s.opts.OnEvent != nil {
		s.emit(Event{Kind: EventPublish, Channel: channel, Latency: time.Since(start), Err: err})
	}
	return uid, err
}

// control sends a control message.
func control(ctx context.Context, cp scaler.ControlPlane, c scaler.Control) error {
	if err := cp.Control(ctx, c); err != nil {
		return fmt.Errorf("sss/server: %s: %w", c.Kind, err)
	}
	return nil
}

func tellControl(ctx context.Context, cp scaler.ControlPlane, kind scaler.ControlKind, target, topic string, msg any) error {
	if topic == "" {
		return ErrBadTopic
	}
	if err := checkText("topic", topic); err != nil {
		return err
	}
	raw, err := marshalMsg(msg)
	if err != nil {
		return err
	}
	return control(ctx, cp, scaler.Control{Kind: kind, Target: target, Topic: topic, Msg: raw})
}

// Broadcast sends a BROADCAST to every socket on every instance (not
// stored, not recoverable). A msg or topic that is not valid UTF-8 is
// refused with an error wrapping ErrInvalidPayload (so are those of the
// Tell methods, and boot reasons).
func (s *Server) Broadcast(ctx context.Context, topic string, msg any) error {
	return tellControl(ctx, s.cp, scaler.ControlBroadcast, "", topic, msg)
}

// BootSocket boots the socket with that id, on whichever instance holds
// it: BOOT frame, then close 4001 with reason after Options.BootGrace
// unless the client closed first.
func (s *Server) BootSocket(ctx context.Context, socketID, reason string) error {
	return boot(ctx, s.cp, scaler.ControlBootSocket, socketID, reason)
}

// boot sends a boot control message; the reason must be valid UTF-8 and is
// cut to protocol.MaxReasonLen bytes on a rune boundary.
func boot(ctx context.Context, cp scaler.ControlPlane, kind scaler.ControlKind, target, reason string) error {
	if err := checkText("reason", reason); err != nil {
		return err
	}
	return control(ctx, cp, scaler.Control{Kind: kind, Target: target, Reason: protocol.TruncateReason(reason)})
}

// BootSession boots every socket of a session on every instance.
func (s *Server) BootSession(ctx context.Context, sessionID, reason string) error {
	return boot(ctx, s.cp, scaler.ControlBootSession, sessionID, reason)
}

// BootUser boots every socket of a user on every instance.
func (s *Server) BootUser(ctx context.Context, userID, reason string) error {
	return boot(ctx, s.cp, scaler.ControlBootUser, userID, reason)
}

// BootChannel removes every socket's subscription to channel on every
// instance. The sockets stay connected; each gets the error frame of
// protocol.NewChannelBootedError, which names the channel in its
// "channel" key, since the wire has no unsubscribe notice (BOOTCHANNEL is
// reserved).
func (s *Server) BootChannel(ctx context.Context, channel string) error {
	return control(ctx, s.cp, scaler.Control{Kind: scaler.ControlBootChannel, Target: channel})
}

// TellUser sends a TELL to every socket of a user on every instance.
func (s *Server) TellUser(ctx context.Context, userID, topic string, msg any) error {
	return tellControl(ctx, s.cp, scaler.ControlTellUser, userID, topic, msg)
}

// TellSession sends a TELL to every socket of a session on every instance.
func (s *Server) TellSession(ctx context.Context, sessionID, topic string, msg any) error {
	return tellControl(ctx, s.cp, scaler.ControlTellSession, sessionID, topic, msg)
}

// TellSocket sends a TELL to one socket, on whichever instance holds it.
func (s *Server) TellSocket(ctx context.Context, socketID, topic string, msg any) error {
	return tellControl(ctx, s.cp, scaler.ControlTellSocket, socketID, topic, msg)
}

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

// onControl handles the control plane (scaler goroutine; must not block).
func (s *Server) onControl(c scaler.Control) {
	switch c.Kind {
	case scaler.ControlBroadcast:
		s.sendAll(s.socketsOf(nil, ""), protocol.AppendBroadcast(nil, c.Topic, orNull(c.Msg)))
	case scaler.ControlTellSocket:
		s.sendAll(s.socketByID(c.Target), protocol.AppendTell(nil, c.Topic, orNull(c.Msg)))
	case scaler.ControlTellSession:
		s.sendAll(s.socketsOf(s.bySession, c.Target), protocol.AppendTell(nil, c.Topic, orNull(c.Msg)))
	case scaler.ControlTellUser:
		s.sendAll(s.socketsOf(s.byUser, c.Target), protocol.AppendTell(nil, c.Topic, orNull(c.Msg)))
	case scaler.ControlBootSocket:
		s.bootAll(s.socketByID(c.Target), c.Reason)
	case scaler.ControlBootSession:
		s.bootAll(s.socketsOf(s.bySession, c.Target), c.Reason)
	case scaler.ControlBootUser:
		s.bootAll(s.socketsOf(s.byUser, c.Target), c.Reason)
	case scaler.ControlBootChannel:
		subs := s.hub.subscribers(c.Target)
		if len(subs) == 0 {
			return
		}
		frame := protocol.AppendErrorFrame(nil, protocol.NewChannelBootedError(c.Target))
		// Leaving may call the scaler: not on its goroutine.
		if !s.work.add(false) {
			return
		}
		go func() {
			defer s.work.done()
			ctx, cancel := context.WithTimeout(context.Background(), s.opts.BackendTimeout)
			defer cancel()
			for _, sock := range subs {
				s.unsubscribeSocket(ctx, sock, c.Target)
				sock.sendText(frame)
			}
		}()
	case scaler.ControlJoin, scaler.ControlLeave:
		if c.Member == nil {
			return
		}
		subs := s.hub.subscribers(c.Target)
		if len(subs) == 0 {
			return
		}
		frame := presenceFrame(c)
		for _, sock := range subs {
			if sock.id != c.Member.ID { // a socket is not told of its own join
				sock.sendText(frame)
			}
		}
	}
}

// presenceFrame encodes a _presence TELL.
func presenceFrame(c scaler.Control) []byte {
	type member struct {
		User *string         `json:"user"`
		Info json.RawMessage `json:"info"`
	}
	ev := "join"
	if c.Kind == scaler.ControlLeave {
		ev = "leave"
	}
	m := member{Info: c.Member.Info}
	if c.Member.User != "" {
		u := c.Member.User
		m.User = &u
	}
	if len(m.Info) == 0 || !utf8.Valid(m.Info) || !json.Valid(m.Info) {
		m.Info = json.RawMessage("{}")
	}
	raw, err := marshalMsg(struct {
		Channel string `json:"channel"`
		Event   string `json:"event"`
		Member  member `json:"member"`
	}{c.Target, ev, m})
	if err != nil {
		raw = nullJSON
	}
	return protocol.AppendTell(nil, protocol.PresenceTopic, raw)
}

// orNull returns a control message's payload for a frame: null for none,
// valid UTF-8 whatever the sender sent.
func orNull(m json.RawMessage) json.RawMessage {
	if len(m) == 0 {
		return nullJSON
	}
	return validOrReplaced(m)
}

func (s *Server) socketByID(id string) []*Socket {
	s.smu.RLock()
	defer s.smu.RUnlock()
	if sock := s.sockets[id]; sock != nil {
		return []*Socket{sock}
	}
	return nil
}

// sendAll queues one shared frame to each socket.
func (s *Server) sendAll(socks []*Socket, frame []byte) {
	for _, sock := range socks {
		sock.sendText(frame)
	}
}

// bootAll sends BOOT to each socket and closes it with 4001 after the
// grace period unless the client closed first.
func (s *Server) bootAll(socks []*Socket, reason string) {
	reason = protocol.TruncateReason(reason)
	frame := protocol.AppendBoot(nil, reason)
	for _, sock := range socks {
		sock.mu.Lock()
		if sock.enqueueLocked(outItem{data: frame, op: opText}) && sock.bootTimer == nil {
			sk := sock
			sock.bootTimer = time.AfterFunc(s.opts.BootGrace, func() {
				sk.Close(protocol.CloseBooted, reason)
			})
		}
		sock.mu.Unlock()
	}
}

// onReset handles a stream the scaler could not continue without a hole.
func (s *Server) onReset(channel string, pos protocol.UID, err error) {
	s.log.Warn("sss: channel stream reset", "channel", channel, "uid", pos.String(), "err", err)
	s.hub.reset(channel, pos)
}
