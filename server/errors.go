package server

import (
	"errors"

	"github.com/sss-go/sss/protocol"
)

// Sentinel errors of the server package.
var (
	// ErrBadOptions: Options failed validation in New, or a call was given
	// options it cannot use (PublishOptions.Exclude naming a socket of
	// another server, or set on a Publisher).
	ErrBadOptions = errors.New("sss/server: bad options")
	// ErrSocketClosed: the socket is closed or closing.
	ErrSocketClosed = errors.New("sss/server: socket closed")
	// ErrBadChannel: the channel name is not valid for the operation.
	ErrBadChannel = errors.New("sss/server: bad channel")
	// ErrBadTopic: a topic is empty.
	ErrBadTopic = errors.New("sss/server: bad topic")
	// ErrInvalidPayload: a message is not valid JSON or cannot be encoded,
	// or a message, topic or reason is not valid UTF-8 (json.RawMessage
	// payloads are not checked by encoding/json). Text frames must be
	// UTF-8 (RFC 6455 §8.1) and JSON, so nothing is sent. It is
	// protocol.ErrInvalidPayload, the error of protocol.MarshalPayload.
	ErrInvalidPayload = protocol.ErrInvalidPayload
	// ErrNotSupported: the scaler lacks the capability the call needs
	// (a Publisher broadcasting through a scaler without a
	// scaler.ControlPlane).
	ErrNotSupported = errors.New("sss/server: not supported by the scaler")
	// ErrPresenceOff: Presence or Count of a channel whose rule
	// (Options.Channels, else Options.DefaultChannel) has Presence off.
	ErrPresenceOff = errors.New("sss/server: presence is off for this channel")
)
