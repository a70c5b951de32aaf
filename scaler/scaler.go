package scaler

import (
	"context"
	"encoding/json"
	"time"

	"github.com/sss-go/sss/protocol"
)

// Scaler connects one server instance to every other instance of a
// deployment. It is the only thing a server knows of other instances.
// This interface is the required core (streams, publish, recovery,
// health); the optional capabilities below (HistoryReader, ControlPlane,
// PresenceStore, UserRegistry) add what a scaler may also offer.
//
// Every method is safe for concurrent use and takes a context that bounds
// how long it may block. Failures are returned as errors that wrap the
// sentinels of this package where one applies (ErrUnavailable, ErrClosed,
// ErrTrimmed, ErrEpochChanged); no method panics on data from a backend.
//
// The contract, checked point by point by package scalertest:
//
//   - One ordered stream per channel per instance. After Subscribe returns
//     position P, the instance's Handler.Publication receives every
//     publication of that channel with a uid after P, its own included, in
//     uid order, each exactly once, until Unsubscribe. Publications at or
//     before P are never delivered. Deliveries of a channel may begin before
//     Subscribe returns (the caller buffers them), but never include uids at
//     or before P. Subscribe on a channel the instance already holds returns
//     the current position again and changes nothing else; subscriptions are
//     not reference counted (the server counts its sockets).
//   - Publish returns only once the publication is durable for this scaler,
//     then relays it. A server delivers to sockets only from the stream,
//     never from its own Publish call.
//   - Gap-free visible prefix: seqs of one epoch are 1, 2, 3, ... with no
//     holes, in one order every instance and every Since agrees on.
//   - Since returns exactly the publications after a uid, or an error
//     satisfying errors.Is(err, ErrNotRecoverable), or ErrUnavailable;
//     never a silent gap.
//   - An instance that misses relayed messages notices (sequence gaps, its
//     own probes, periodic position checks) and fills from the durable log
//     before delivering later ones. When the missing publications can no
//     longer be read (trimmed, history reset), Handler.Reset reports it
//     instead of skipping silently.
//   - Control messages (ControlPlane: broadcast, boot, presence events,
//     tells to a user or session) reach every running instance, the
//     sender included, at most once and outside every channel sequence.
//   - Shared state (PresenceStore, UserRegistry) is held under the
//     instance's lease and vanishes when the lease ends.
type Scaler interface {
	// Start attaches the handler that receives this instance's streams and
	// control messages, and starts the instance's lease and background
	// work. A server calls it once, before Subscribe. A process that only
	// publishes (scaler used by a server.Publisher) need not call it.
	// Calling Start twice returns an error.
	Start(ctx context.Context, h Handler) error

	// Subscribe makes this instance live on channel and returns the
	// channel's position at that moment (see the ordered-stream rule
	// above). An empty channel's position is "<epoch>.0".
	Subscribe(ctx context.Context, channel string) (protocol.UID, error)

	// Unsubscribe stops this instance's stream of channel. Unsubscribing a
	// channel the instance does not hold is not an error.
	Unsubscribe(ctx context.Context, channel string) error

	// Publish stores a publication and returns its uid once it is durable,
	// then relays it to every instance subscribed to channel. With a
	// non-empty PublishOptions.IdempotencyKey, a retried publish with the
	// same key on the same channel within the scaler's idempotency window
	// returns the first uid and stores nothing new. It returns an error
	// wrapping ErrUncertain when it cannot tell whether the publication
	// was stored, ErrUnavailable when it surely was not, and ErrBadPayload
	// when msg is not valid UTF-8 JSON text.
	Publish(ctx context.Context, channel, topic string, msg json.RawMessage, opts PublishOptions) (protocol.UID, error)

	// Position returns the channel's current position without subscribing.
	Position(ctx context.Context, channel string) (protocol.UID, error)

	// Since returns, in order, the publications of channel after uid `after`,
	// at most limit of them (limit <= 0 means no limit). It returns an
	// error wrapping ErrEpochChanged when after's epoch is not the
	// channel's current one, ErrTrimmed when some publication after `after`
	// is no longer kept, ErrFuture when after is beyond the channel's
	// position, and ErrUnavailable when the backend cannot answer now.
	Since(ctx context.Context, channel string, after protocol.UID, limit int) ([]Publication, error)

	// Health returns nil when this instance can serve: relay connected and
	// probing OK, log reachable, lease held. Otherwise an error saying
	// what is wrong (wrapping ErrUnavailable).
	Health(ctx context.Context) error

	// Close stops the streams, drops this instance's lease (and so its
	// presence and user entries) and releases what the scaler created. It
	// waits for background goroutines, bounded by ctx. Idempotent.
	Close(ctx context.Context) error
}

// The optional capabilities. A server finds them with a type assertion on
// its Scaler, the way io.Copy finds io.WriterTo, and falls back as each
// says when one is missing; scalertest checks every capability a scaler
// offers. A scaler that connects instances should offer ControlPlane and
// PresenceStore: without them broadcasts, boots, tells and presence reach
// only the sockets of the instance that sends them.

