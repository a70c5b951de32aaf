package protocol

import (
	"bytes"
	"encoding/json"
	"unicode/utf8"
)

// Presence events (docs/protocol.md, "5.8 Presence events"): on a channel
// whose presence the application turned on, subscribers get a TELL on
// PresenceTopic whose msg is a PresenceEvent each time a socket joins or
// leaves it.

// Presence event names: PresenceEvent.Event.
const (
	PresenceJoin  = "join"
	PresenceLeave = "leave"
)

// PresenceEvent is the msg of a TELL on PresenceTopic. AppendPresence
// encodes it; json.Unmarshal decodes it.
type PresenceEvent struct {
	// Channel is the channel joined or left.
	Channel string `json:"channel"`
	// Event is PresenceJoin or PresenceLeave.
	Event string `json:"event"`
	// Member is who joined or left.
	Member PresenceMember `json:"member"`
}

// PresenceMember is the subject of a PresenceEvent: one socket.
type PresenceMember struct {
	// User is the member's user id; "" for a socket without a user, which
	// the wire carries as null.
	User string `json:"user"`
	// Info is the small JSON object the server attached to the member;
	// nil (or anything that is not JSON in UTF-8) goes on the wire as {}.
	Info json.RawMessage `json:"info"`
}

// MarshalJSON encodes the member as the wire does:
// {"user":null|"<id>","info":{...}}.
func (m PresenceMember) MarshalJSON() ([]byte, error) {
	return appendPresenceMember(nil, m), nil
}

// AppendPresence appends the msg of a presence TELL:
// {"channel":..,"event":..,"member":{"user":..,"info":..}}, with user
// null when empty and info {} when empty or not valid JSON in UTF-8 (it
// may come from another instance), else compacted. The frame is
// AppendTell(b, PresenceTopic, AppendPresence(nil, e)).
func AppendPresence(b []byte, e PresenceEvent) []byte {
	b = append(b, `{"channel":`...)
	b = appendString(b, e.Channel)
	b = append(b, `,"event":`...)
	b = appendString(b, e.Event)
	b = append(b, `,"member":`...)
	b = appendPresenceMember(b, e.Member)
	return append(b, '}')
}

func appendPresenceMember(b []byte, m PresenceMember) []byte {
	b = append(b, `{"user":`...)
	if m.User == "" {
		b = append(b, "null"...)
	} else {
		b = appendString(b, m.User)
	}
	b = append(b, `,"info":`...)
	info := m.Info
	if len(info) == 0 || !utf8.Valid(info) || !json.Valid(info) {
		info = json.RawMessage("{}")
	}
	if bytes.ContainsAny(info, " \t\r\n") {
		var buf bytes.Buffer
		_ = json.Compact(&buf, info) // valid: checked above
		info = buf.Bytes()
	}
	b = append(b, info...)
	return append(b, '}')
}
