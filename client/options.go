package client

import (
	"crypto/tls"
	"log/slog"
	"net/http"
	"net/url"
	"time"
)

// Options configures a Client. The zero value is usable: every zero field
// means the documented default.
type Options struct {
	// URLs are further WebSocket URLs ("ws://" or "wss://") tried in turn
	// after the one given to Dial, so the client can fail over without a
	// load balancer: attempt n uses entry n modulo the list (Dial's URL is
	// entry 0). Ignored when SelectURL is set.
	URLs []string
	// SelectURL, when set, chooses the URL of each connection attempt.
	// attempt counts every attempt of the client's life from 0, initial
	// and reconnection attempts alike. It is called from the client's
	// connection goroutine and must not block.
	SelectURL func(attempt int) string
	// Header is sent with every upgrade request (for the server's session
	// parser): cookies, authorization, origin.
	Header http.Header
	// Jar, when set, supplies cookies for the upgrade requests and stores
	// the ones the server sets.
	Jar http.CookieJar
	// TLSConfig is used for wss:// URLs; nil means the default
	// configuration.
	TLSConfig *tls.Config
	// Proxy returns the HTTP proxy for a request; nil means no proxy.
	Proxy func(*http.Request) (*url.URL, error)

	// ReconnectBase is the base of the exponential backoff between
	// connection attempts: the wait before attempt n (counting from 0 after
	// a drop or a failed first attempt) is uniformly random in
	// [0, min(ReconnectCap, ReconnectBase*2^n)) ("full jitter").
	// Default 500 ms.
	ReconnectBase time.Duration
	// ReconnectCap bounds the backoff. Default 30 s.
	ReconnectCap time.Duration
	// ReconnectAttempts is how many attempts a reconnection makes before
	// giving up (status StatusReconnectFailed); Dial makes 1 +
	// ReconnectAttempts attempts. 0 means forever (Dial is then bounded
	// only by its context).
	ReconnectAttempts int
	// DisableReconnect makes Dial try once and a dropped connection end in
	// StatusReconnectFailed.
	DisableReconnect bool

	// HandshakeTimeout bounds one connection attempt: the WebSocket
	// upgrade plus the BEGIN or SYNC reply. Default 10 s.
	HandshakeTimeout time.Duration
	// WriteTimeout bounds each frame written. Default 10 s.
	WriteTimeout time.Duration
	// CloseTimeout is how long Close (and a boot) waits for the server to
	// echo the close frame and end the connection. Default 5 s.
	CloseTimeout time.Duration
	// MaxFrameBytes is the largest frame accepted from the server; a SYNC
	// reply carries every recovered publication in one frame. Default
	// 128 MiB.
	MaxFrameBytes int
	// EnableCompression offers permessage-deflate to the server.
	EnableCompression bool

	// Setup, when set, is called by Dial with the new client before its
	// first connection attempt: handlers registered there (OnTell,
	// OnStatusChange, OnBoot, ...) miss nothing the server sends right
	// after BEGIN. It must not call Ask, Tell, Subscribe or Close.
	Setup func(c *Client)

	// Logger receives the client's logs; nil means slog.Default().
	Logger *slog.Logger
}