// HistoryReader reads a channel's newest publications (for a page that
// loads a channel's state when it first subscribes).
//
// Without it, server.Server.History reads them with Position and Since.
type HistoryReader interface {
	// History returns up to limit of the newest publications of channel,
	// oldest first (limit <= 0 means all that are kept).
	History(ctx context.Context, channel string, limit int) ([]Publication, error)
}

// ControlPlane carries control messages (broadcasts, boots, tells to a
// user, session or socket, presence events) to every instance.
//
// Without it, a server delivers its own control messages to its own
// sockets only: right for a single instance, not for several.
type ControlPlane interface {
	// ID returns this instance's id, unique within the backend; it is
	// the Origin of the control messages it sends.
	ID() string
	// Control sends a control message to every running instance,
	// this one included. Not stored, not recoverable.
	Control(ctx context.Context, msg Control) error
}

// PresenceStore keeps who is present on which channel, across instances,
// under each instance's lease.
//
// Without it, a server keeps the presence of its own sockets in memory and
// Presence and Count see only them.
type PresenceStore interface {
	// Join records member as present on channel under this instance's
	// lease; joining again with the same Member.ID replaces the entry.
	Join(ctx context.Context, channel string, member Member) error
	// Leave removes the member with that id from channel.
	Leave(ctx context.Context, channel, memberID string) error
	// Presence returns the members present on channel on every instance
	// whose lease is alive, in no particular order.
	Presence(ctx context.Context, channel string) ([]Member, error)
	// Count returns len(Presence(channel)) without building the list.
	Count(ctx context.Context, channel string) (int, error)
}

// UserRegistry records which instances hold sockets of which users, under
// each instance's lease.
//
// Without it, server.Server.UserOnline sees only this instance's sockets.
type UserRegistry interface {
	// ID returns this instance's id, unique within the backend.
	ID() string
	// AddUser records that this instance holds a socket of user; calls are
	// counted, and RemoveUser undoes one.
	AddUser(ctx context.Context, user string) error
	// RemoveUser undoes one AddUser.
	RemoveUser(ctx context.Context, user string) error
	// UserInstances returns the ids of the live instances holding a socket
	// of user.
	UserInstances(ctx context.Context, user string) ([]string, error)
}

// Handler receives what a Scaler delivers to its instance. Each function is
// called from the scaler's goroutines; calls for one channel never overlap
// and come in uid order. Functions must not block: a server enqueues and
// returns. A nil function means "not interested".
type Handler struct {
	// Publication receives the instance's ordered streams.
	Publication func(p Publication)
	// Reset reports that the stream of channel could not be continued
	// without a hole (the missing publications were trimmed or the
	// history was reset). The stream goes on after position pos; the
	// server must treat every subscriber of channel as needing recovery
	// (docs/protocol.md §7: they will be told "not recoverable").
	Reset func(channel string, pos protocol.UID, err error)
	// Control receives control messages from every instance, this one
	// included.
	Control func(msg Control)
	// Event receives operational events for logs and metrics.
	Event func(e Event)
}

// Publication is one stored message of a channel.
type Publication struct {
	// Channel is the channel the publication belongs to.
	Channel string
	// UID is its position in the channel.
	UID protocol.UID
	// Topic is the application's topic.
	Topic string
	// Msg is the JSON payload, valid JSON text.
	Msg json.RawMessage
	// Time is when the publication was stored.
	Time time.Time
}

// PublishOptions tunes one Publish call.
type PublishOptions struct {
	// IdempotencyKey, when not empty, makes a retried Publish with the same
	// key on the same channel return the first uid instead of storing
	// again, within the scaler's idempotency window.
	IdempotencyKey string
}

// ControlKind says what a control message does.
type ControlKind uint8

// Control message kinds.
const (
	// ControlBroadcast sends Topic/Msg to every socket of every instance.
	ControlBroadcast ControlKind = iota + 1
	// ControlBootSocket boots the socket whose id is Target.
	ControlBootSocket
	// ControlBootSession boots every socket of session Target.
	ControlBootSession
	// ControlBootUser boots every socket of user Target.
	ControlBootUser
	// ControlBootChannel removes every socket's subscription to channel
	// Target (the sockets stay connected).
	ControlBootChannel
	// ControlTellSocket sends a tell (Topic/Msg) to socket Target.
	ControlTellSocket
	// ControlTellSession sends a tell to every socket of session Target.
	ControlTellSession
	// ControlTellUser sends a tell to every socket of user Target.
	ControlTellUser
	// ControlJoin reports that Member joined channel Target.
	ControlJoin
	// ControlLeave reports that Member left channel Target.
	ControlLeave
	// ControlOccupied reports that channel Target gained its first
	// subscriber on instance Origin.
	ControlOccupied
	// ControlVacated reports that channel Target lost its last subscriber
	// on instance Origin.
	ControlVacated
)

