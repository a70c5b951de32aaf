package server

import (
	"bytes"
	"encoding/json"
	"fmt"
	"unicode/utf8"
)

// Payloads: every frame is a text frame, which must be valid UTF-8 (RFC
// 6455 §8.1; a browser fails the connection otherwise, and its client's
// SYNC would replay the same frame). encoding/json writes valid UTF-8 for
// Go strings but passes json.RawMessage (and Marshaler output) through
// unchecked, and json.Valid accepts invalid UTF-8, so what the API is
// given is checked here, once per message, and refused with
// ErrInvalidPayload.

// marshalMsg encodes a message: json.RawMessage verbatim (validated and
// compacted), nil as null, anything else with encoding/json without HTML
// escaping. The result is valid JSON in UTF-8.
func marshalMsg(v any) (json.RawMessage, error) {
	switch m := v.(type) {
	case nil:
		return nullJSON, nil
	case json.RawMessage:
		if m == nil {
			return nullJSON, nil
		}
		if !utf8.Valid(m) {
			return nil, fmt.Errorf("%w: message", ErrInvalidPayload)
		}
		if bytes.ContainsAny(m, " \t\r\n") {
			// Frames are compact JSON (PROTOCOL.md): compact once
			// here, never per subscriber. Compact validates too.
			var buf bytes.Buffer
			if err := json.Compact(&buf, m); err != nil {
				return nil, fmt.Errorf("%w: %v", ErrBadMessage, err)
			}
			return buf.Bytes(), nil
		}
		if !json.Valid(m) {
			return nil, ErrBadMessage
		}
		return m, nil
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadMessage, err)
	}
	out := bytes.TrimRight(buf.Bytes(), "\n")
	if !utf8.Valid(out) {
		// A json.RawMessage field or a MarshalJSON method.
		return nil, fmt.Errorf("%w: message", ErrInvalidPayload)
	}
	return out, nil
}

// checkText refuses a topic or reason that is not valid UTF-8.
func checkText(what, s string) error {
	if !utf8.ValidString(s) {
		return fmt.Errorf("%w: %s", ErrInvalidPayload, what)
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
