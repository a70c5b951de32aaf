package protocol

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"unicode/utf8"
)

// Payloads: every frame is a text frame, which must be valid UTF-8 (RFC
// 6455 §8.1: a browser fails the connection otherwise) and compact JSON
// (docs/protocol.md, "1. Transport"). encoding/json writes valid UTF-8 for
// Go strings but passes json.RawMessage (and MarshalJSON output) through
// unchecked, and json.Valid accepts invalid UTF-8, so MarshalPayload checks
// what it is given, once per message.

// ErrInvalidPayload is wrapped by the error of MarshalPayload for a value
// that is not valid JSON, cannot be encoded, or is not valid UTF-8.
var ErrInvalidPayload = errors.New("sss/protocol: invalid payload")

var nullPayload = json.RawMessage("null")

// MarshalPayload encodes an application value as the msg (or query) of a
// frame: nil as null; a json.RawMessage verbatim once validated (nil as
// null), compacted when it holds white space; anything else with
// encoding/json without HTML escaping. The result is compact, valid JSON
// in UTF-8; a value that cannot be that is refused with an error wrapping
// ErrInvalidPayload.
func MarshalPayload(v any) (json.RawMessage, error) {
	switch m := v.(type) {
	case nil:
		return nullPayload, nil
	case json.RawMessage:
		if m == nil {
			return nullPayload, nil
		}
		if !utf8.Valid(m) {
			return nil, fmt.Errorf("%w: message is not valid UTF-8", ErrInvalidPayload)
		}
		if bytes.ContainsAny(m, " \t\r\n") {
			// Compact once here, never per receiver; Compact validates.
			var buf bytes.Buffer
			if err := json.Compact(&buf, m); err != nil {
				return nil, fmt.Errorf("%w: message is not valid JSON: %v", ErrInvalidPayload, err)
			}
			return buf.Bytes(), nil
		}
		if !json.Valid(m) {
			return nil, fmt.Errorf("%w: message is not valid JSON", ErrInvalidPayload)
		}
		return m, nil
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidPayload, err)
	}
	out := bytes.TrimRight(buf.Bytes(), "\n")
	if !utf8.Valid(out) {
		// A json.RawMessage field or a MarshalJSON method.
		return nil, fmt.Errorf("%w: message is not valid UTF-8", ErrInvalidPayload)
	}
	return out, nil
}
