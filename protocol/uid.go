package protocol

import (
	"crypto/rand"
	"errors"
	"strconv"
	"strings"
)

// UID is the position of a publication in its channel: the channel's history
// epoch and the publication's sequence number. On the wire it is the string
// "<epoch>.<seq>" (docs/protocol.md, "3.4 uids"). Seq 0 is the position of a channel
// with no publications in the current epoch.
type UID struct {
	// Epoch identifies one unbroken history of a channel: 1–32 characters of
	// [A-Za-z0-9], chosen at random when the history begins.
	Epoch string
	// Seq is 1 for the first publication of the epoch, +1 for each next one.
	Seq uint64
}

// MaxEpochLen is the longest epoch a uid may carry.
const MaxEpochLen = 32

// ErrBadUID is returned by ParseUID for a string that is not a valid uid.
var ErrBadUID = errors.New("sss/protocol: malformed uid")

// ParseUID parses "<epoch>.<seq>".
func ParseUID(s string) (UID, error) {
	dot := strings.LastIndexByte(s, '.')
	if dot <= 0 || dot == len(s)-1 {
		return UID{}, ErrBadUID
	}
	epoch, num := s[:dot], s[dot+1:]
	if !ValidEpoch(epoch) {
		return UID{}, ErrBadUID
	}
	// Reject signs, spaces and leading zeros so that every uid has exactly
	// one spelling and compares equal to its own String().
	if num[0] < '0' || num[0] > '9' || (len(num) > 1 && num[0] == '0') {
		return UID{}, ErrBadUID
	}
	seq, err := strconv.ParseUint(num, 10, 64)
	if err != nil {
		return UID{}, ErrBadUID
	}
	return UID{Epoch: epoch, Seq: seq}, nil
}

// String formats the uid as "<epoch>.<seq>".
func (u UID) String() string {
	return u.Epoch + "." + strconv.FormatUint(u.Seq, 10)
}

// AppendText appends the uid's wire form to b, for encoders that avoid
// allocating.
func (u UID) AppendText(b []byte) []byte {
	b = append(b, u.Epoch...)
	b = append(b, '.')
	return strconv.AppendUint(b, u.Seq, 10)
}

// IsZero reports whether u is the zero UID (no epoch).
func (u UID) IsZero() bool { return u.Epoch == "" && u.Seq == 0 }

// Next returns the uid that follows u in the same epoch.
func (u UID) Next() UID { return UID{Epoch: u.Epoch, Seq: u.Seq + 1} }

// Compare orders two uids of the same epoch by seq: -1 if u < v, 0 if equal,
// +1 if u > v. Uids of different epochs are not ordered; Compare returns 0
// and ok false for them.
func (u UID) Compare(v UID) (cmp int, ok bool) {
	if u.Epoch != v.Epoch {
		return 0, false
	}
	switch {
	case u.Seq < v.Seq:
		return -1, true
	case u.Seq > v.Seq:
		return 1, true
	}
	return 0, true
}

// ValidEpoch reports whether s is 1–32 characters of [A-Za-z0-9].
func ValidEpoch(s string) bool {
	if len(s) == 0 || len(s) > MaxEpochLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z') {
			return false
		}
	}
	return true
}

const epochAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"

// NewEpoch returns a fresh random epoch of 16 characters (about 95 bits), so
// two histories of one channel never share an epoch.
func NewEpoch() string {
	var raw [16]byte
	_, _ = rand.Read(raw[:]) // crypto/rand.Read never fails on supported platforms
	for i, b := range raw {
		raw[i] = epochAlphabet[int(b)%len(epochAlphabet)]
	}
	return string(raw[:])
}