// String returns the kind's name.
func (k ControlKind) String() string {
	switch k {
	case ControlBroadcast:
		return "broadcast"
	case ControlBootSocket:
		return "boot_socket"
	case ControlBootSession:
		return "boot_session"
	case ControlBootUser:
		return "boot_user"
	case ControlBootChannel:
		return "boot_channel"
	case ControlTellSocket:
		return "tell_socket"
	case ControlTellSession:
		return "tell_session"
	case ControlTellUser:
		return "tell_user"
	case ControlJoin:
		return "join"
	case ControlLeave:
		return "leave"
	case ControlOccupied:
		return "occupied"
	case ControlVacated:
		return "vacated"
	}
	return "unknown"
}

// Control is a message of the control plane: it reaches every running
// instance at most once and is never stored.
type Control struct {
	// Kind says what the message does.
	Kind ControlKind `json:"k"`
	// Target is the socket, session, user or channel the message is about.
	Target string `json:"t,omitempty"`
	// Topic and Msg are the payload of broadcasts and tells.
	Topic string          `json:"tp,omitempty"`
	Msg   json.RawMessage `json:"m,omitempty"`
	// Reason is the boot reason (at most 123 bytes on the wire).
	Reason string `json:"r,omitempty"`
	// Member is the subject of join and leave.
	Member *Member `json:"mb,omitempty"`
	// Origin is the id of the sending instance; set by the scaler.
	Origin string `json:"o,omitempty"`
}

// Member is one presence entry of a channel: usually one socket.
type Member struct {
	// ID is unique per entry (a socket id).
	ID string `json:"id"`
	// User is the member's user id, empty for anonymous sockets.
	User string `json:"user,omitempty"`
	// Info is a small JSON object the application attaches.
	Info json.RawMessage `json:"info,omitempty"`
}

// EventKind classifies an operational Event.
type EventKind uint8

// Event kinds.
const (
	// EventRelayDisconnected: the relay (e.g. Redis pub/sub) connection
	// was lost.
	EventRelayDisconnected EventKind = iota + 1
	// EventRelayReconnected: the relay connection is back; every served
	// channel is being checked.
	EventRelayReconnected
	// EventGapFilled: missing publications of Channel were read from the
	// durable log (Count of them) before later ones were delivered.
	EventGapFilled
	// EventGapLost: publications of Channel could not be recovered; the
	// stream was reset (see Handler.Reset).
	EventGapLost
	// EventProbeFailed: the relay probe did not come back in time.
	EventProbeFailed
	// EventTrimmed: retention removed Count publications of Channel.
	EventTrimmed
	// EventLeaseLost: the instance's lease had ended; it re-registered
	// what it holds.
	EventLeaseLost
	// EventBackendError: a background operation failed (Err).
	EventBackendError
)

// String returns the kind's name.
func (k EventKind) String() string {
	switch k {
	case EventRelayDisconnected:
		return "relay_disconnected"
	case EventRelayReconnected:
		return "relay_reconnected"
	case EventGapFilled:
		return "gap_filled"
	case EventGapLost:
		return "gap_lost"
	case EventProbeFailed:
		return "probe_failed"
	case EventTrimmed:
		return "trimmed"
	case EventLeaseLost:
		return "lease_lost"
	case EventBackendError:
		return "backend_error"
	}
	return "unknown"
}

// Event is an operational event of a scaler, for logs and metrics.
type Event struct {
	// Kind says what happened.
	Kind EventKind
	// Channel is the channel concerned, empty for instance-wide events.
	Channel string
	// Count is how many publications the event concerns (gap filled,
	// trimmed), else 0.
	Count int
	// Err is the cause, when there is one.
	Err error
	// Time is when it happened.
	Time time.Time
}

// Retention bounds how much history a channel keeps.
type Retention struct {
	// MaxCount is the number of newest publications kept; 0 means the
	// scaler's default, negative means no history at all beyond what
	// recovery needs right now (nothing is kept).
	MaxCount int
	// MaxAge is how long a publication is kept; 0 means the scaler's
	// default, negative means no age limit.
	MaxAge time.Duration
}

// FaultInjector is implemented by scalers that let the conformance suite
// inject faults. It is optional; scalertest skips the fault checks of a
// scaler that does not implement it.
type FaultInjector interface {
	// DropNextRelay makes this instance miss the next relayed publication
	// of channel, as if the relay lost it. The publication stays durable.
	DropNextRelay(channel string)
	// DelayNextRelay makes the next relayed publication of channel reach
	// this instance after d, letting later ones overtake it in the relay.
	DelayNextRelay(channel string, d time.Duration)
	// PauseLease stops renewing this instance's lease, as if the process
	// were paused: the lease ends after its time to live and the
	// instance's presence and user entries vanish for other instances.
	PauseLease()
	// ResumeLease resumes renewing. An instance whose lease ended finds
	// out at its next renewal, re-registers everything it holds and
	// reports EventLeaseLost.
	ResumeLease()
	// ResetHistory discards channel's history and starts a new epoch.
	ResetHistory(ctx context.Context, channel string) error
	// Trim removes every stored publication of channel up to and
	// including seq (in the current epoch).
	Trim(ctx context.Context, channel string, seq uint64) error
}
