package protocol

import (
	"encoding/json"
	"errors"
	"strings"
)

// Error is the error object of the wire (docs/protocol.md, "Error
// objects"): name and message are what the SSS client shows, code is our
// stable snake_case code. All three are always encoded. Channel is set only
// on the channel_booted error (NewChannelBootedError), the one error object
// with a fourth key.
type Error struct {
	Name    string `json:"name"`
	Message string `json:"message"`
	Code    string `json:"code"`
	Channel string `json:"channel,omitempty"`
}

// Error implements the error interface.
func (e *Error) Error() string { return "sss: " + e.Code + ": " + e.Message }

// Error codes (docs/protocol.md, "3.2 Error objects" and "10. Bad input").
const (
	CodeBadFrame             = "bad_frame"
	CodeUnknownSys           = "unknown_sys"
	CodeBadRequest           = "bad_request"
	CodeMissingID            = "missing_id"
	CodeUnknownTopic         = "unknown_topic"
	CodeBadChannel           = "bad_channel"
	CodeReservedChannel      = "reserved_channel"
	CodeTooManySubscriptions = "too_many_subscriptions"
	CodeInternal             = "internal"
	CodeRateLimited          = "rate_limited"
	CodeNotRecoverable       = "not_recoverable"
	CodeForbidden            = "forbidden"
	CodeRefused              = "refused"   // a parser refused without a code
	CodeAppError             = "app_error" // a handler's error object had no code
	CodeUnavailable          = "unavailable"
	// CodeChannelBooted: the server removed the socket from a channel
	// (server.BootChannel); the error object names it in Channel.
	CodeChannelBooted = "channel_booted"
)

// NewError returns an error object with the given code and message and a
// Name derived from the code in PascalCase ("bad_frame" -> "BadFrame").
func NewError(code, message string) *Error {
	return &Error{Name: NameOf(code), Message: message, Code: code}
}

// NameOf derives an error name from a snake_case code: "bad_frame" ->
// "BadFrame". Characters other than '_' are kept; the first letter of each
// part is upper-cased (ASCII only).
func NameOf(code string) string {
	var b strings.Builder
	b.Grow(len(code))
	up := true
	for i := 0; i < len(code); i++ {
		c := code[i]
		if c == '_' {
			up = true
			continue
		}
		if up && 'a' <= c && c <= 'z' {
			c -= 'a' - 'A'
		}
		up = false
		b.WriteByte(c)
	}
	return b.String()
}

// NewNotRecoverableError returns a not_recoverable error object with the
// given message.
func NewNotRecoverableError(message string) *Error { return NewError(CodeNotRecoverable, message) }

// NewInternalError returns the internal error object sent when a handler
// fails: no details (they go to the log).
func NewInternalError() *Error { return NewError(CodeInternal, "internal error") }

// NewChannelBootedError returns the channel_booted error object telling a
// socket it was removed from channel: an error frame, as the wire has no
// unsubscribe notice (BOOTCHANNEL, sys 10, is reserved).
func NewChannelBootedError(channel string) *Error {
	return &Error{Name: "ChannelBooted", Message: "removed from channel " + channel, Code: CodeChannelBooted, Channel: channel}
}

// ErrFrameTooLarge is wrapped by the *DecodeError of a frame over
// Limits.MaxFrameBytes: the server closes with CloseTooLarge (1009) instead of
// answering (docs/protocol.md, "10. Bad input").
var ErrFrameTooLarge = errors.New("sss/protocol: frame too large")

// DecodeError is returned by the decoders: Code is one of the bad-input codes
// (CodeBadFrame, CodeUnknownSys, CodeBadRequest, CodeMissingID); ID is the
// frame's usable id when it had one (so a reply can carry it); Sys the code
// when it was readable.
type DecodeError struct {
	Code   string
	Sys    Sys
	ID     json.RawMessage
	Detail string

	cause error // ErrFrameTooLarge, for errors.Is
}

// Error implements the error interface.
func (e *DecodeError) Error() string { return "sss/protocol: " + e.Code + ": " + e.Detail }

// Unwrap returns ErrFrameTooLarge for an oversize frame, else nil.
func (e *DecodeError) Unwrap() error { return e.cause }

// Object returns the wire error object for this decode error, with Detail
// as its message.
func (e *DecodeError) Object() *Error { return NewError(e.Code, e.Detail) }
