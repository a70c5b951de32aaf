package protocol

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

// TestAppendPresence: the msg of a presence TELL, byte for byte
// (docs/protocol.md, "5.8 Presence events").
func TestAppendPresence(t *testing.T) {
	for _, tc := range []struct {
		name string
		e    PresenceEvent
		want string
	}{
		{"user and info", PresenceEvent{"sport", PresenceJoin, PresenceMember{"alice", json.RawMessage(`{"name":"Alice"}`)}},
			`{"channel":"sport","event":"join","member":{"user":"alice","info":{"name":"Alice"}}}`},
		{"anonymous, no info", PresenceEvent{"sport", PresenceLeave, PresenceMember{}},
			`{"channel":"sport","event":"leave","member":{"user":null,"info":{}}}`},
		{"info compacted", PresenceEvent{"c", PresenceJoin, PresenceMember{"u", json.RawMessage("{ \"a\" : [1, 2] }")}},
			`{"channel":"c","event":"join","member":{"user":"u","info":{"a":[1,2]}}}`},
		{"info not JSON", PresenceEvent{"c", PresenceJoin, PresenceMember{"u", json.RawMessage(`{bad`)}},
			`{"channel":"c","event":"join","member":{"user":"u","info":{}}}`},
		{"info not UTF-8", PresenceEvent{"c", PresenceJoin, PresenceMember{"u", json.RawMessage("\"\xff\"")}},
			`{"channel":"c","event":"join","member":{"user":"u","info":{}}}`},
		{"user escaped, no HTML escaping", PresenceEvent{"c", PresenceJoin, PresenceMember{"a\"<&>\u2028", nil}},
			`{"channel":"c","event":"join","member":{"user":"a\"<&>\u2028","info":{}}}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := string(AppendPresence(nil, tc.e)); got != tc.want {
				t.Fatalf("AppendPresence = %s\nwant %s", got, tc.want)
			}
			frame := AppendTell(nil, PresenceTopic, AppendPresence(nil, tc.e))
			if want := `{"sys":6,"topic":"_presence","msg":` + tc.want + `}`; string(frame) != want {
				t.Fatalf("frame %s, want %s", frame, want)
			}
			// encoding/json gives the same bytes (without HTML escaping,
			// as the wire) and reads them back.
			var buf bytes.Buffer
			enc := json.NewEncoder(&buf)
			enc.SetEscapeHTML(false)
			if err := enc.Encode(tc.e); err != nil || strings.TrimSuffix(buf.String(), "\n") != tc.want {
				t.Fatalf("encoding/json: %s, %v", buf.String(), err)
			}
			var back PresenceEvent
			if err := json.Unmarshal([]byte(tc.want), &back); err != nil {
				t.Fatal(err)
			}
			if got := string(AppendPresence(nil, back)); got != tc.want {
				t.Fatalf("decoded and encoded again: %s", got)
			}
		})
	}
}
