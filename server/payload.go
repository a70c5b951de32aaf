package server

import (
	"bytes"
	"encoding/json"
	"fmt"
	"unicode/utf8"

	"github.com/sss-go/sss/protocol"
)

// Payloads: every frame is a text frame, which must be valid UTF-8 (RFC
// 6455 §8.1; a browser fails the connection otherwise, and its client's
// SYNC would replay the same frame). What the API is given is checked
// once per message (protocol.MarshalPayload for messages, checkText for
// topics and reasons) and refused with ErrInvalidPayload; what comes from
// the backend or another instance is repaired instead (validOrReplaced),
// since refusing it would lose it.

// tellPayload checks a topic and encodes the msg sent with it.
func tellPayload(topic string, msg any) (json.RawMessage, error) {
	if err := checkText("topic", topic); err != nil {
		return nil, err
	}
	return protocol.MarshalPayload(msg)
}

// checkText refuses a topic or reason that is not valid UTF-8.
func checkText(what, s string) error {
	if !utf8.ValidString(s) {
		return fmt.Errorf("%w: %s is not valid UTF-8", ErrInvalidPayload, what)
	}
	return nil
}

// validOrReplaced returns raw JSON from the backend or another instance
// as valid UTF-8: unchanged when it is, else with each invalid sequence
// replaced by U+FFFD (which keeps valid JSON valid: such bytes can only
// be inside strings). Every instance and every recovery path applies the
// same rule, so a live and a recovered frame stay byte-identical.
func validOrReplaced(raw json.RawMessage) json.RawMessage {
	if utf8.Valid(raw) {
		return raw
	}
	return bytes.ToValidUTF8(raw, []byte("\uFFFD"))
}
