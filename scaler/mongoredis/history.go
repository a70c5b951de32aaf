package mongoredis

import (
	"context"
	"fmt"
	"time"

	"github.com/sss-go/sss/protocol"
	"github.com/sss-go/sss/scaler"
)

// Since returns the publications of channel after `after`, read from the
// log.
func (s *Scaler) Since(ctx context.Context, channel string, after protocol.UID, limit int) ([]scaler.Publication, error) {
	op := fmt.Sprintf("since %q %s", channel, after)
	if s.isClosed() {
		return nil, closedError(op)
	}
	out, err := s.since(ctx, channel, after, limit)
	if err != nil {
		return nil, opError(op, err)
	}
	return out, nil
}

func (s *Scaler) since(ctx context.Context, channel string, after protocol.UID, limit int) ([]scaler.Publication, error) {
	info, err := s.mlog.lookup(ctx, channel)
	if err != nil {
		return nil, err
	}
	d := info.doc
	switch {
	case d.Epoch != after.Epoch:
		return nil, scaler.ErrEpochChanged
	case !info.found && after.Seq > 0:
		return nil, scaler.ErrFuture // never published: position 0
	case !info.found:
		return []scaler.Publication{}, nil
	case after.Seq < uint64(d.Floor):
		return nil, scaler.ErrTrimmed
	}
	docs, err := s.mlog.readRange(ctx, channel, d.Epoch, after.Seq, 0, limit)
	if err != nil {
		return nil, err
	}
	if len(docs) == 0 {
		return s.sinceNothing(ctx, d, after)
	}
	if uint64(docs[0].Seq) != after.Seq+1 {
		return nil, scaler.ErrTrimmed
	}
	r := s.opts.retention(channel)
	if r.MaxCount < 0 || r.MaxAge > 0 && time.Since(docs[0].Time) > r.MaxAge {
		return nil, scaler.ErrTrimmed
	}
	out := make([]scaler.Publication, 0, len(docs))
	for i := range docs {
		if uint64(docs[i].Seq) != after.Seq+uint64(i)+1 {
			break // never skip: the caller gets a shorter prefix
		}
		out = append(out, docs[i].publication())
	}
	return out, nil
}

// sinceNothing tells, when the log holds nothing after `after` in d's
// epoch, whether after is the position (nothing to return), beyond it or
// trimmed.
func (s *Scaler) sinceNothing(ctx context.Context, d chanDoc, after protocol.UID) ([]scaler.Publication, error) {
	m, err := s.mlog.maxSeq(ctx, d.Ch, d.Epoch)
	if err != nil {
		return nil, err
	}
	pos := max(m, uint64(d.Floor))
	switch {
	case after.Seq > pos:
		return nil, scaler.ErrFuture
	case after.Seq < pos:
		return nil, scaler.ErrTrimmed
	}
	return []scaler.Publication{}, nil
}

// History returns up to limit of the newest kept publications, oldest
// first.
func (s *Scaler) History(ctx context.Context, channel string, limit int) ([]scaler.Publication, error) {
	op := fmt.Sprintf("history %q", channel)
	if s.isClosed() {
		return nil, closedError(op)
	}
	info, err := s.mlog.lookup(ctx, channel)
	if err != nil {
		return nil, opError(op, err)
	}
	out := []scaler.Publication{}
	r := s.opts.retention(channel)
	if !info.found || r.MaxCount < 0 {
		return out, nil
	}
	if r.MaxCount > 0 && (limit <= 0 || limit > r.MaxCount) {
		limit = r.MaxCount
	}
	docs, err := s.mlog.newest(ctx, channel, info.doc.Epoch, limit)
	if err != nil {
		return nil, opError(op, err)
	}
	n := 0
	for i := range docs {
		if i > 0 && docs[i].Seq != docs[i-1].Seq-1 {
			break
		}
		if r.MaxAge > 0 && time.Since(docs[i].Time) > r.MaxAge {
			break
		}
		n++
	}
	for i := n - 1; i >= 0; i-- {
		out = append(out, docs[i].publication())
	}
	return out, nil
}
