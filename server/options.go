package server

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"path"
	"time"

	"github.com/sss-go/sss/protocol"
)

// Session is what a SessionParser returns for an accepted upgrade request.
type Session struct {
	// User is the session's user id; "" means no user (and no user
	// channel). A non-empty User must satisfy protocol.ValidUserID.
	User string
	// SessionID identifies the session across reconnects; "" makes the
	// server generate one (a random uuid).
	SessionID string
	// Values are per-socket values, read with Socket.Value.
	Values map[string]any
	// Info is a small JSON object attached to the socket's presence
	// entries (scaler.Member.Info); nil means none. Info that is not valid
	// JSON in UTF-8 is dropped (and logged).
	Info json.RawMessage
}

// ChannelOptions tunes the channels that match a rule.
type ChannelOptions struct {
	// Presence turns on presence for the channel: its subscribers are
	// recorded with the scaler (Server.Presence, Server.Count) and
	// "_presence" join/leave tells go to its subscribers on every
	// instance. Off, the server makes no presence writes for it and
	// Server.Presence and Server.Count return ErrPresenceOff.
	Presence bool
	// MaxSubscribers bounds the sockets subscribed to the channel on this
	// instance; 0 means unlimited.
	MaxSubscribers int
	// History is informational only: the server does nothing with it
	// (how long publications are kept is the scaler's to decide), and an
	// application may read it back from its own rules.
	History bool
}

// ChannelRule gives options to the channels whose name matches Pattern
// (path.Match syntax).
type ChannelRule struct {
	Pattern string
	Options ChannelOptions
}

// Options configures a Server. The zero value of each field means the
// default given in its comment.
type Options struct {
	// SessionParser runs on every upgrade request; nil accepts all
	// requests, with no user and a generated session id.
	SessionParser SessionParser
	// SubscriptionParser decides subscriptions; nil accepts every valid
	// channel name.
	SubscriptionParser SubscriptionParser
	// Channels gives options by channel name pattern; the first match wins.
	Channels []ChannelRule
	// DefaultChannel are the options of channels no rule matches.
	DefaultChannel ChannelOptions
	// RefuseWithHTTP403 answers a refused session with HTTP 403 instead of
	// completing the upgrade and closing with 4001.
	RefuseWithHTTP403 bool
	// CheckOrigin decides the Origin check, on the HTTP handler's
	// goroutine (a panic refuses the request); nil accepts requests
	// without an Origin header, same-origin requests and AllowedOrigins.
	CheckOrigin func(r *http.Request) bool
	// AllowedOrigins are origins ("https://example.com") accepted by the
	// default check besides same-origin ones; "*" accepts all.
	AllowedOrigins []string
	// HeartbeatInterval is the time between heartbeats. Default 30 s;
	// negative turns heartbeats off.
	HeartbeatInterval time.Duration
	// HeartbeatThreshold is sent to clients as hbThreshold. Default 2.5 s.
	HeartbeatThreshold time.Duration
	// MaxFrameBytes bounds a client frame. Default 64 KiB.
	MaxFrameBytes int
	// MaxDepth bounds JSON nesting of a client frame. Default 32.
	MaxDepth int
	// MaxChannelLen bounds channel names. Default 200.
	MaxChannelLen int
	// MaxSubscriptions bounds the subscriptions of one socket. Default 1000.
	MaxSubscriptions int
	// BadFrameLimit is how many bad frames a socket may send per
	// BadFrameWindow; the one past it gets its error, then close 1008.
	// Default 10; negative means no limit.
	BadFrameLimit int
	// BadFrameWindow is the bad-frame counting window. Default 10 s.
	BadFrameWindow time.Duration
	// MaxConcurrentAsks bounds the asks a socket has running; beyond it an
	// ask is answered "rate_limited". Default 64.
	MaxConcurrentAsks int
	// RateLimit bounds asks+tells+subscribes per second per socket
	// (answered "rate_limited"). 0 means off.
	RateLimit int
	// SendQueueMessages bounds a socket's send queue in frames; overflow
	// closes it with 4002. Default 1024.
	SendQueueMessages int
	// SendQueueBytes bounds a socket's send queue in bytes. Default 4 MiB.
	SendQueueBytes int
	// MaxRecovery is the most missed publications one SYNC entry may
	// recover; beyond it the entry is not recoverable. Default 1000.
	MaxRecovery int
	// RecoveryWindow is how many recent publications the server keeps per
	// live channel to answer SYNC without reading the scaler. Default 256;
	// negative means none.
	RecoveryWindow int
	// BootGrace is how long a booted client has to close by itself before
	// the server closes with 4001. Default 2 s.
	BootGrace time.Duration
	// ShutdownSpread is the period over which Shutdown closes sockets.
	// Default 10 s; negative means all at once.
	ShutdownSpread time.Duration
	// ShutdownCloseCode is 1001 (default) or 1012.
	ShutdownCloseCode int
	// WriteTimeout bounds one batch of writes to a socket. Default 10 s.
	WriteTimeout time.Duration
	// BackendTimeout bounds each scaler call the server makes for a
	// socket (subscribe, unsubscribe, position, history, presence, user
	// registration), and the wait for a channel another socket is
	// subscribing; closing the socket cancels them. When it passes, a
	// SUBSCRIBE is answered "unavailable", and a SYNC, or a BEGIN whose
	// user channel cannot go live, is closed with 1013 so the client
	// retries. The calls that clean up after a closed socket share one
	// such bound. Default 5 s.
	BackendTimeout time.Duration
	// EnableCompression negotiates permessage-deflate when a client offers
	// it. Off by default (docs/protocol.md, "1. Transport").
	EnableCompression bool
	// OnOpen is called when a socket is open (after the upgrade), on the
	// HTTP handler's goroutine. It must not block.
	//
	// No hook runs under a lock of the server, so hooks may call any
	// method of the Server or Socket. A panic in a hook is recovered and
	// logged with the socket id; a panic in OnOpen closes that socket with
	// 1011 (protocol.CloseInternalError).
	OnOpen func(sock *Socket)
	// OnClose is called once per socket when it is gone, on its reader
	// goroutine, with the close code and reason the server sent (or
	// echoed); 1006 when the connection broke without a close frame.
	OnClose func(sock *Socket, code int, reason string)
	// OnSubscribe is called after a socket's subscription is granted, on
	// the socket's handler goroutine; it should return quickly (the
	// socket's later frames wait).
	OnSubscribe func(sock *Socket, channel string)
	// OnUnsubscribe is called after a socket's subscription ends: on the
	// socket's handler goroutine (UNSUBSCRIBE), its reader goroutine (the
	// socket is gone) or the goroutine of a BootChannel; it should return
	// quickly.
	OnUnsubscribe func(sock *Socket, channel string)
	// OnChannelOccupied is called when a channel gains its first
	// subscriber on this instance, on that socket's handler goroutine.
	OnChannelOccupied func(channel string)
	// OnChannelVacated is called when a channel loses its last subscriber
	// on this instance, on the goroutine of OnUnsubscribe.
	OnChannelVacated func(channel string)
	// OnEvent receives metrics events, on the goroutine where each
	// happens (see the package doc, "Concurrency"). It is called from
	// hot paths (but never under a lock of the server) and must not
	// block.
	OnEvent func(e Event)
	// Logger receives the server's logs; nil means slog.Default().
	Logger *slog.Logger
}

