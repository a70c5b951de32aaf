package protocol

import (
	"errors"
	"strings"
	"testing"
)

func TestParseUIDRoundTrip(t *testing.T) {
	tests := []struct {
		in   string
		want UID
	}{
		{"a.0", UID{"a", 0}},
		{"a.1", UID{"a", 1}},
		{"AbC123.42", UID{"AbC123", 42}},
		{strings.Repeat("z", 32) + ".7", UID{strings.Repeat("z", 32), 7}},
		{"E.18446744073709551615", UID{"E", 1<<64 - 1}},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			u, err := ParseUID(tc.in)
			if err != nil {
				t.Fatal(err)
			}
			if u != tc.want {
				t.Fatalf("got %+v want %+v", u, tc.want)
			}
			if s := u.String(); s != tc.in {
				t.Fatalf("String() = %q", s)
			}
			if s := string(u.AppendText([]byte("x"))); s != "x"+tc.in {
				t.Fatalf("AppendText = %q", s)
			}
		})
	}
}

func TestParseUIDRejects(t *testing.T) {
	for _, in := range []string{
		"", ".", "a.", ".1", "a.-1", "a.+1", "a.01", "a.00", "a.1.2", "a. 1", "a.1 ", " a.1",
		"a", "1", strings.Repeat("z", 33) + ".1", "a-b.1", "a_b.1", "é.1", "a.1x", "a.0x1",
		"a.18446744073709551616", "null",
	} {
		t.Run(in, func(t *testing.T) {
			u, err := ParseUID(in)
			if !errors.Is(err, ErrBadUID) {
				t.Fatalf("ParseUID(%q) = %+v, %v; want ErrBadUID", in, u, err)
			}
			if u != (UID{}) {
				t.Fatalf("non-zero UID %+v on error", u)
			}
		})
	}
}

func TestUIDCompare(t *testing.T) {
	tests := []struct {
		name   string
		u, v   UID
		cmp    int
		sameEp bool
	}{
		{"less", UID{"a", 1}, UID{"a", 2}, -1, true},
		{"greater", UID{"a", 10}, UID{"a", 9}, 1, true},
		{"equal", UID{"a", 3}, UID{"a", 3}, 0, true},
		{"seq compares numerically, not as text", UID{"a", 9}, UID{"a", 10}, -1, true},
		{"other epoch", UID{"a", 1}, UID{"b", 5}, 0, false},
		{"other epoch same seq", UID{"a", 5}, UID{"b", 5}, 0, false},
		{"epoch case matters", UID{"a", 5}, UID{"A", 5}, 0, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cmp, ok := tc.u.Compare(tc.v)
			if cmp != tc.cmp || ok != tc.sameEp {
				t.Fatalf("Compare = %d, %v; want %d, %v", cmp, ok, tc.cmp, tc.sameEp)
			}
		})
	}
}

func TestUIDNextAndZero(t *testing.T) {
	u := UID{"e", 0}
	if n := u.Next(); n != (UID{"e", 1}) {
		t.Fatalf("Next = %+v", n)
	}
	if !(UID{}).IsZero() || u.IsZero() {
		t.Fatal("IsZero wrong")
	}
}

func TestNewEpoch(t *testing.T) {
	seen := map[string]bool{}
	for i := 0; i < 100; i++ {
		e := NewEpoch()
		if len(e) != 16 || !ValidEpoch(e) {
			t.Fatalf("bad epoch %q", e)
		}
		if seen[e] {
			t.Fatalf("repeated epoch %q", e)
		}
		seen[e] = true
		if _, err := ParseUID(e + ".0"); err != nil {
			t.Fatalf("epoch %q does not parse: %v", e, err)
		}
	}
}
