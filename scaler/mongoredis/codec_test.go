package mongoredis

import (
	"context"
	"errors"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"

	"github.com/sss-go/sss/protocol"
)

func TestRelayCodec(t *testing.T) {
	now := time.UnixMilli(time.Now().UnixMilli())
	for _, tc := range []struct {
		name string
		doc  pubDoc
	}{
		{"plain", pubDoc{ID: bson.NewObjectID(), Epoch: "abc", Seq: 1, Topic: "t", Msg: `{"a":1}`, Time: now}},
		{"empty topic", pubDoc{Epoch: protocol.NewEpoch(), Seq: 1 << 40, Msg: `"x"`, Time: now}},
		{"binary topic", pubDoc{Epoch: "E", Seq: 7, Topic: "a\x00b\xff", Msg: `[1,2]`, Time: now}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, id, err := decodeRelay("ch", encodeRelay(&tc.doc))
			if err != nil {
				t.Fatal(err)
			}
			if id != tc.doc.ID {
				t.Fatalf("round trip _id = %v, want %v", id, tc.doc.ID)
			}
			want := protocol.UID{Epoch: tc.doc.Epoch, Seq: uint64(tc.doc.Seq)}
			if p.Channel != "ch" || p.UID != want || p.Topic != tc.doc.Topic || string(p.Msg) != tc.doc.Msg || !p.Time.Equal(now) {
				t.Fatalf("round trip = %+v, want %+v", p, tc.doc)
			}
		})
	}
}

func TestRelayCodecRejects(t *testing.T) {
	good := encodeRelay(&pubDoc{Epoch: "abc", Seq: 3, Topic: "topic", Msg: `1`, Time: time.Now()})
	for _, tc := range []struct {
		name string
		b    []byte
	}{
		{"empty", nil},
		{"version", append([]byte{3}, good[1:]...)},
		{"truncated id", good[:10]},
		{"truncated epoch", good[:3]},
		{"bad epoch", encodeRelay(&pubDoc{Epoch: "a-b", Seq: 1})},
		{"seq 0", encodeRelay(&pubDoc{Epoch: "abc", Seq: 0})},
		{"huge length", []byte{1, 0xff, 0xff, 0xff, 0xff, 0x0f, 'a'}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, _, err := decodeRelay("ch", tc.b); !errors.Is(err, ErrMalformed) {
				t.Fatalf("decodeRelay(%q) = %v, want ErrMalformed", tc.b, err)
			}
		})
	}
	// Every prefix of a valid message either decodes or is rejected;
	// none panics.
	for i := range good {
		_, _, _ = decodeRelay("ch", good[:i])
	}
	// Version 1 (no _id) still decodes.
	v1 := append([]byte{1}, good[1+12:]...)
	if p, id, err := decodeRelay("ch", v1); err != nil || !id.IsZero() || p.UID.Seq != 3 {
		t.Fatalf("version 1 message: %+v, %v, %v", p, id, err)
	}
}

func FuzzDecodeRelay(f *testing.F) {
	f.Add(encodeRelay(&pubDoc{Epoch: "abc", Seq: 3, Topic: "topic", Msg: `{"x":1}`, Time: time.Now()}))
	f.Add([]byte{1})
	f.Fuzz(func(t *testing.T, b []byte) {
		p, _, err := decodeRelay("ch", b)
		if err == nil && (!protocol.ValidEpoch(p.UID.Epoch) || p.UID.Seq == 0 || len(p.Msg) == 0) {
			t.Fatalf("accepted an invalid publication %+v", p)
		}
	})
}

func TestOptions(t *testing.T) {
	for _, tc := range []struct {
		name string
		o    Options
		ok   bool
	}{
		{"no mongo", Options{RedisURL: "redis://127.0.0.1:1"}, false},
		{"no redis", Options{MongoURI: "mongodb://127.0.0.1:1"}, false},
		{"bad prefix", Options{MongoURI: "mongodb://x", RedisURL: "redis://x", Prefix: "a b"}, false},
		{"bad instance", Options{MongoURI: "mongodb://x", RedisURL: "redis://x", InstanceID: "a:b"}, false},
		{"minimal", Options{MongoURI: "mongodb://x", RedisURL: "redis://x"}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o, err := tc.o.withDefaults()
			if (err == nil) != tc.ok {
				t.Fatalf("withDefaults() error = %v, want ok %v", err, tc.ok)
			}
			if err != nil && !errors.Is(err, ErrBadOptions) {
				t.Fatalf("error %v does not wrap ErrBadOptions", err)
			}
			if tc.ok && (o.Database != defaultDatabase || o.Prefix != defaultPrefix || o.CollectionPrefix != defaultPrefix ||
				o.DefaultRetention.MaxCount != defaultMaxCount || o.LeaseTTL != defaultLeaseTTL || o.InstanceID == "" || o.Logger == nil) {
				t.Fatalf("defaults not applied: %+v", o)
			}
		})
	}
	if _, err := New(context.Background(), Options{RedisURL: "redis://x"}); !errors.Is(err, ErrBadOptions) {
		t.Fatalf("New without MongoDB = %v, want ErrBadOptions", err)
	}
	if _, err := New(context.Background(), Options{MongoURI: "mongodb://127.0.0.1:1", RedisURL: "nope://"}); !errors.Is(err, ErrBadOptions) {
		t.Fatalf("New with a bad RedisURL = %v, want ErrBadOptions", err)
	}
	o, _ := Options{MongoURI: "mongodb://x", RedisURL: "redis://x"}.withDefaults()
	if o.ConnectTimeout != defaultConnect || o.WriteConcern == nil || o.WriteConcern.W != "majority" ||
		o.WriteConcern.Journal == nil || !*o.WriteConcern.Journal || o.ReadConcern == nil || o.ReadConcern.Level != "majority" {
		t.Fatalf("defaults: ConnectTimeout %v, WriteConcern %+v, ReadConcern %+v", o.ConnectTimeout, o.WriteConcern, o.ReadConcern)
	}
}

func TestStoredPublicationWithBadJSON(t *testing.T) {
	d := pubDoc{ID: bson.NewObjectID(), Ch: "c", Epoch: "e", Seq: 1, Msg: "{not json"}
	if p := d.publication(); string(p.Msg) != "null" {
		t.Fatalf("publication of a corrupt document carries %q, want null", p.Msg)
	}
}
