package mongoredis

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"

	"github.com/sss-go/sss/internal/testutil"
	"github.com/sss-go/sss/protocol"
	"github.com/sss-go/sss/scaler"
)

// Format 1, the previous release, as it wrote and read (see codec.go):
// kept here to check that this version reads it and to show what an
// instance of that release does with what this version writes.

// pubDocV1, chanDocV1 and envelopeV1 are format 1's documents and control
// envelope.
type pubDocV1 struct {
	ID    bson.ObjectID `bson:"_id"`
	Ch    string        `bson:"ch"`
	Epoch string        `bson:"ep"`
	Seq   int64         `bson:"seq"`
	Topic string        `bson:"tp"`
	Msg   string        `bson:"m"`
	Time  time.Time     `bson:"t"`
	Key   string        `bson:"ik"`
}

type chanDocV1 struct {
	Ch    string `bson:"_id"`
	Epoch string `bson:"ep"`
	Floor int64  `bson:"floor"`
}

type envelopeV1 struct {
	Ctl   *scaler.Control `json:"c,omitempty"`
	Reset string          `json:"reset,omitempty"`
	Epoch string          `json:"ep,omitempty"`
}

// encodeRelayV1 is format 1's relay encoder.
func encodeRelayV1(d *pubDocV1) []byte {
	b := []byte{1}
	b = binary.AppendUvarint(b, uint64(len(d.Epoch)))
	b = append(b, d.Epoch...)
	b = binary.AppendUvarint(b, uint64(d.Seq))
	b = binary.AppendVarint(b, d.Time.UnixMilli())
	b = binary.AppendUvarint(b, uint64(len(d.Topic)))
	b = append(b, d.Topic...)
	return append(b, d.Msg...)
}

// decodeRelayV1 is format 1's relay decoder, as the previous release has
// it.
func decodeRelayV1(ch string, b []byte) (scaler.Publication, error) {
	bad := func(what string) (scaler.Publication, error) {
		return scaler.Publication{}, fmt.Errorf("%w: relay message on %q: %s", ErrMalformed, ch, what)
	}
	if len(b) < 1 || b[0] != 1 {
		return bad("unknown version")
	}
	b = b[1:]
	str := func() (string, bool) {
		n, k := binary.Uvarint(b)
		if k <= 0 || n > uint64(len(b)-k) {
			return "", false
		}
		v := string(b[k : k+int(n)])
		b = b[k+int(n):]
		return v, true
	}
	ep, ok := str()
	if !ok || !protocol.ValidEpoch(ep) {
		return bad("epoch")
	}
	seq, k := binary.Uvarint(b)
	if k <= 0 || seq == 0 {
		return bad("seq")
	}
	b = b[k:]
	ms, k := binary.Varint(b)
	if k <= 0 {
		return bad("time")
	}
	b = b[k:]
	topic, ok := str()
	if !ok {
		return bad("topic")
	}
	msg := json.RawMessage(b)
	if len(msg) == 0 {
		msg = json.RawMessage("null")
	}
	return scaler.Publication{Channel: ch, UID: protocol.UID{Epoch: ep, Seq: seq}, Topic: topic, Msg: msg, Time: time.UnixMilli(ms)}, nil
}

// samePub reports how a differs from b ("" when it does not).
func samePub(a, b scaler.Publication) string {
	if a.Channel != b.Channel || a.UID != b.UID || a.Topic != b.Topic || string(a.Msg) != string(b.Msg) || !a.Time.Equal(b.Time) {
		return fmt.Sprintf("%+v, want %+v", a, b)
	}
	return ""
}

