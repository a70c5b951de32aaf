package server

import (
	"time"

	"github.com/sss-go/sss/scaler"
)

// EventKind classifies an Event.
type EventKind uint8

// Event kinds.
const (
	// EventPublish: a Publish returned (Channel, Latency, Err).
	EventPublish EventKind = iota + 1
	// EventDelivery: a publication of Channel was handed to Count local
	// sockets.
	EventDelivery
	// EventSlowConsumer: Socket's send queue overflowed; it is closed with
	// 4002. Emitted from a goroutine of its own (the overflow is found
	// under the socket's lock), so it may arrive just after the close.
	EventSlowConsumer
	// EventBadFrame: Socket sent a bad frame (Err).
	EventBadFrame
	// EventScaler: the scaler reported Scaler.
	EventScaler
	// EventBackendError: a scaler call made for a socket failed (Err).
	EventBackendError
)

// String returns the kind's name.
func (k EventKind) String() string {
	switch k {
	case EventPublish:
		return "publish"
	case EventDelivery:
		return "delivery"
	case EventSlowConsumer:
		return "slow_consumer"
	case EventBadFrame:
		return "bad_frame"
	case EventScaler:
		return "scaler"
	case EventBackendError:
		return "backend_error"
	}
	return "unknown"
}

// Event is a metrics event passed to Options.OnEvent.
type Event struct {
	Kind    EventKind
	Channel string
	Socket  string
	Latency time.Duration
	Count   int
	Err     error
	Scaler  *scaler.Event
}

// Stats is a snapshot of a server's counters.
type Stats struct {
	// Sockets open now.
	Sockets int
	// Channels with at least one local subscriber.
	Channels int
	// Subscriptions of local sockets to those channels.
	Subscriptions int
	// Published counts successful Publish calls of this server.
	Published uint64
	// Delivered counts publications handed to sockets.
	Delivered uint64
	// SlowConsumerCloses counts sockets closed with 4002.
	SlowConsumerCloses uint64
	// BadFrames counts bad frames received.
	BadFrames uint64
}
