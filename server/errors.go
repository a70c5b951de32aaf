package server

import (
	"errors"
)

// Sentinel errors of the server package.
var (
	// ErrBadOptions: Options failed validation in New.
	ErrBadOptions = errors.New("sss/server: bad options")
	// ErrClosed: the server (or publisher) is shut down.
	ErrClosed = errors.New("sss/server: closed")
	// ErrSocketClosed: the socket is closed or closing.
	ErrSocketClosed = errors.New("sss/server: socket closed")
	// ErrBadChannel: the channel name is not valid for the operation.
	ErrBadChannel = errors.New("sss/server: bad channel")
	// ErrBadMessage: a message could not be encoded as JSON.
	ErrBadMessage = errors.New("sss/server: message is not valid JSON")
	// ErrBadTopic: a topic is empty or reserved.
	ErrBadTopic = errors.New("sss/server: bad topic")
	// ErrInvalidPayload: a message, topic or reason is not valid UTF-8
	// (json.RawMessage payloads are not checked by encoding/json). Text
	// frames must be UTF-8 (RFC 6455 §8.1), so nothing is sent.
	ErrInvalidPayload = errors.New("sss/server: payload is not valid UTF-8")
	// ErrNotSupported: the scaler lacks the capability the call needs
	// (a Publisher broadcasting through a scaler without a
	// scaler.ControlPlane).
	ErrNotSupported = errors.New("sss/server: not supported by the scaler")
	// ErrPresenceOff: Presence or Count of a channel whose rule
	// (Options.Channels, else Options.DefaultChannel) has Presence off.
	ErrPresenceOff = errors.New("sss/server: presence is off for this channel")
)
