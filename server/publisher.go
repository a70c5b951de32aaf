package server

import (
	"context"
	"log/slog"
	"sync"

	"github.com/sss-go/sss/protocol"
	"github.com/sss-go/sss/scaler"
)

// PublisherOptions configures a Publisher.
type PublisherOptions struct {
	// MaxChannelLen bounds channel names. Default 200.
	MaxChannelLen int
	// Logger receives logs; nil means slog.Default().
	Logger *slog.Logger
}

// Publisher publishes, broadcasts, boots and tells through a scaler from a
// process that serves no sockets (a worker, a cron job, an admin tool).
// Broadcasts, boots and tells need a scaler with a scaler.ControlPlane;
// without one they return an error wrapping ErrNotSupported.
// Its methods are safe for concurrent use.
type Publisher struct {
	sc     scaler.Scaler
	cp     scaler.ControlPlane
	own    bool
	maxLen int
	log    *slog.Logger
	once   sync.Once
	err    error
}

// NewPublisher returns a Publisher using sc; nil sc makes an in-memory
// scaler (useful in tests only), closed by Close.
func NewPublisher(sc scaler.Scaler, opts PublisherOptions) (*Publisher, error) {
	p := &Publisher{sc: sc, maxLen: opts.MaxChannelLen, log: opts.Logger}
	if p.maxLen <= 0 {
		p.maxLen = protocol.DefaultMaxChannelLen
	}
	if p.log == nil {
		p.log = slog.Default()
	}
	if p.sc == nil {
		p.sc = scaler.NewMemory(scaler.MemoryOptions{Logger: p.log})
		p.own = true
	}
	p.cp = controlPlane(p.sc, noPlane{})
	return p, nil
}

// Publish stores msg as a publication of channel on topic and returns its
// uid once durable (see Server.Publish). Errors are those of
// Server.Publish: ErrInvalidPayload for a msg or topic that is not valid
// UTF-8, and an error wrapping scaler.ErrUncertain when the outcome is
// unknown, to be retried with the same idempotencyKey.
func (p *Publisher) Publish(ctx context.Context, channel, topic string, msg any, idempotencyKey string) (protocol.UID, error) {
	uid, _, err := publish(ctx, p.sc, p.maxLen, channel, topic, msg, idempotencyKey)
	return uid, err
}

// Broadcast sends a BROADCAST to every socket on every instance.
func (p *Publisher) Broadcast(ctx context.Context, topic string, msg any) error {
	return tellControl(ctx, p.cp, scaler.ControlBroadcast, "", topic, msg)
}

// BootSocket boots one socket on whichever instance holds it.
func (p *Publisher) BootSocket(ctx context.Context, socketID, reason string) error {
	return boot(ctx, p.cp, scaler.ControlBootSocket, socketID, reason)
}

// BootSession boots every socket of a session.
func (p *Publisher) BootSession(ctx context.Context, sessionID, reason string) error {
	return boot(ctx, p.cp, scaler.ControlBootSession, sessionID, reason)
}

// BootUser boots every socket of a user.
func (p *Publisher) BootUser(ctx context.Context, userID, reason string) error {
	return boot(ctx, p.cp, scaler.ControlBootUser, userID, reason)
}

// BootChannel removes every socket's subscription to channel.
func (p *Publisher) BootChannel(ctx context.Context, channel string) error {
	return control(ctx, p.cp, scaler.Control{Kind: scaler.ControlBootChannel, Target: channel})
}

// TellUser sends a TELL to every socket of a user.
func (p *Publisher) TellUser(ctx context.Context, userID, topic string, msg any) error {
	return tellControl(ctx, p.cp, scaler.ControlTellUser, userID, topic, msg)
}

// TellSession sends a TELL to every socket of a session.
func (p *Publisher) TellSession(ctx context.Context, sessionID, topic string, msg any) error {
	return tellControl(ctx, p.cp, scaler.ControlTellSession, sessionID, topic, msg)
}

// TellSocket sends a TELL to one socket.
func (p *Publisher) TellSocket(ctx context.Context, socketID, topic string, msg any) error {
	return tellControl(ctx, p.cp, scaler.ControlTellSocket, socketID, topic, msg)
}

// Close closes the scaler if NewPublisher created it. Idempotent.
func (p *Publisher) Close(ctx context.Context) error {
	p.once.Do(func() {
		if p.own {
			p.err = p.sc.Close(ctx)
		}
	})
	return p.err
}
