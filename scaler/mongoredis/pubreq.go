package mongoredis

import (
	"encoding/json"
	"strings"
	"sync"
	"sync/atomic"

	"go.mongodb.org/mongo-driver/v2/bson"

	"github.com/sss-go/sss/protocol"
)

// Publish requests: one per Publish call, shared by Publish (which may
// withdraw or abandon it) and the channel's writer (which stores it).

// States of a publish request, shared by Publish and the writer.
const (
	reqQueued  int32 = iota // not on the wire: Publish may withdraw it
	reqSending              // in an insert, or in one whose outcome is unknown
	reqGone                 // withdrawn by Publish before it was sent
)

// pubReq is one Publish call waiting for its batch.
type pubReq struct {
	doc   pubDoc
	state atomic.Int32
	// abandoned: Publish returned ErrUncertain; the writer does not send
	// the request again (only an insert already on the wire may store it).
	abandoned atomic.Bool
	// maybeStored: an insert carrying the request had an unknown
	// outcome, so it may be stored. Owned by the writer goroutine.
	maybeStored bool
	once        sync.Once
	done        chan struct{}
	uid         protocol.UID
	err         error
}

func (r *pubReq) finish(uid protocol.UID, err error) {
	r.once.Do(func() {
		r.uid, r.err = uid, err
		close(r.done)
	})
}

// withdraw takes back a request that never left the process; it reports
// false once the request is (or was) on the wire.
func (r *pubReq) withdraw() bool { return r.state.CompareAndSwap(reqQueued, reqGone) }

// keyed reports whether the request has an idempotency key.
func (r *pubReq) keyed() bool { return !strings.HasPrefix(r.doc.Key, "#") }

// renew gives the request a new _id (and, without an idempotency key, a
// new key), so that a copy stored in a dead epoch is never taken for it.
func (r *pubReq) renew() {
	r.doc.ID = bson.NewObjectID()
	if !r.keyed() {
		r.doc.Key = "#" + r.doc.ID.Hex()
	}
}

// dropGone drops the requests Publish withdrew or gave up on.
func dropGone(reqs []*pubReq) []*pubReq {
	live := reqs[:0]
	for _, r := range reqs {
		if r.state.Load() != reqGone && !r.abandoned.Load() {
			live = append(live, r)
		}
	}
	return live
}

// claim marks the requests as being sent, right before their insert,
// dropping those Publish withdrew.
func claim(reqs []*pubReq) []*pubReq {
	live := reqs[:0]
	for _, r := range reqs {
		if r.state.CompareAndSwap(reqQueued, reqSending) || r.state.Load() == reqSending {
			live = append(live, r)
		}
	}
	return live
}

// release lets Publish withdraw the requests that are surely not stored,
// between two attempts.
func release(reqs []*pubReq) {
	for _, r := range reqs {
		if !r.maybeStored {
			r.state.CompareAndSwap(reqSending, reqQueued)
		}
	}
}

// newPubReq builds the document of one Publish call.
func newPubReq(ch, topic string, msg json.RawMessage, key string) *pubReq {
	id := bson.NewObjectID()
	if key == "" {
		key = "#" + id.Hex()
	} else {
		key = "k:" + key
	}
	if len(msg) == 0 {
		msg = json.RawMessage("null")
	}
	return &pubReq{
		doc:  pubDoc{ID: id, V: formatVersion, Ch: ch, Topic: topic, Msg: string(msg), Key: key},
		done: make(chan struct{}),
	}
}