func (o Options) withDefaults() Options {
	if o.ReconnectBase <= 0 {
		o.ReconnectBase = 500 * time.Millisecond
	}
	if o.ReconnectCap <= 0 {
		o.ReconnectCap = 30 * time.Second
	}
	if o.ReconnectCap < o.ReconnectBase {
		o.ReconnectCap = o.ReconnectBase
	}
	if o.ReconnectAttempts < 0 {
		o.ReconnectAttempts = 0
	}
	if o.HandshakeTimeout <= 0 {
		o.HandshakeTimeout = 10 * time.Second
	}
	if o.WriteTimeout <= 0 {
		o.WriteTimeout = 10 * time.Second
	}
	if o.CloseTimeout <= 0 {
		o.CloseTimeout = 5 * time.Second
	}
	if o.MaxFrameBytes <= 0 {
		o.MaxFrameBytes = 128 << 20
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return o
}

// Status is the state of a Client's connection, with the names and the
// order of the SSS JavaScript client's states (docs/protocol.md §13 covers
// that client).
type Status int

// Client states.
const (
	// StatusInit: created, Dial has not started connecting.
	StatusInit Status = iota
	// StatusStarting: the first connection attempt is under way.
	StatusStarting
	// StatusStartRetrying: a later attempt of Dial is under way.
	StatusStartRetrying
	// StatusDroppedRetrying: the connection dropped; a reconnection
	// attempt is under way.
	StatusDroppedRetrying
	// StatusStartFailed: Dial gave up. Final.
	StatusStartFailed
	// StatusRetryInterval: waiting (backoff) before the next attempt.
	StatusRetryInterval
	// StatusReconnectFailed: every reconnection attempt failed, or
	// reconnection is disabled. Final.
	StatusReconnectFailed
	// StatusReady: connected; requests flow.
	StatusReady
	// StatusSyncing: reconnected; waiting for the SYNC reply.
	StatusSyncing
	// StatusBeginning: connected; waiting for the BEGIN reply.
	StatusBeginning
	// StatusBooted: the server booted the client. Final.
	StatusBooted
	// StatusClosed: closed by Close (or by the server with 4000). Final.
	StatusClosed
)

var statusNames = [...]string{
	"init", "starting", "start_retrying", "dropped_retrying", "start_failed",
	"retry_interval", "reconnect_failed", "ready", "syncing", "beginning",
	"booted", "closed",
}

// String returns the status's name, e.g. "ready".
func (s Status) String() string {
	if s >= 0 && int(s) < len(statusNames) {
		return statusNames[s]
	}
	return "unknown"
}

// Final reports whether the client can no longer connect in this status.
func (s Status) Final() bool {
	switch s {
	case StatusStartFailed, StatusReconnectFailed, StatusBooted, StatusClosed:
		return true
	}
	return false
}

// SubStatus is the state of a Subscription. It follows the SSS client's
// subscription states, with SYNC_FAILED split in two: SubRefused and
// SubNotRecoverable.
type SubStatus int

// Subscription states.
const (
	// SubActive: live; publications are delivered in order.
	SubActive SubStatus = iota
	// SubDropped: the connection dropped; waiting for a reconnection.
	SubDropped
	// SubSyncing: reconnected; waiting for the SYNC reply.
	SubSyncing
	// SubRefused: when re-synchronising, the server refused the
	// subscription (its subscription parser said no). Final: the
	// subscription receives nothing more.
	SubRefused
	// SubNotRecoverable: the server could not return what was missed while
	// disconnected (see ErrNotRecoverable). The subscription is live again
	// from the current position: the application must reload the
	// channel's state. It stays in this status until the next drop.
	SubNotRecoverable
	// SubUnsubscribed: Unsubscribe was called, or the server removed the
	// channel's subscriptions. Final.
	SubUnsubscribed
	// SubBooted: the client was booted. Final.
	SubBooted
	// SubClosed: the client was closed. Final.
	SubClosed
	// SubReconnectFailed: the client gave up reconnecting. Final.
	SubReconnectFailed
)

var subStatusNames = [...]string{
	"active", "dropped", "syncing", "refused", "not_recoverable",
	"unsubscribed", "booted", "closed", "reconnect_failed",
}

// String returns the subscription status's name, e.g. "active".
func (s SubStatus) String() string {
	if s >= 0 && int(s) < len(subStatusNames) {
		return subStatusNames[s]
	}
	return "unknown"
}

// Final reports whether the subscription will receive nothing more.
func (s SubStatus) Final() bool {
	switch s {
	case SubRefused, SubUnsubscribed, SubBooted, SubClosed, SubReconnectFailed:
		return true
	}
	return false
}
