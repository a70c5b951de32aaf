package server

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/sss-go/sss/protocol"
	"github.com/sss-go/sss/scaler"
)

// The outgoing control plane: Publish, Broadcast, the Boot methods and the
// Tell methods, written once in controls, which Server and Publisher both
// embed, so each is a method of both with the same signature and errors.
// What the receiving instances do with a control message is in
// incoming.go.

// controls sends publications and control messages through a scaler.
type controls struct {
	sc     scaler.Scaler
	cp     scaler.ControlPlane // sc's, or the fallback of its owner
	maxLen int                 // bound on channel names
	srv    *Server             // the Server that embeds it; nil in a Publisher
}

// PublishOptions tunes one Publish.
type PublishOptions struct {
	// Exclude, when set and subscribed to the channel, gets UPDATESUB in
	// place of this publication's FEED, in stream order (docs/protocol.md,
	// "5.6 UPDATESUB"). It must be a socket of the Server publishing: a
	// Publisher has no sockets, and Publish returns an error wrapping
	// ErrBadOptions when Exclude is set on one.
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

// Publish stores msg (marshalled with encoding/json; json.RawMessage
// verbatim) as a publication of channel on topic, and returns its uid once
// durable. Every subscriber on every instance receives it through its
// instance's ordered stream, except opts.Exclude, which gets UPDATESUB in
// its place. channel is a valid channel name or a user channel.
//
// A msg or topic that is not valid UTF-8, or a msg that is not valid JSON,
// is refused with an error wrapping ErrInvalidPayload, and nothing is
// stored. An error wrapping scaler.ErrUncertain means the outcome is
// unknown: the publication may or may not have been stored (the write went
// out, then ctx ended or the connection failed); retry with the same
// opts.IdempotencyKey, which stores it at most once and returns its uid.
// Any other error means it was not stored. On a Server,
// Options.OnEvent gets EventPublish with the same error.
func (c *controls) Publish(ctx context.Context, channel, topic string, msg any, opts PublishOptions) (protocol.UID, error) {
	if opts.Exclude != nil && opts.Exclude.srv != c.srv {
		return protocol.UID{}, fmt.Errorf("%w: PublishOptions.Exclude is not a socket of this server", ErrBadOptions)
	}
	start := time.Now()
	// Park the channel's deliveries to the excluded socket until the
	// publication's uid is known, so the UPDATESUB takes the FEED's place
	// in order.
	ex := opts.Exclude.beginExclusion(channel)
	uid, err := c.publish(ctx, channel, topic, msg, opts.IdempotencyKey)
	ex.endExclusion(channel, uid, err)
	if c.srv != nil {
		c.srv.published(channel, time.Since(start), err)
	}
	return uid, err
}

// publish checks and stores one publication.
func (c *controls) publish(ctx context.Context, channel, topic string, msg any, key string) (protocol.UID, error) {
	if err := checkPublishChannel(channel, c.maxLen); err != nil {
		return protocol.UID{}, err
	}
	raw, err := topicPayload(topic, msg)
	if err != nil {
		return protocol.UID{}, err
	}
	uid, err := c.sc.Publish(ctx, channel, topic, raw, scaler.PublishOptions{IdempotencyKey: key})
	if err != nil {
		return protocol.UID{}, fmt.Errorf("sss/server: publish %q: %w", channel, err)
	}
	return uid, nil
}

// topicPayload checks a topic (not empty, valid UTF-8) and encodes msg.
func topicPayload(topic string, msg any) (json.RawMessage, error) {
	if topic == "" {
		return nil, ErrBadTopic
	}
	return tellPayload(topic, msg)
}

// control sends a control message.
func (c *controls) control(ctx context.Context, m scaler.Control) error {
	if err := c.cp.Control(ctx, m); err != nil {
		return fmt.Errorf("sss/server: %s: %w", m.Kind, err)
	}
	return nil
}

// tell sends a control message carrying a topic and a msg.
func (c *controls) tell(ctx context.Context, kind scaler.ControlKind, target, topic string, msg any) error {
	raw, err := topicPayload(topic, msg)
	if err != nil {
		return err
	}
	return c.control(ctx, scaler.Control{Kind: kind, Target: target, Topic: topic, Msg: raw})
}

// boot sends a boot control message; the reason must be valid UTF-8 and is
// cut to protocol.MaxReasonLen bytes on a rune boundary.
func (c *controls) boot(ctx context.Context, kind scaler.ControlKind, target, reason string) error {
	if err := checkText("reason", reason); err != nil {
		return err
	}
	return c.control(ctx, scaler.Control{Kind: kind, Target: target, Reason: protocol.TruncateReason(reason)})
}

// Broadcast sends a BROADCAST to every socket on every instance (not
// stored, not recoverable). A msg or topic that is not valid UTF-8 is
// refused with an error wrapping ErrInvalidPayload (so are those of the
// Tell methods, and boot reasons).
func (c *controls) Broadcast(ctx context.Context, topic string, msg any) error {
	return c.tell(ctx, scaler.ControlBroadcast, "", topic, msg)
}

// BootSocket boots the socket with that id, on whichever instance holds
// it: BOOT frame, then close 4001 with reason after Options.BootGrace
// unless the client closed first.
func (c *controls) BootSocket(ctx context.Context, socketID, reason string) error {
	return c.boot(ctx, scaler.ControlBootSocket, socketID, reason)
}

// BootSession boots every socket of a session on every instance.
func (c *controls) BootSession(ctx context.Context, sessionID, reason string) error {
	return c.boot(ctx, scaler.ControlBootSession, sessionID, reason)
}

// BootUser boots every socket of a user on every instance.
func (c *controls) BootUser(ctx context.Context, userID, reason string) error {
	return c.boot(ctx, scaler.ControlBootUser, userID, reason)
}

// BootChannel removes every socket's subscription to channel on every
// instance. The sockets stay connected; each gets the error frame of
// protocol.NewChannelBootedError, which names the channel in its
// "channel" key, since the wire has no unsubscribe notice (BOOTCHANNEL is
// reserved; docs/protocol.md, "5.9 Removal from a channel").
func (c *controls) BootChannel(ctx context.Context, channel string) error {
	return c.control(ctx, scaler.Control{Kind: scaler.ControlBootChannel, Target: channel})
}

// TellUser sends a TELL to every socket of a user on every instance.
func (c *controls) TellUser(ctx context.Context, userID, topic string, msg any) error {
	return c.tell(ctx, scaler.ControlTellUser, userID, topic, msg)
}

// TellSession sends a TELL to every socket of a session on every instance.
func (c *controls) TellSession(ctx context.Context, sessionID, topic string, msg any) error {
	return c.tell(ctx, scaler.ControlTellSession, sessionID, topic, msg)
}

// TellSocket sends a TELL to one socket, on whichever instance holds it.
func (c *controls) TellSocket(ctx context.Context, socketID, topic string, msg any) error {
	return c.tell(ctx, scaler.ControlTellSocket, socketID, topic, msg)
}
