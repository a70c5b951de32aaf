package protocol

import (
	"strings"
	"unicode/utf8"
)

// MaxUserIDLen is the longest user id, in bytes.
const MaxUserIDLen = 128

// ValidChannel reports whether name matches ^[A-Za-z0-9_-]{1,max}$. A max
// of zero or less means DefaultMaxChannelLen. It does not check for the
// reserved prefix: see ReservedChannel.
func ValidChannel(name string, max int) bool {
	if max <= 0 {
		max = DefaultMaxChannelLen
	}
	if len(name) == 0 || len(name) > max {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// ReservedChannel reports whether name begins with '_': such names belong
// to the system (user and session channels), never to a client's SUBSCRIBE.
func ReservedChannel(name string) bool { return len(name) > 0 && name[0] == '_' }

// UserChannel returns the user channel of user id user ("_user." + user).
// The mapping is one-to-one; UserFromChannel inverts it.
func UserChannel(user string) string { return UserChannelPrefix + user }

// UserFromChannel returns the user id whose user channel is ch, and false
// when ch is not a user channel of a valid user id.
func UserFromChannel(ch string) (string, bool) {
	if !strings.HasPrefix(ch, UserChannelPrefix) {
		return "", false
	}
	u := ch[len(UserChannelPrefix):]
	if !ValidUserID(u) {
		return "", false
	}
	return u, true
}

// ValidUserID reports whether u is 1-128 bytes of valid UTF-8 without
// control characters (C0, DEL and C1).
func ValidUserID(u string) bool {
	if len(u) == 0 || len(u) > MaxUserIDLen || !utf8.ValidString(u) {
		return false
	}
	for _, r := range u {
		if r < 0x20 || (r >= 0x7f && r < 0xa0) {
			return false
		}
	}
	return true
}
