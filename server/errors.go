package server

import "errors"

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
)
