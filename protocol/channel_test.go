package protocol

import (
	"strings"
	"testing"
)

func TestValidChannel(t *testing.T) {
	tests := []struct {
		name string
		max  int
		want bool
	}{
		{"sport", 200, true},
		{"a", 200, true},
		{"A-z_0-9", 200, true},
		{"42", 200, true},
		{"_user.x", 200, false}, // '.' not allowed
		{"_reserved", 200, true},
		{"", 200, false},
		{"with space", 200, false},
		{"dot.dot", 200, false},
		{"é", 200, false},
		{"a/b", 200, false},
		{strings.Repeat("a", 200), 200, true},
		{strings.Repeat("a", 201), 200, false},
		{strings.Repeat("a", 201), 0, false}, // 0 = default 200
		{strings.Repeat("a", 10), 9, false},
		{strings.Repeat("a", 9), 9, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := ValidChannel(tc.name, tc.max); got != tc.want {
				t.Fatalf("ValidChannel(%q, %d) = %v", tc.name, tc.max, got)
			}
		})
	}
}

func TestReservedChannel(t *testing.T) {
	for name, want := range map[string]bool{"_x": true, "_user.a": true, "x_": false, "": false, "a": false} {
		if got := ReservedChannel(name); got != want {
			t.Errorf("ReservedChannel(%q) = %v", name, got)
		}
	}
}

func TestValidUserID(t *testing.T) {
	tests := []struct {
		name, id string
		want     bool
	}{
		{"ascii", "alice", true},
		{"utf8", "Zoë 世界", true},
		{"punctuation", "a.b@c/d:_-", true},
		{"max length", strings.Repeat("u", 128), true},
		{"too long", strings.Repeat("u", 129), false},
		{"multibyte over 128 bytes", strings.Repeat("é", 65), false},
		{"empty", "", false},
		{"newline", "a\nb", false},
		{"nul", "a\x00", false},
		{"del", "a\x7f", false},
		{"c1 control", "a\u0085", false},
		{"invalid utf8", "a\xff", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := ValidUserID(tc.id); got != tc.want {
				t.Fatalf("ValidUserID(%q) = %v", tc.id, got)
			}
		})
	}
}

func TestUserChannel(t *testing.T) {
	for _, u := range []string{"alice", "Zoë", "a.b", "_x"} {
		ch := UserChannel(u)
		if ch != "_user."+u || !ReservedChannel(ch) {
			t.Fatalf("UserChannel(%q) = %q", u, ch)
		}
		back, ok := UserFromChannel(ch)
		if !ok || back != u {
			t.Fatalf("UserFromChannel(%q) = %q, %v", ch, back, ok)
		}
	}
	for _, ch := range []string{"alice", "_user.", "_user", "_u_alice", "_user.a\n", "user.alice"} {
		if u, ok := UserFromChannel(ch); ok {
			t.Errorf("UserFromChannel(%q) = %q, true", ch, u)
		}
	}
}
