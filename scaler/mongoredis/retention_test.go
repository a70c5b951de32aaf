package mongoredis

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/sss-go/sss/internal/testutil"
	"github.com/sss-go/sss/protocol"
	"github.com/sss-go/sss/scaler"
)

// TestRetention: the periodic trimmer applies retention by count and by
// age per channel; trimmed history is reported as ErrTrimmed and the
// channel keeps its position.
func TestRetention(t *testing.T) {
	rd := testutil.StartRedis(t)
	mg := testutil.SharedMongo(t)
	env := newEnv(t, rd.URL, mg.URI)
	s := env.newScaler(t, func(o *Options) {
		o.TrimInterval = 200 * time.Millisecond
		o.Retention = func(ch string) scaler.Retention {
			switch ch {
			case "count":
				return scaler.Retention{MaxCount: 10}
			case "age":
				return scaler.Retention{MaxAge: 300 * time.Millisecond}
			}
			return scaler.Retention{}
		}
	})
	r := startScaler(t, s)
	ctx := context.Background()
	for _, tc := range []struct {
		ch       string
		wantKept int
	}{
		{"count", 10},
		{"age", 0},
	} {
		t.Run(tc.ch, func(t *testing.T) {
			var uids []protocol.UID
			for i := range 25 {
				u, err := s.Publish(ctx, tc.ch, "t", json.RawMessage(`1`), scaler.PublishOptions{})
				if err != nil {
					t.Fatalf("publish %d: %v", i, err)
				}
				uids = append(uids, u)
			}
			last := uids[len(uids)-1]
			r.waitFor(t, 30*time.Second, "the trimmer to trim "+tc.ch, func() bool {
				h, err := s.History(ctx, tc.ch, 0)
				return err == nil && len(h) == tc.wantKept && countTrimmed(r, tc.ch) >= 25-tc.wantKept
			})
			if _, err := s.Since(ctx, tc.ch, protocol.UID{Epoch: last.Epoch}, 0); !errors.Is(err, scaler.ErrTrimmed) {
				t.Fatalf("Since(0) after trimming = %v, want ErrTrimmed", err)
			}
			if pos, err := s.Position(ctx, tc.ch); err != nil || pos != last {
				t.Fatalf("Position after trimming = %v, %v; want %v", pos, err, last)
			}
			if got, err := s.Since(ctx, tc.ch, last, 0); err != nil || len(got) != 0 {
				t.Fatalf("Since(last) = %d publications, %v; want none", len(got), err)
			}
			u, err := s.Publish(ctx, tc.ch, "t", json.RawMessage(`2`), scaler.PublishOptions{})
			if err != nil || u != last.Next() {
				t.Fatalf("publish after trimming = %v, %v; want %v", u, err, last.Next())
			}
		})
	}
}

func countTrimmed(r *recorder, ch string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, e := range r.events {
		if e.Kind == scaler.EventTrimmed && e.Channel == ch {
			n += e.Count
		}
	}
	return n
}
