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
	// Logger receives the logs of the in-memory scaler NewPublisher makes
	// when given none; nil means slog.Default().
	Logger *slog.Logger
}

// Publisher publishes, broadcasts, boots and tells through a scaler from a
// process that serves no sockets (a worker, a cron job, an admin tool).
// Its Publish, Broadcast, Boot and Tell methods are those of Server, with
// the same signatures and errors; a Publisher has no sockets, so
// PublishOptions.Exclude must be nil. Broadcasts, boots and tells need a
// scaler with a scaler.ControlPlane; without one they return an error
// wrapping ErrNotSupported. Its methods are safe for concurrent use.
type Publisher struct {
	controls
	own  bool
	once sync.Once
	err  error
}

// NewPublisher returns a Publisher using sc; nil sc makes an in-memory
// scaler (useful in tests only), closed by Close.
func NewPublisher(sc scaler.Scaler, opts PublisherOptions) (*Publisher, error) {
	maxLen := opts.MaxChannelLen
	if maxLen <= 0 {
		maxLen = protocol.DefaultMaxChannelLen
	}
	p := &Publisher{}
	if sc == nil {
		log := opts.Logger
		if log == nil {
			log = slog.Default()
		}
		sc = scaler.NewMemory(scaler.MemoryOptions{Logger: log})
		p.own = true
	}
	p.controls = controls{sc: sc, cp: controlPlane(sc, noPlane{}), maxLen: maxLen}
	return p, nil
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
