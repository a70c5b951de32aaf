package client

import (
	"errors"
	"fmt"

	"github.com/sss-go/sss/protocol"
)

// Sentinel errors. Operations wrap them with what failed, so callers test
// with errors.Is.
var (
	// ErrClosed: the client was closed by Close (or the server closed the
	// connection with 4000).
	ErrClosed = errors.New("sss/client: closed")
	// ErrBooted: the server booted the client (close code 4001); it does not
	// reconnect.
	ErrBooted = errors.New("sss/client: booted")
	// ErrConnectionLost: the connection dropped while a request (ask,
	// subscribe) was waiting for its reply. The request was not retried;
	// the server may or may not have handled it.
	ErrConnectionLost = errors.New("sss/client: connection lost")
	// ErrStartFailed: Dial gave up (attempts exhausted or reconnection
	// disabled).
	ErrStartFailed = errors.New("sss/client: start failed")
	// ErrRefused: the server refused the session (HTTP 401/403 on the
	// upgrade, or close 4001 before BEGIN was answered).
	ErrRefused = errors.New("sss/client: session refused")
	// ErrReconnectFailed: the connection dropped and every reconnection
	// attempt failed (or reconnection is disabled).
	ErrReconnectFailed = errors.New("sss/client: reconnect failed")
	// ErrNotRecoverable: after a reconnection the server could not return
	// the publications a subscription missed (trimmed history, new epoch,
	// too many). The subscription is live again from the current position;
	// the application must reload that channel's state.
	ErrNotRecoverable = errors.New("sss/client: not recoverable")
	// ErrSubscriptionRefused: the server refused a subscription, at
	// Subscribe or when re-synchronising after a reconnection.
	ErrSubscriptionRefused = errors.New("sss/client: subscription refused")
	// ErrReservedChannel: Subscribe was given an empty name or one that
	// begins with '_' (reserved for the system, docs/protocol.md §5.1).
	ErrReservedChannel = errors.New("sss/client: reserved or empty channel name")
	// ErrChannelBooted: the server removed the client from a channel
	// (server.BootChannel); the subscription ends SubUnsubscribed and the
	// channel is not re-synchronised.
	ErrChannelBooted = errors.New("sss/client: removed from the channel by the server")
	// ErrBadReply: the server sent a reply the client could not use (for
	// example a response that does not decode into the reply value).
	ErrBadReply = errors.New("sss/client: bad reply")
)

// ServerError is an error object the server sent in reply to a request
// (docs/protocol.md §3.2). It wraps the wire error, so both
// errors.As(err, &*client.ServerError) and errors.As(err, &*protocol.Error)
// work.
type ServerError struct {
	// Op is the request that failed: "ask", "subscribe" or "sync".
	Op string
	// Target is the ask topic or the channel name.
	Target string
	// Err is the error object as the server sent it.
	Err *protocol.Error
	// kind is a sentinel (ErrSubscriptionRefused, ErrNotRecoverable) or nil.
	kind error
}

// Error implements the error interface.
func (e *ServerError) Error() string {
	return fmt.Sprintf("sss/client: %s %q: %s: %s", e.Op, e.Target, e.Err.Code, e.Err.Message)
}

// Unwrap returns the wire error object, and the sentinel that classifies
// it when there is one.
func (e *ServerError) Unwrap() []error {
	if e.kind != nil {
		return []error{e.Err, e.kind}
	}
	return []error{e.Err}
}

// Code returns the error object's machine-readable code.
func (e *ServerError) Code() string { return e.Err.Code }

func serverError(op, target string, perr *protocol.Error, kind error) *ServerError {
	if perr == nil {
		perr = &protocol.Error{Name: "Error", Message: "no error object", Code: protocol.CodeInternal}
	}
	return &ServerError{Op: op, Target: target, Err: perr, kind: kind}
}
