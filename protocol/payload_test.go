package protocol

import (
	"encoding/json"
	"errors"
	"testing"
)

// TestMarshalPayload: frames are compact JSON in UTF-8 (docs/protocol.md,
// "1. Transport"), so a json.RawMessage with white space is compacted once
// (strings untouched), nothing is HTML-escaped, and invalid JSON or UTF-8
// is refused with ErrInvalidPayload.
func TestMarshalPayload(t *testing.T) {
	for _, tc := range []struct {
		in   any
		want string
	}{
		{json.RawMessage(`{ "a" : [1, 2],` + "\n" + ` "b":"x y" }`), `{"a":[1,2],"b":"x y"}`},
		{json.RawMessage(`{"a":1}`), `{"a":1}`},
		{nil, `null`},
		{json.RawMessage(nil), `null`},
		{map[string]string{"h": "<&>"}, `{"h":"<&>"}`},
		{"\u2028", `"\u2028"`},
		{"<a&b>", `"<a&b>"`},
		{struct{ A int }{1}, `{"A":1}`},
	} {
		got, err := MarshalPayload(tc.in)
		if err != nil || string(got) != tc.want {
			t.Errorf("MarshalPayload(%v) = %s, %v; want %s", tc.in, got, err, tc.want)
		}
	}
	for name, bad := range map[string]any{
		"truncated":          json.RawMessage(`{ "a": `),
		"no value":           json.RawMessage(`{"a":}`),
		"invalid UTF-8 raw":  json.RawMessage("\"\xff\""),
		"invalid UTF-8 w/sp": json.RawMessage("[ \"\xff\" ]"),
		"invalid UTF-8 field": struct {
			R json.RawMessage
		}{json.RawMessage("\"\xfe\"")},
		"unencodable": make(chan int),
	} {
		if got, err := MarshalPayload(bad); !errors.Is(err, ErrInvalidPayload) {
			t.Errorf("%s: MarshalPayload = %s, %v; want an error wrapping ErrInvalidPayload", name, got, err)
		}
	}
}
