package mongoredis

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
	"go.mongodb.org/mongo-driver/v2/mongo/readpref"

	"github.com/sss-go/sss/internal/backoff"
	"github.com/sss-go/sss/protocol"
	"github.com/sss-go/sss/scaler"
)

// The durable log lives in two collections:
//
//	<prefix>_pubs:     one document per publication
//	                   {_id, v, ch, ep, seq, tp, m, t, ik}
//	                   unique (ch, ep, seq): assigns sequence numbers
//	                   unique (ch, ik): idempotency keys
//	<prefix>_channels: one document per channel that ever had a
//	                   publication {_id: channel, v, ep, floor}: ep is the
//	                   current epoch, floor the highest seq ever trimmed
//	                   (so a channel whose every publication was trimmed
//	                   keeps its position); and one meta document
//	                   {_id: "", v, secret} per namespace (see epoch.go).
//
// v is the format version (see codec.go). The only atomic primitive
// relied on is the unique index at insert time (FerretDB has no
// transactions and no atomic updates).
//
// mlog is the only place that builds MongoDB queries and updates: the
// writers, streams, trimmer and rollback detection call its methods.

// pubDoc is a stored publication.
type pubDoc struct {
	ID bson.ObjectID `bson:"_id"`
	// V is the format version; 0 (absent) is format 1.
	V     int32     `bson:"v,omitempty"`
	Ch    string    `bson:"ch"`
	Epoch string    `bson:"ep"`
	Seq   int64     `bson:"seq"`
	Topic string    `bson:"tp"`
	Msg   string    `bson:"m"`
	Time  time.Time `bson:"t"`
	// Key is the idempotency key, or "#"+ID for publications without one
	// (so that the unique (ch, ik) index holds for every document).
	Key string `bson:"ik"`
}

// chanDoc is a channel's epoch and trim floor.
type chanDoc struct {
	Ch string `bson:"_id"`
	// V is the format version of the version that created the document
	// or last moved it to a new epoch; 0 (absent) is format 1.
	V     int32  `bson:"v,omitempty"`
	Epoch string `bson:"ep"`
	Floor int64  `bson:"floor"`
}

const (
	indexSeq = "sss_ch_ep_seq"
	indexKey = "sss_ch_ik"
)

// mlog is the MongoDB side of the scaler: the client and the two
// collections. It keeps no state of its own, so it needs no lock.
type mlog struct {
	client *mongo.Client
	own    bool // created by New: disconnected by Close
	pubs   *mongo.Collection
	chans  *mongo.Collection
}

// newLog opens the collections with the write concern of every write and
// the read concern of every read, reading from the primary only (a
// secondary may lag behind what a writer was told is stored).
func newLog(mc *mongo.Client, own bool, o *Options) *mlog {
	co := options.Collection().SetWriteConcern(o.WriteConcern).SetReadConcern(o.ReadConcern).SetReadPreference(readpref.Primary())
	db := mc.Database(o.Database)
	return &mlog{
		client: mc,
		own:    own,
		pubs:   db.Collection(o.CollectionPrefix+"_pubs", co),
		chans:  db.Collection(o.CollectionPrefix+"_channels", co),
	}
}

// ping checks that MongoDB answers (rp nil: the client's read preference).
func (l *mlog) ping(ctx context.Context, rp *readpref.ReadPref) error {
	return l.client.Ping(ctx, rp)
}

// close disconnects the client when New created it.
func (l *mlog) close(ctx context.Context) {
	if l.own {
		_ = l.client.Disconnect(ctx)
	}
}

// noDeadline hides ctx's deadline from the driver (which would send it as
// maxTimeMS) while keeping its cancellation: FerretDB v1 drops the
// connection on a createIndexes that carries maxTimeMS.
type noDeadline struct{ context.Context }

func (noDeadline) Deadline() (time.Time, bool) { return time.Time{}, false }

func (l *mlog) ensureIndexes(ctx context.Context) error {
	models := []mongo.IndexModel{
		{Keys: bson.D{{Key: "ch", Value: 1}, {Key: "ep", Value: 1}, {Key: "seq", Value: 1}},
			Options: options.Index().SetName(indexSeq).SetUnique(true)},
		{Keys: bson.D{{Key: "ch", Value: 1}, {Key: "ik", Value: 1}},
			Options: options.Index().SetName(indexKey).SetUnique(true)},
	}
	var err error
	// FerretDB v1 drops the connection on a createIndexes naming indexes
	// that exist already: create only the missing ones, one at a time.
	for attempt := 0; attempt < 5; attempt++ {
		if err = l.createMissing(ctx, models); err == nil {
			return nil
		}
		if !backoff.Sleep(ctx, retryWait(attempt+2)) {
			break
		}
	}
	return unavailable("create indexes", err)
}

func (l *mlog) createMissing(ctx context.Context, models []mongo.IndexModel) error {
	specs, err := l.pubs.Indexes().ListSpecifications(noDeadline{ctx})
	if err != nil {
		return err
	}
	have := make(map[string]bool, len(specs))
	for _, sp := range specs {
		have[sp.Name] = true
	}
	for i, m := range models {
		if name := [...]string{indexSeq, indexKey}[i]; !have[name] {
			if _, err := l.pubs.Indexes().CreateOne(noDeadline{ctx}, m); err != nil {
				return err
			}
		}
	}
	return nil
}

// chanEp is the filter of the publications of (ch, ep).
func chanEp(ch, ep string) bson.D { return bson.D{{Key: "ch", Value: ch}, {Key: "ep", Value: ep}} }

