package mongoredis

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"

	"github.com/sss-go/sss/protocol"
	"github.com/sss-go/sss/scaler"
)

// Format versions.
//
// Everything this package writes to a shared backend carries the format
// version it was written in, so that instances of two versions can share
// one backend during a rolling deploy. The rule: an instance writes
// format N and reads formats N and N-1.
//
//   - Format 1, the previous release: relay messages start with the byte
//     1 and carry no document _id; documents and control envelopes have
//     no version field.
//   - Format 2, this release: relay messages start with the byte 2 and
//     carry the publication's document _id (it tells two publications
//     that claim one uid apart: see rollback.go); publication, channel
//     and meta documents carry {v: 2}; control envelopes carry "v": 2.
//     Channels get a document only with their first publication (epoch.go).
//
// What an instance of format 1 does with format 2 data: documents and
// envelopes only gained fields, which it ignores, so it reads them as
// before (to it the meta document, named "", is a channel without epoch
// and without publications). It rejects a relay message of format 2
// ("unknown version", logged) and finds the publication in the log at its
// next check of the channel, so during a deploy it keeps delivering
// every publication once and in order, up to CheckInterval late. A
// format 1 instance creates a channel document when it subscribes to a
// new channel; instances of format 2 that served the channel's derived
// epoch then reset their streams of it into the document's epoch
// (nothing was published, so nothing is lost).
//
// A later format must keep this property for documents (only add
// fields; a field keeps its meaning), since the log has no fallback: a
// format N instance reads a newer document by the fields it knows.
// Relay messages of an unknown version are rejected (and filled from the
// log); control envelopes are read by the fields this version knows.
const formatVersion int32 = 2

// encodeRelay encodes a publication for the relay (format 2): a version
// byte (2), the document's 12-byte _id, then uvarint-length-prefixed
// epoch, uvarint seq, varint unix milliseconds, uvarint-length-prefixed
// topic, and the JSON message as the rest. Format 1 is the same without
// the _id.
func encodeRelay(d *pubDoc) []byte {
	b := make([]byte, 0, 36+len(d.Epoch)+len(d.Topic)+len(d.Msg))
	b = append(b, byte(formatVersion))
	b = append(b, d.ID[:]...)
	b = binary.AppendUvarint(b, uint64(len(d.Epoch)))
	b = append(b, d.Epoch...)
	b = binary.AppendUvarint(b, uint64(d.Seq))
	b = binary.AppendVarint(b, d.Time.UnixMilli())
	b = binary.AppendUvarint(b, uint64(len(d.Topic)))
	b = append(b, d.Topic...)
	return append(b, d.Msg...)
}

// decodeRelay decodes a relay message of format 2 or 1 (whose _id is
// zero: unknown); it never panics.
func decodeRelay(ch string, b []byte) (scaler.Publication, bson.ObjectID, error) {
	var id bson.ObjectID
	bad := func(what string) (scaler.Publication, bson.ObjectID, error) {
		return scaler.Publication{}, id, malformed(fmt.Sprintf("relay message on %q", ch), what)
	}
	switch {
	case len(b) >= 1 && b[0] == 1:
		b = b[1:]
	case len(b) >= 1+len(id) && b[0] == 2:
		copy(id[:], b[1:])
		b = b[1+len(id):]
	default:
		return bad("unknown version")
	}
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
	return scaler.Publication{
		Channel: ch,
		UID:     protocol.UID{Epoch: ep, Seq: seq},
		Topic:   topic,
		Msg:     msg,
		Time:    time.UnixMilli(ms),
	}, id, nil
}

// envelope is a message of the control channel.
type envelope struct {
	// V is the format version; 0 (absent) is format 1.
	V   int32           `json:"v,omitempty"`
	Ctl *scaler.Control `json:"c,omitempty"`
	// Reset names a channel whose history was reset to Epoch.
	Reset string `json:"reset,omitempty"`
	Epoch string `json:"ep,omitempty"`
}

// encodeEnvelope encodes e in this version's format.
func encodeEnvelope(e envelope) ([]byte, error) {
	e.V = formatVersion
	return json.Marshal(e)
}

// decodeEnvelope decodes an envelope of any format (the fields this
// version knows).
func decodeEnvelope(b []byte) (envelope, error) {
	var e envelope
	if err := json.Unmarshal(b, &e); err != nil {
		return envelope{}, malformed("control message", err.Error())
	}
	return e, nil
}