// TestFormatsBetweenVersions checks, without a backend, both directions
// of a rolling deploy between format 1 and this version's format 2: this
// version reads format 1 relay messages, documents and envelopes; a
// format 1 instance reads format 2 documents and envelopes by the fields
// it knows, and rejects (does not misread) a format 2 relay message.
func TestFormatsBetweenVersions(t *testing.T) {
	now := time.UnixMilli(time.Now().UnixMilli())
	old := &pubDocV1{ID: bson.NewObjectID(), Ch: "c", Epoch: "E1", Seq: 7, Topic: "t", Msg: `{"a":1}`, Time: now, Key: "k:x"}
	cur := &pubDoc{ID: bson.NewObjectID(), V: formatVersion, Ch: "c", Epoch: "E2", Seq: 9, Topic: "t2", Msg: `[1]`, Time: now, Key: "#y"}

	t.Run("relay", func(t *testing.T) {
		want, err := decodeRelayV1("c", encodeRelayV1(old))
		if err != nil {
			t.Fatal(err)
		}
		got, id, err := decodeRelay("c", encodeRelayV1(old))
		if err != nil || !id.IsZero() {
			t.Fatalf("this version decoding format 1: %v, _id %v", err, id)
		}
		if msg := samePub(got, want); msg != "" {
			t.Fatal("format 1 relay message read as", msg)
		}
		if b := encodeRelay(cur); b[0] != byte(formatVersion) {
			t.Fatalf("relay messages are written in format %d, want %d", b[0], formatVersion)
		}
		if p, err := decodeRelayV1("c", encodeRelay(cur)); !errors.Is(err, ErrMalformed) {
			t.Fatalf("a format 1 instance decoding a format 2 message: %+v, %v; want it rejected (it then reads the log)", p, err)
		}
	})

	t.Run("documents", func(t *testing.T) {
		var v2 pubDoc
		roundTrip(t, old, &v2)
		if v2.V != 0 || v2.ID != old.ID || v2.Ch != old.Ch || v2.Epoch != old.Epoch || v2.Seq != old.Seq ||
			v2.Topic != old.Topic || v2.Msg != old.Msg || !v2.Time.Equal(old.Time) || v2.Key != old.Key {
			t.Fatalf("format 1 publication read as %+v, want %+v", v2, old)
		}
		var v1 pubDocV1
		roundTrip(t, cur, &v1)
		if v1.ID != cur.ID || v1.Ch != cur.Ch || v1.Epoch != cur.Epoch || v1.Seq != cur.Seq || v1.Topic != cur.Topic ||
			v1.Msg != cur.Msg || !v1.Time.Equal(cur.Time) || v1.Key != cur.Key {
			t.Fatalf("a format 1 instance reads a format 2 publication as %+v, want %+v", v1, cur)
		}
		var c2 chanDoc
		roundTrip(t, chanDocV1{Ch: "c", Epoch: "E1", Floor: 3}, &c2)
		if c2 != (chanDoc{Ch: "c", Epoch: "E1", Floor: 3}) {
			t.Fatalf("format 1 channel document read as %+v", c2)
		}
		var c1 chanDocV1
		roundTrip(t, chanDoc{Ch: "c", V: formatVersion, Epoch: "E2", Floor: 4}, &c1)
		if c1 != (chanDocV1{Ch: "c", Epoch: "E2", Floor: 4}) {
			t.Fatalf("a format 1 instance reads a format 2 channel document as %+v", c1)
		}
		var meta chanDocV1
		roundTrip(t, metaDoc{ID: metaID, V: formatVersion, Secret: "s"}, &meta)
		if meta != (chanDocV1{}) {
			t.Fatalf("a format 1 instance reads the meta document as %+v, want a channel named \"\" without epoch or floor", meta)
		}
	})

	t.Run("envelopes", func(t *testing.T) {
		ctl := &scaler.Control{Kind: scaler.ControlTellUser, Target: "u", Topic: "t", Msg: json.RawMessage(`{"x":1}`), Origin: "o"}
		b, err := encodeEnvelope(envelope{Ctl: ctl, Reset: "c", Epoch: "E2"})
		if err != nil {
			t.Fatal(err)
		}
		var v1 envelopeV1
		if err := json.Unmarshal(b, &v1); err != nil || v1.Reset != "c" || v1.Epoch != "E2" || v1.Ctl == nil ||
			v1.Ctl.Kind != ctl.Kind || v1.Ctl.Target != "u" || string(v1.Ctl.Msg) != `{"x":1}` {
			t.Fatalf("a format 1 instance reads %s as %+v, %v", b, v1, err)
		}
		old, err := json.Marshal(envelopeV1{Ctl: ctl, Reset: "c", Epoch: "E1"})
		if err != nil {
			t.Fatal(err)
		}
		e, err := decodeEnvelope(old)
		if err != nil || e.V != 0 || e.Reset != "c" || e.Epoch != "E1" || e.Ctl == nil || e.Ctl.Target != "u" {
			t.Fatalf("format 1 envelope %s read as %+v, %v", old, e, err)
		}
	})
}

