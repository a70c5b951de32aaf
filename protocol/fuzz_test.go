package protocol

import (
	"bytes"
	"encoding/json"
	"errors"
	"testing"
)

// FuzzDecode checks that the validator agrees with json.Valid, that the
// decoders never panic, never modify their
// input, fail only with *DecodeError and a bad-input code, and that a frame
// DecodeClient accepts survives re-encoding with the client encoders: the
// re-encoded frame is valid JSON and decodes to the same message.
func FuzzDecode(f *testing.F) {
	for _, g := range goldenFrames {
		f.Add(g.got)
	}
	f.Add([]byte(`{"sys":1,"channel":5,"id":7}`))
	lim := Limits{MaxFrameBytes: 4 << 10, MaxDepth: 8}
	f.Fuzz(func(t *testing.T, data []byte) {
		orig := bytes.Clone(data)
		// The hand-written validator agrees with encoding/json and with a
		// plain bracket count.
		if valid, _ := validate(data, -1); valid != json.Valid(data) {
			t.Fatalf("validate = %v, json.Valid = %v for %q", valid, !valid, data)
		}
		if valid, tooDeep := validate(data, 4); json.Valid(data) && (valid == tooDeep || tooDeep == refDepthOK(data, 4)) {
			t.Fatalf("validate(4) = %v, %v; refDepthOK = %v for %q", valid, tooDeep, refDepthOK(data, 4), data)
		}
		m, err := DecodeClient(data, lim)
		checkDecodeErr(t, err)
		if err == nil {
			if !json.Valid(data) {
				t.Fatalf("accepted invalid JSON %q", data)
			}
			again := reencodeClient(m)
			if !json.Valid(again) {
				t.Fatalf("re-encoded %q as invalid JSON %q", data, again)
			}
			m2, err := DecodeClient(again, Limits{MaxFrameBytes: -1, MaxDepth: -1})
			if err != nil {
				t.Fatalf("re-encoded %q as %q: %v", data, again, err)
			}
			if !sameClientMessage(m, m2) {
				t.Fatalf("%q -> %+v\nre-encoded %q -> %+v", data, m, again, m2)
			}
		}
		sm, err := DecodeServer(data, lim)
		checkDecodeErr(t, err)
		if err == nil {
			switch {
			case sm.Sys == SysBegin && sm.Prot == nil,
				sm.Sys == SysSync && (sm.SyncResult == nil || sm.Records == nil),
				sm.Sys == 0 && sm.Err == nil:
				t.Fatalf("%q decoded with a nil required field: %+v", data, sm)
			}
		}
		if !bytes.Equal(data, orig) {
			t.Fatalf("decoding modified its input: %q -> %q", orig, data)
		}
	})
}

// checkDecodeErr fails unless err is nil or a *DecodeError with a
// bad-input code.
func checkDecodeErr(t *testing.T, err error) {
	t.Helper()
	if err == nil {
		return
	}
	var de *DecodeError
	if !errors.As(err, &de) {
		t.Fatalf("error %T %v is not a *DecodeError", err, err)
	}
	switch de.Code {
	case CodeBadFrame, CodeUnknownSys, CodeBadRequest, CodeMissingID:
	default:
		t.Fatalf("unexpected code %q", de.Code)
	}
	if de.ID != nil && !usableID(de.ID) {
		t.Fatalf("unusable id %q in error", de.ID)
	}
}

// reencodeClient encodes m again with the client encoders.
func reencodeClient(m *Message) []byte {
	switch m.Sys {
	case SysBegin:
		return AppendBegin(nil)
	case SysSubscribe:
		return AppendSubscribe(nil, m.ID, m.Channel, m.Query)
	case SysUnsubscribe:
		return AppendUnsubscribe(nil, m.Channel)
	case SysSync:
		return AppendSync(nil, m.ID, m.Subscriptions)
	case SysAsk:
		return AppendAsk(nil, m.ID, m.Topic, m.Msg)
	case SysTell:
		return AppendTell(nil, m.Topic, m.Msg)
	}
	return nil
}

// sameClientMessage compares two decoded client messages; a missing msg
// and a null one are the same (the encoders write null).
func sameClientMessage(a, b *Message) bool {
	norm := func(r json.RawMessage) string {
		if r == nil {
			return "null"
		}
		return string(r)
	}
	if a.Sys != b.Sys || a.Channel != b.Channel || a.Topic != b.Topic || string(a.ID) != string(b.ID) ||
		norm(a.Msg) != norm(b.Msg) || string(a.Query) != string(b.Query) || len(a.Subscriptions) != len(b.Subscriptions) {
		return false
	}
	for i, e := range a.Subscriptions {
		f := b.Subscriptions[i]
		if e.Channel != f.Channel || e.HasUID != f.HasUID || e.LastUID != f.LastUID || string(e.Query) != string(f.Query) {
			return false
		}
	}
	return true
}
