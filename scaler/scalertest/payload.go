package scalertest

import (
	"bytes"
	"encoding/json"
	"errors"
	"testing"

	"github.com/sss-go/sss/protocol"
	"github.com/sss-go/sss/scaler"
)

// payloads are valid JSON texts whose bytes a scaler must keep as they
// are: non-ASCII text, escapes (including a surrogate pair and an escaped
// quote) and numbers beyond float64 and int64.
var payloads = []string{
	`{"text":"héllo wörld — 日本語 😀"}`,
	`{"esc":"\u00e9 \ud83d\ude00 \"quoted\" back\\slash \/ \u0000","ctl":"\n\t"}`,
	`{"big":123456789012345678901234567890,"exact":9007199254740993,"neg":-1.000000000000000000001e+308,"tiny":1e-400}`,
	`["mixé",1,true,null,{"a":[]}]`,
	`"plain string"`,
	`12345678901234567890`,
}

// badPayloads are not valid UTF-8 JSON text.
var badPayloads = []string{
	"\"\xff\xfe\"",
	"{\"a\":\"caf\xe9\"}",
	"[\"\xc3\"]",
	`{"a":`,
	`nope`,
	`{"a":1}{`,
}

func testPayload(t *testing.T, f Factory) {
	const ch = "payload"
	ns := nodes(t, f, 2)
	a, b := ns[0], ns[1]
	pos := b.subscribe(t, ch)
	uids := make([]protocol.UID, len(payloads))
	for i, p := range payloads {
		uids[i] = a.publish(t, ch, p)
	}
	last := uids[len(uids)-1]
	b.r.waitSeq(t, b.name, ch, last)
	for _, bad := range badPayloads {
		_, err := a.s.Publish(ctx(t), ch, "t", json.RawMessage(bad), scaler.PublishOptions{})
		if err == nil || !errors.Is(err, scaler.ErrBadPayload) {
			t.Errorf("Publish(%q) = %v, want an error wrapping scaler.ErrBadPayload", bad, err)
		}
	}
	if p, err := b.s.Position(ctx(t), ch); err != nil || p != last {
		t.Fatalf("Position after the rejected payloads = %v, %v; want %v (nothing stored)", p, err, last)
	}
	live := map[protocol.UID][]byte{}
	for _, e := range b.r.stream(ch) {
		if !e.reset {
			live[e.pub.UID] = e.pub.Msg
		}
	}
	since, err := b.s.Since(ctx(t), ch, pos, 0)
	if err != nil || len(since) != len(payloads) {
		t.Fatalf("Since(%v) = %d publications, %v; want %d", pos, len(since), err, len(payloads))
	}
	// Without a HistoryReader, the Since copies stand in for History's.
	hist := since
	if b.hr != nil {
		hist, err = b.hr.History(ctx(t), ch, 0)
		if err != nil || len(hist) != len(payloads) {
			t.Fatalf("History = %d publications, %v; want %d", len(hist), err, len(payloads))
		}
	}
	for i, in := range payloads {
		u := uids[i]
		got, ok := live[u]
		if !ok {
			t.Fatalf("the stream did not deliver %v", u)
		}
		if since[i].UID != u || hist[i].UID != u {
			t.Fatalf("Since/History order: %v / %v, want %v", since[i].UID, hist[i].UID, u)
		}
		if !bytes.Equal(got, since[i].Msg) || !bytes.Equal(got, hist[i].Msg) {
			t.Errorf("%v: live %s, Since %s, History %s: the recovered bytes differ from the live ones", u, got, since[i].Msg, hist[i].Msg)
		}
		var want, have bytes.Buffer
		if err := json.Compact(&want, []byte(in)); err != nil {
			t.Fatal(err)
		}
		if err := json.Compact(&have, got); err != nil || want.String() != have.String() {
			t.Errorf("%v: delivered %s for the published %s", u, got, in)
		}
	}
}