// roundTrip marshals in as BSON and unmarshals it into out.
func roundTrip(t *testing.T, in, out any) {
	t.Helper()
	b, err := bson.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	if err := bson.Unmarshal(b, out); err != nil {
		t.Fatal(err)
	}
}

// TestFormat1Backend: a channel document, publications, relay messages
// and control envelopes written in format 1 (as an instance of the
// previous release writes them, crafted here) are read and delivered by
// this version: in order, each once, a relay gap filled from format 1
// documents; Since and History return them; this version's next publish
// continues the channel and writes format 2.
func TestFormat1Backend(t *testing.T) {
	rd := testutil.StartRedis(t)
	mg := testutil.SharedMongo(t)
	env := newEnv(t, rd.URL, mg.URI)
	// Only the control message can make the stream notice the reset
	// below: no periodic check.
	s := env.newScaler(t, func(o *Options) { o.CheckInterval = time.Hour })
	r := startScaler(t, s)
	ctx := tctx(t)
	rc := redis.NewClient(&redis.Options{Addr: rd.Addr})
	t.Cleanup(func() { _ = rc.Close() })
	pubs, chans := env.collections(t, mg)
	const ch = "format1"
	ep := protocol.NewEpoch()
	if _, err := chans.InsertOne(ctx, chanDocV1{Ch: ch, Epoch: ep}); err != nil {
		t.Fatal(err)
	}
	pos, err := s.Subscribe(ctx, ch)
	if err != nil || pos != (protocol.UID{Epoch: ep}) {
		t.Fatalf("Subscribe over a format 1 channel document = %v, %v; want %s.0", pos, err, ep)
	}
	var want []scaler.Publication
	for seq := int64(1); seq <= 3; seq++ {
		id := bson.NewObjectID()
		d := &pubDocV1{ID: id, Ch: ch, Epoch: ep, Seq: seq, Topic: fmt.Sprint("t", seq), Msg: fmt.Sprintf(`{"n":%d}`, seq),
			Time: time.UnixMilli(time.Now().UnixMilli()), Key: "#" + id.Hex()}
		if _, err := pubs.InsertOne(ctx, d); err != nil {
			t.Fatal(err)
		}
		want = append(want, scaler.Publication{Channel: ch, UID: protocol.UID{Epoch: ep, Seq: uint64(seq)}, Topic: d.Topic, Msg: json.RawMessage(d.Msg), Time: d.Time})
		if seq == 2 {
			continue // lost on the relay: read from the log
		}
		if err := rc.Publish(ctx, env.prefix+":c:"+ch, encodeRelayV1(d)).Err(); err != nil {
			t.Fatal(err)
		}
	}
	r.waitFor(t, 10*time.Second, "the three format 1 publications", func() bool { return len(r.stream(ch)) >= 3 })
	checkPubs(t, "delivered", r.stream(ch), want)
	if r.count(scaler.EventGapFilled) == 0 {
		t.Error("seq 2 was not filled from the log")
	}
	got, err := s.Since(ctx, ch, pos, 0)
	if err != nil {
		t.Fatal(err)
	}
	checkPubs(t, "Since", got, want)
	if got, err = s.History(ctx, ch, 0); err != nil {
		t.Fatal(err)
	}
	checkPubs(t, "History", got, want)

	checkFormat2Publish(t, s, rc, pubs, env.prefix+":c:"+ch, scaler.Publication{Channel: ch, UID: protocol.UID{Epoch: ep, Seq: 4}})
	r.waitFor(t, 10*time.Second, "this version's publication", func() bool { return len(r.stream(ch)) == 4 })

	// Format 1 control envelopes: a broadcast, then a history reset
	// made by a format 1 instance.
	ctl, _ := json.Marshal(envelopeV1{Ctl: &scaler.Control{Kind: scaler.ControlBroadcast, Topic: "old", Origin: "v1"}})
	if err := rc.Publish(ctx, env.prefix+":ctl", ctl).Err(); err != nil {
		t.Fatal(err)
	}
	r.waitFor(t, 10*time.Second, "the format 1 broadcast", func() bool {
		r.mu.Lock()
		defer r.mu.Unlock()
		return len(r.ctls) == 1 && r.ctls[0].Origin == "v1" && r.ctls[0].Topic == "old"
	})
	ep2 := protocol.NewEpoch()
	if _, err := chans.UpdateOne(ctx, bson.D{{Key: "_id", Value: ch}}, bson.D{{Key: "$set", Value: bson.D{{Key: "ep", Value: ep2}, {Key: "floor", Value: 0}}}}); err != nil {
		t.Fatal(err)
	}
	reset, _ := json.Marshal(envelopeV1{Reset: ch, Epoch: ep2})
	if err := rc.Publish(ctx, env.prefix+":ctl", reset).Err(); err != nil {
		t.Fatal(err)
	}
	r.waitFor(t, 10*time.Second, "the stream to move to the new epoch", func() bool {
		r.mu.Lock()
		defer r.mu.Unlock()
		return len(r.resets) == 1 && r.resets[0].pos == ep2+".0" && errors.Is(r.resets[0].err, scaler.ErrEpochChanged)
	})
}

