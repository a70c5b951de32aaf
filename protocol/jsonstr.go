package protocol

import (
	"encoding/json"
	"unicode/utf8"
)

const hexDigits = "0123456789abcdef"

// appendString appends s as a JSON string. Unlike encoding/json's default
// it does not HTML-escape (<, > and & stay literal); control characters,
// '"' and '\\' are escaped, U+2028 and U+2029 too (as encoding/json does, for
// JavaScript source safety), and invalid UTF-8 becomes U+FFFD.
func appendString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

// appendRaw appends a raw JSON value verbatim; nil or empty writes null.
// The caller is responsible for raw being valid JSON.
func appendRaw(b []byte, raw json.RawMessage) []byte {
	if len(raw) == 0 {
		return append(b, "null"...)
	}
	return append(b, raw...)
}

// appendSys opens a frame: {"sys":N
func appendSys(b []byte, sys Sys) []byte {
	b = append(b, `{"sys":`...)
	if sys >= 10 {
		b = append(b, byte('0'+sys/10))
	}
	return append(b, byte('0'+sys%10))
}

// appendError appends an error object with all three keys. A nil error
// writes the internal error, never null.
func appendError(b []byte, e *Error) []byte {
	if e == nil {
		e = &internalError
	}
	b = append(b, `{"name":`...)
	b = appendString(b, e.Name)
	b = append(b, `,"message":`...)
	b = appendString(b, e.Message)
	b = append(b, `,"code":`...)
	b = appendString(b, e.Code)
	if e.Channel != "" {
		b = append(b, `,"channel":`...)
		b = appendString(b, e.Channel)
	}
	return append(b, '}')
}

// internalError is what a nil *Error encodes as.
var internalError = Error{Name: "Internal", Message: "internal error", Code: CodeInternal}