// withDefaults returns o with every zero field set to its default, and
// validates it.
func (o Options) withDefaults() (Options, error) {
	// Zero or negative means the default.
	positive(&o.HeartbeatThreshold, 2500*time.Millisecond)
	positive(&o.MaxFrameBytes, protocol.DefaultMaxFrameBytes)
	positive(&o.MaxDepth, protocol.DefaultMaxDepth)
	positive(&o.MaxChannelLen, protocol.DefaultMaxChannelLen)
	positive(&o.MaxSubscriptions, 1000)
	positive(&o.BadFrameWindow, 10*time.Second)
	positive(&o.MaxConcurrentAsks, 64)
	positive(&o.SendQueueMessages, 1024)
	positive(&o.SendQueueBytes, 4<<20)
	positive(&o.MaxRecovery, 1000)
	positive(&o.BootGrace, 2*time.Second)
	positive(&o.WriteTimeout, 10*time.Second)
	positive(&o.BackendTimeout, 5*time.Second)
	// Zero means the default; negative means off.
	nonZero(&o.HeartbeatInterval, 30*time.Second)
	nonZero(&o.BadFrameLimit, 10)
	nonZero(&o.RecoveryWindow, 256)
	nonZero(&o.ShutdownSpread, 10*time.Second)
	nonZero(&o.ShutdownCloseCode, protocol.CloseGoingAway)
	if o.ShutdownCloseCode != protocol.CloseGoingAway && o.ShutdownCloseCode != protocol.CloseServiceRestart {
		return o, fmt.Errorf("%w: ShutdownCloseCode must be 1001 or 1012, not %d", ErrBadOptions, o.ShutdownCloseCode)
	}
	for _, r := range o.Channels {
		if _, err := path.Match(r.Pattern, ""); err != nil {
			return o, fmt.Errorf("%w: channel pattern %q: %v", ErrBadOptions, r.Pattern, err)
		}
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return o, nil
}

// positive sets *v to def unless it is positive.
func positive[T int | time.Duration](v *T, def T) {
	if *v <= 0 {
		*v = def
	}
}

// nonZero sets *v to def when it is zero.
func nonZero[T int | time.Duration](v *T, def T) {
	if *v == 0 {
		*v = def
	}
}

// channelOptions returns the options of the first rule matching channel.
func (o *Options) channelOptions(channel string) ChannelOptions {
	for _, r := range o.Channels {
		if ok, _ := path.Match(r.Pattern, channel); ok {
			return r.Options
		}
	}
	return o.DefaultChannel
}
