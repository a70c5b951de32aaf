package mongoredis

import (
	"context"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/sss-go/sss/scaler"
)

// The log's writes (publications, trimming) and the batched queries of
// the streams' checks.

// insert stores docs with one ordered insertMany; its error is read by
// insertOutcome (writer.go).
func (l *mlog) insert(ctx context.Context, docs []*pubDoc) error {
	batch := make([]any, len(docs))
	for i, d := range docs {
		batch[i] = d
	}
	_, err := l.pubs.InsertMany(ctx, batch, options.InsertMany().SetOrdered(true))
	return err
}

// collisions returns the publications that can make an insert of
// document id with key at (ch, ep, seq) fail with a duplicate key error:
// the document itself, the holder of its key and the holder of its seq.
func (l *mlog) collisions(ctx context.Context, ch string, id bson.ObjectID, key, ep string, seq uint64) ([]pubDoc, error) {
	return l.find(ctx, bson.D{{Key: "$or", Value: bson.A{
		bson.D{{Key: "_id", Value: id}},
		bson.D{{Key: "ch", Value: ch}, {Key: "ik", Value: key}},
		append(chanEp(ch, ep), bson.E{Key: "seq", Value: int64(seq)}),
	}}}, options.Find())
}

// deleteIDs removes the publications with these _ids.
func (l *mlog) deleteIDs(ctx context.Context, ids ...bson.ObjectID) error {
	if _, err := l.pubs.DeleteMany(ctx, bson.D{{Key: "_id", Value: bson.D{{Key: "$in", Value: ids}}}}); err != nil {
		return unavailable("delete publications", err)
	}
	return nil
}

// floorUpdate is the update that raises the trim floor of (ch, ep) to
// floor.
func floorUpdate(ch, ep string, floor uint64) (filter, update bson.D) {
	return bson.D{{Key: "_id", Value: ch}, {Key: "ep", Value: ep}},
		bson.D{{Key: "$max", Value: bson.D{{Key: "floor", Value: int64(floor)}}}}
}

// upToFilter selects the publications of (ch, ep) with seq <= upTo.
func upToFilter(ch, ep string, upTo uint64) bson.D {
	return append(chanEp(ch, ep), bson.E{Key: "seq", Value: bson.D{{Key: "$lte", Value: int64(upTo)}}})
}

// otherEpochsFilter selects the publications of ch left from epochs other
// than ep.
func otherEpochsFilter(ch, ep string) bson.D {
	return bson.D{{Key: "ch", Value: ch}, {Key: "ep", Value: bson.D{{Key: "$ne", Value: ep}}}}
}

// deleteUpTo removes the publications of (ch, ep) with seq <= upTo, after
// raising the floor (so that a reader that misses a deleted seq finds it
// covered).
func (l *mlog) deleteUpTo(ctx context.Context, ch, ep string, upTo uint64) (int64, error) {
	filter, update := floorUpdate(ch, ep, upTo)
	if _, err := l.chans.UpdateOne(ctx, filter, update); err != nil {
		return 0, unavailable("trim", err)
	}
	res, err := l.pubs.DeleteMany(ctx, upToFilter(ch, ep, upTo))
	if err != nil {
		return 0, unavailable("trim", err)
	}
	return res.DeletedCount, nil
}

// deleteOtherEpochs removes publications of ch left from older epochs.
func (l *mlog) deleteOtherEpochs(ctx context.Context, ch, ep string) (int64, error) {
	res, err := l.pubs.DeleteMany(ctx, otherEpochsFilter(ch, ep))
	if err != nil {
		return 0, unavailable("trim", err)
	}
	return res.DeletedCount, nil
}

// trimPlan is what a trim round does to one channel.
type trimPlan struct {
	c    chanDoc
	upTo uint64 // trim every seq up to it (0: nothing)
}

// planTrim finds how far retention r trims channel c, with at most two
// reads: the seq that retention by count keeps last, and the newest seq
// older than retention by age.
func (l *mlog) planTrim(ctx context.Context, c chanDoc, r scaler.Retention) (trimPlan, error) {
	p := trimPlan{c: c}
	base := chanEp(c.Ch, c.Epoch)
	if r.MaxCount != 0 {
		// The newest seq beyond the MaxCount newest ones.
		seq, err := l.firstSeq(ctx, base, options.FindOne().SetSort(newestFirst).SetProjection(seqOnly).SetSkip(int64(max(r.MaxCount, 0))))
		if err != nil {
			return p, err
		}
		p.upTo = seq
	}
	if r.MaxAge > 0 {
		aged := append(base, bson.E{Key: "t", Value: bson.D{{Key: "$lt", Value: time.Now().Add(-r.MaxAge)}}})
		seq, err := l.firstSeq(ctx, aged, options.FindOne().SetSort(newestFirst).SetProjection(seqOnly))
		if err != nil {
			return p, err
		}
		p.upTo = max(p.upTo, seq)
	}
	return p, nil
}

// applyTrim raises the floors of the planned channels in one bulk update,
// then deletes what is below them in one bulk delete (and, with orphans,
// what older epochs left behind).
func (l *mlog) applyTrim(ctx context.Context, plans []trimPlan, orphans bool) error {
	var floors, dels []mongo.WriteModel
	for _, p := range plans {
		c := p.c
		if p.upTo > uint64(c.Floor) {
			filter, update := floorUpdate(c.Ch, c.Epoch, p.upTo)
			floors = append(floors, mongo.NewUpdateOneModel().SetFilter(filter).SetUpdate(update))
			dels = append(dels, mongo.NewDeleteManyModel().SetFilter(upToFilter(c.Ch, c.Epoch, p.upTo)))
		}
		if orphans {
			dels = append(dels, mongo.NewDeleteManyModel().SetFilter(otherEpochsFilter(c.Ch, c.Epoch)))
		}
	}
	// Floors first: a reader that misses a deleted seq finds it covered.
	if len(floors) > 0 {
		if _, err := l.chans.BulkWrite(ctx, floors, options.BulkWrite().SetOrdered(false)); err != nil {
			return unavailable("trim", err)
		}
	}
	if len(dels) > 0 {
		if _, err := l.pubs.BulkWrite(ctx, dels, options.BulkWrite().SetOrdered(false)); err != nil {
			return unavailable("trim", err)
		}
	}
	return nil
}

// tipQuery asks for the publications of (ch, ep) from seq from on (from
// itself included only when incl).
type tipQuery struct {
	ch, ep string
	from   uint64
	incl   bool
}

// tips returns the channel and seq of the publications the queries ask
// for, in one query.
func (l *mlog) tips(ctx context.Context, qs []tipQuery) ([]chanSeq, error) {
	or := make(bson.A, len(qs))
	for i, q := range qs {
		op := "$gt"
		if q.incl {
			op = "$gte"
		}
		or[i] = append(chanEp(q.ch, q.ep), bson.E{Key: "seq", Value: bson.D{{Key: op, Value: int64(q.from)}}})
	}
	return findAll[chanSeq](ctx, l.pubs, "check channels", bson.D{{Key: "$or", Value: or}}, options.Find().SetProjection(chanSeqOnly))
}
