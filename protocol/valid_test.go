package protocol

import (
	"encoding/json"
	"strings"
	"testing"
)

// refDepthOK is the reference for validate's depth check: a plain bracket
// count that skips strings.
func refDepthOK(data []byte, max int) bool {
	depth := 0
	inString := false
	for i := 0; i < len(data); i++ {
		c := data[i]
		if inString {
			switch c {
			case '\\':
				i++ // skip the escaped byte: \" must not end the string
			case '"':
				inString = false
			}
			continue
		}
		switch c {
		case '"':
			inString = true
		case '{', '[':
			depth++
			if depth > max {
				return false
			}
		case '}', ']':
			depth--
		}
	}
	return true
}

func TestValidate(t *testing.T) {
	tests := []struct {
		in      string
		max     int
		valid   bool
		tooDeep bool
	}{
		{`{}`, 32, true, false},
		{` { "a" : [ 1 , -2.5e+3 , "x" , true , false , null , { } , [ ] ] } `, 32, true, false},
		{`"s\"\\\/\b\f\n\r\t\u00e9"`, 32, true, false},
		{`0`, 32, true, false},
		{`-0.0e-0`, 32, true, false},
		{`[[[]]]`, 3, true, false},
		{`[[[]]]`, 2, false, true},
		{`[[[]]]`, -1, true, false},
		{`{"a":{"b":{}}}`, 2, false, true},
		{`["[[[[["]`, 1, true, false},
		{``, 32, false, false},
		{` `, 32, false, false},
		{`{`, 32, false, false},
		{`{"a"}`, 32, false, false},
		{`{"a":}`, 32, false, false},
		{`{"a":1,}`, 32, false, false},
		{`{,"a":1}`, 32, false, false},
		{`{1:1}`, 32, false, false},
		{`[1,]`, 32, false, false},
		{`[1 2]`, 32, false, false},
		{`[}`, 32, false, false},
		{`{]`, 32, false, false},
		{`01`, 32, false, false},
		{`1.`, 32, false, false},
		{`.1`, 32, false, false},
		{`1e`, 32, false, false},
		{`+1`, 32, false, false},
		{`-`, 32, false, false},
		{`tru`, 32, false, false},
		{`nul`, 32, false, false},
		{`NaN`, 32, false, false},
		{`"a`, 32, false, false},
		{`"\x"`, 32, false, false},
		{`"\u12g4"`, 32, false, false},
		{`"\u12"`, 32, false, false},
		{"\"a\tb\"", 32, false, false},
		{`{} {}`, 32, false, false},
		{`{}x`, 32, false, false},
		{`'a'`, 32, false, false},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			valid, tooDeep := validate([]byte(tc.in), tc.max)
			if valid != tc.valid || tooDeep != tc.tooDeep {
				t.Fatalf("validate = %v, %v; want %v, %v", valid, tooDeep, tc.valid, tc.tooDeep)
			}
			if tc.max < 0 || !tc.tooDeep {
				if jv := json.Valid([]byte(tc.in)); jv != valid {
					t.Fatalf("json.Valid = %v, validate = %v", jv, valid)
				}
			}
		})
	}
}

func TestValidateDeepUnlimited(t *testing.T) {
	in := strings.Repeat("[", 1000) + strings.Repeat("]", 1000)
	if valid, _ := validate([]byte(in), -1); !valid {
		t.Fatal("1000 levels rejected without a limit")
	}
	if valid, deep := validate([]byte(in), 999); valid || !deep {
		t.Fatal("1000 levels accepted with a limit of 999")
	}
}
