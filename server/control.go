package server

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

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
