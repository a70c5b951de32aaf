package protocol

import (
	"encoding/json"
	"unicode/utf8"
)

// This file holds the byte scanners behind the decoders. They run on input
// that validate has already accepted, so they can split an object into raw
// members with one cheap pass and no reflection.

// isSpace reports whether c is JSON insignificant whitespace.
func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

// skipSpace returns the index of the first non-space byte at or after i.
func skipSpace(data []byte, i int) int {
	for i < len(data) && isSpace(data[i]) {
		i++
	}
	return i
}

// stringEnd returns the index just past the closing quote of the string
// whose opening quote is at data[i]. data must be valid JSON.
func stringEnd(data []byte, i int) int {
	for i++; i < len(data); i++ {
		switch data[i] {
		case '\\':
			i++
		case '"':
			return i + 1
		}
	}
	return len(data)
}

// valueEnd returns the index just past the JSON value starting at data[i].
// data must be valid JSON.
func valueEnd(data []byte, i int) int {
	if i >= len(data) {
		return i
	}
	switch data[i] {
	case '"':
		return stringEnd(data, i)
	case '{', '[':
		depth := 0
		for ; i < len(data); i++ {
			switch data[i] {
			case '"':
				i = stringEnd(data, i) - 1
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return i + 1
				}
			}
		}
		return len(data)
	default: // number, true, false, null
		for ; i < len(data); i++ {
			switch c := data[i]; {
			case c == ',' || c == '}' || c == ']' || isSpace(c):
				return i
			}
		}
		return len(data)
	}
}

// objectIter walks the members of one valid JSON object.
type objectIter struct {
	data []byte
	i    int
}

// newObjectIter starts a walk over obj, which must be a valid JSON object
// (possibly surrounded by whitespace). ok is false when obj is not an object.
func newObjectIter(obj []byte) (it objectIter, ok bool) {
	i := skipSpace(obj, 0)
	if i >= len(obj) || obj[i] != '{' {
		return objectIter{}, false
	}
	return objectIter{data: obj, i: i + 1}, true
}

// next returns the next member's raw key (without quotes, escapes left as
// is) and raw value. ok is false at the end of the object.
func (it *objectIter) next() (key, val []byte, ok bool) {
	d := it.data
	i := skipSpace(d, it.i)
	if i < len(d) && d[i] == ',' {
		i = skipSpace(d, i+1)
	}
	if i >= len(d) || d[i] != '"' {
		it.i = len(d)
		return nil, nil, false
	}
	ke := stringEnd(d, i)
	key = d[i+1 : ke-1]
	i = skipSpace(d, ke)
	if i < len(d) && d[i] == ':' {
		i = skipSpace(d, i+1)
	}
	ve := valueEnd(d, i)
	val = d[i:ve]
	it.i = ve
	return key, val, true
}

// arrayIter walks the elements of one valid JSON array.
type arrayIter struct {
	data []byte
	i    int
}

// newArrayIter starts a walk over arr, which must be a valid JSON array.
// ok is false when arr is not an array.
func newArrayIter(arr []byte) (it arrayIter, ok bool) {
	i := skipSpace(arr, 0)
	if i >= len(arr) || arr[i] != '[' {
		return arrayIter{}, false
	}
	return arrayIter{data: arr, i: i + 1}, true
}

// next returns the next raw element; ok is false at the end of the array.
func (it *arrayIter) next() (val []byte, ok bool) {
	d := it.data
	i := skipSpace(d, it.i)
	if i < len(d) && d[i] == ',' {
		i = skipSpace(d, i+1)
	}
	if i >= len(d) || d[i] == ']' {
		it.i = len(d)
		return nil, false
	}
	ve := valueEnd(d, i)
	it.i = ve
	return d[i:ve], true
}

// keyIs reports whether the raw key equals name. Keys with escapes are
// unescaped first (rare: only a hand-made client would send "s\u0079s").
func keyIs(raw []byte, name string) bool {
	if string(raw) == name {
		return true
	}
	for _, c := range raw {
		if c == '\\' {
			s, ok := unquote(append(append([]byte{'"'}, raw...), '"'))
			return ok && s == name
		}
	}
	return false
}

// unquote decodes the raw JSON value val as a string. ok is false when val
// is not a JSON string. Invalid UTF-8 becomes U+FFFD, as encoding/json does.
func unquote(val []byte) (s string, ok bool) {
	if len(val) < 2 || val[0] != '"' {
		return "", false
	}
	inner := val[1 : len(val)-1]
	simple := true
	for _, c := range inner {
		if c == '\\' || c >= utf8.RuneSelf {
			simple = false
			break
		}
	}
	if simple || (utf8.Valid(inner) && !hasByte(inner, '\\')) {
		return string(inner), true
	}
	if err := json.Unmarshal(val, &s); err != nil {
		return "", false
	}
	return s, true
}

// hasByte reports whether b contains c.
func hasByte(b []byte, c byte) bool {
	for _, x := range b {
		if x == c {
			return true
		}
	}
	return false
}

// isNull reports whether the raw value is the literal null.
func isNull(val []byte) bool { return string(val) == "null" }

// usableID reports whether the raw value can serve as a request id: any JSON
// number or string (docs/protocol.md §3.1). null, objects, arrays and
// booleans cannot.
func usableID(val []byte) bool {
	if len(val) == 0 {
		return false
	}
	c := val[0]
	return c == '"' || c == '-' || ('0' <= c && c <= '9')
}

// parseSys reads a sys value: a JSON integer spelled with digits only.
// Anything else (1.5, 1.0, 1e0, "1", -1) is not a code.
func parseSys(val []byte) (Sys, bool) {
	if len(val) == 0 || len(val) > 4 {
		return 0, false
	}
	n := 0
	for _, c := range val {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int(c-'0')
	}
	return Sys(n), true
}

// keyString decodes a raw object key (without its quotes) into a string.
func keyString(raw []byte) string {
	if !hasByte(raw, '\\') && utf8.Valid(raw) {
		return string(raw)
	}
	q := make([]byte, 0, len(raw)+2)
	q = append(q, '"')
	q = append(q, raw...)
	q = append(q, '"')
	s, _ := unquote(q)
	return s
}