// seqOnly projects a publication to its seq; chanSeqOnly to its channel
// and seq.
var (
	seqOnly     = bson.D{{Key: "seq", Value: 1}}
	chanSeqOnly = bson.D{{Key: "ch", Value: 1}, {Key: "seq", Value: 1}}
)

// newestFirst sorts publications by descending seq.
var newestFirst = bson.D{{Key: "seq", Value: -1}}

// maxSeq returns the highest stored seq of (ch, ep), 0 if none.
func (l *mlog) maxSeq(ctx context.Context, ch, ep string) (uint64, error) {
	return l.firstSeq(ctx, chanEp(ch, ep), options.FindOne().SetSort(newestFirst).SetProjection(seqOnly))
}

// firstSeq returns the seq of the first publication matching filter as
// opts sorts them, 0 if none.
func (l *mlog) firstSeq(ctx context.Context, filter bson.D, opts *options.FindOneOptionsBuilder) (uint64, error) {
	var d chanSeq
	err := l.pubs.FindOne(ctx, filter, opts).Decode(&d)
	if errors.Is(err, mongo.ErrNoDocuments) {
		return 0, nil
	}
	if err != nil {
		return 0, unavailable("read log", err)
	}
	if d.Seq < 0 {
		return 0, malformed(fmt.Sprintf("channel %q", d.Ch), "negative seq")
	}
	return uint64(d.Seq), nil
}

// position returns the channel's position (highest seq stored or
// trimmed). A channel without a document has never had a publication: its
// position is "<default epoch>.0" and its log is empty (the first publish
// creates the document before anything is inserted).
func (l *mlog) position(ctx context.Context, ch string) (protocol.UID, error) {
	_, pos, err := l.tip(ctx, ch)
	return pos, err
}

// tip returns the channel's document (or default) and position. The trim
// floor is read after the highest seq: the trimmer raises the floor
// before it deletes, so a seq that vanished meanwhile is covered by it.
func (l *mlog) tip(ctx context.Context, ch string) (chanInfo, protocol.UID, error) {
	info, err := l.lookup(ctx, ch)
	for attempt := 0; err == nil && info.found; attempt++ {
		var m uint64
		if m, err = l.maxSeq(ctx, ch, info.doc.Epoch); err != nil {
			break
		}
		var after chanInfo
		if after, err = l.lookup(ctx, ch); err != nil {
			break
		}
		if after.doc.Epoch == info.doc.Epoch || attempt == 3 {
			return after, protocol.UID{Epoch: after.doc.Epoch, Seq: max(m, uint64(after.doc.Floor))}, nil
		}
		info = after // the epoch moved: read the new one's tip
	}
	if err != nil {
		return chanInfo{}, protocol.UID{}, err
	}
	return info, protocol.UID{Epoch: info.doc.Epoch}, nil
}

// readRange returns the stored publications of (ch, ep) with after < seq
// (and seq < before when before > 0), ascending, at most limit (<= 0: all).
func (l *mlog) readRange(ctx context.Context, ch, ep string, after, before uint64, limit int) ([]pubDoc, error) {
	seq := bson.D{{Key: "$gt", Value: int64(after)}}
	if before > 0 {
		seq = append(seq, bson.E{Key: "$lt", Value: int64(before)})
	}
	opts := options.Find().SetSort(bson.D{{Key: "seq", Value: 1}})
	if limit > 0 {
		opts.SetLimit(int64(limit))
	}
	return l.find(ctx, append(chanEp(ch, ep), bson.E{Key: "seq", Value: seq}), opts)
}

// newest returns the limit newest publications of (ch, ep), descending.
func (l *mlog) newest(ctx context.Context, ch, ep string, limit int) ([]pubDoc, error) {
	opts := options.Find().SetSort(newestFirst)
	if limit > 0 {
		opts.SetLimit(int64(limit))
	}
	return l.find(ctx, chanEp(ch, ep), opts)
}

// findAll returns every document of coll matching filter, decoded as T;
// its errors say what it read.
func findAll[T any](ctx context.Context, coll *mongo.Collection, what string, filter bson.D, opts *options.FindOptionsBuilder) ([]T, error) {
	cur, err := coll.Find(ctx, filter, opts)
	if err != nil {
		return nil, unavailable(what, err)
	}
	var docs []T
	if err := cur.All(ctx, &docs); err != nil {
		return nil, unavailable(what, err)
	}
	return docs, nil
}

// find returns the publications matching filter (those with a valid seq).
func (l *mlog) find(ctx context.Context, filter bson.D, opts *options.FindOptionsBuilder) ([]pubDoc, error) {
	docs, err := findAll[pubDoc](ctx, l.pubs, "read log", filter, opts)
	if err != nil {
		return nil, err
	}
	out := docs[:0]
	for _, d := range docs {
		if d.Seq > 0 {
			out = append(out, d)
		}
	}
	return out, nil
}

// publication converts a stored document.
func (d *pubDoc) publication() scaler.Publication {
	msg := json.RawMessage(d.Msg)
	if !json.Valid(msg) {
		msg = json.RawMessage("null")
	}
	return scaler.Publication{
		Channel: d.Ch,
		UID:     protocol.UID{Epoch: d.Epoch, Seq: uint64(d.Seq)},
		Topic:   d.Topic,
		Msg:     msg,
		Time:    d.Time,
	}
}

// chanSeq is a publication's channel and seq.
type chanSeq struct {
	Ch  string `bson:"ch"`
	Seq int64  `bson:"seq"`
}