// checkPubs compares publications one by one.
func checkPubs(t *testing.T, what string, got, want []scaler.Publication) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d publications, want %d", what, len(got), len(want))
	}
	for i := range got {
		if msg := samePub(got[i], want[i]); msg != "" {
			t.Fatalf("%s %d: %s", what, i, msg)
		}
	}
}

// checkFormat2Publish publishes on want's channel (relayed on Redis
// channel relayName), which must take uid want, and checks that the
// document and the relay message are in format 2.
func checkFormat2Publish(t *testing.T, s *Scaler, rc *redis.Client, pubs *mongo.Collection, relayName string, want scaler.Publication) {
	t.Helper()
	ctx := tctx(t)
	ch := want.Channel
	ps := rc.Subscribe(ctx, relayName)
	defer ps.Close()
	if _, err := ps.Receive(ctx); err != nil { // the subscription's confirmation
		t.Fatal(err)
	}
	u, err := s.Publish(ctx, ch, "t", json.RawMessage(`"v2"`), scaler.PublishOptions{})
	if err != nil || u != want.UID {
		t.Fatalf("publish after format 1 publications = %v, %v; want %v", u, err, want.UID)
	}
	m, err := ps.ReceiveMessage(ctx)
	if err != nil || len(m.Payload) == 0 || m.Payload[0] != byte(formatVersion) {
		t.Fatalf("relay message %q, %v; want one in format %d", m, err, formatVersion)
	}
	var raw bson.Raw
	if err := pubs.FindOne(ctx, bson.D{{Key: "ch", Value: ch}, {Key: "seq", Value: int64(want.UID.Seq)}}).Decode(&raw); err != nil {
		t.Fatal(err)
	}
	if v, ok := raw.Lookup("v").AsInt64OK(); !ok || v != int64(formatVersion) {
		t.Fatalf("stored publication %s: want v %d", raw, formatVersion)
	}
}
