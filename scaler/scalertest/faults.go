package scalertest

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/sss-go/sss/protocol"
	"github.com/sss-go/sss/scaler"
)

// checkStreamResets is checkStream for streams that may legitimately
// contain resets: every publication is the next one of the current epoch,
// a reset (with an error satisfying ErrNotRecoverable) may only move the
// stream forward or into a new epoch, and the stream ends at last. It
// returns the resets seen.
func checkStreamResets(t *testing.T, who string, es []entry, after, last protocol.UID) []entry {
	t.Helper()
	cur := after
	var (
		resets   []entry
		problems []string
	)
	for i, e := range es {
		if len(problems) >= 5 {
			problems = append(problems, "...")
			break
		}
		if e.reset {
			resets = append(resets, e)
			switch {
			case !errors.Is(e.err, scaler.ErrNotRecoverable):
				problems = append(problems, fmt.Sprintf("entry %d: reset error %v does not satisfy ErrNotRecoverable", i, e.err))
			case e.pos.Epoch == cur.Epoch && e.pos.Seq < cur.Seq:
				problems = append(problems, fmt.Sprintf("entry %d: reset back from %v to %v", i, cur, e.pos))
			}
			cur = e.pos
			continue
		}
		if e.pub.UID != cur.Next() {
			problems = append(problems, fmt.Sprintf("entry %d: got %v, want %v", i, e.pub.UID, cur.Next()))
		}
		cur = e.pub.UID
	}
	if len(problems) == 0 && cur != last {
		problems = append(problems, fmt.Sprintf("stream ends at %v, want %v", cur, last))
	}
	if len(problems) > 0 {
		t.Errorf("%s: stream after %v to %v has a silent gap, a duplicate or a disorder (%d entries):\n  %s",
			who, after, last, len(es), strings.Join(problems, "\n  "))
	}
	return resets
}

func testDroppedRelay(t *testing.T, f Factory) {
	for _, tc := range []struct {
		name      string
		pre, post int
	}{
		{"first", 0, 10},
		{"middle", 5, 10},
		{"last", 5, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ns := nodes(t, f, 2)
			a, b := ns[0], ns[1]
			fi := injector(t, b)
			ch := "drop-" + tc.name
			a.subscribe(t, ch)
			pos := b.subscribe(t, ch)
			if tc.pre > 0 {
				u := a.publishN(t, ch, tc.pre)
				b.r.waitSeq(t, b.name, ch, u[len(u)-1])
			}
			fi.DropNextRelay(ch)
			u := a.publishN(t, ch, tc.post)
			// For "last" nothing later reveals the loss: only B's own
			// checks can find it.
			b.r.waitSeq(t, b.name, ch, u[len(u)-1])
			last := fence(t, a, ch, a, b)
			checkStream(t, "A", a.r.stream(ch), pos, last)
			checkStream(t, "B (one relay dropped)", b.r.stream(ch), pos, last)
		})
	}
}

func testDelayedRelay(t *testing.T, f Factory) {
	const delay = 300 * time.Millisecond
	for _, tc := range []struct {
		name string
		n    int
	}{
		{"overtaken", 10},
		{"alone", 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ns := nodes(t, f, 2)
			a, b := ns[0], ns[1]
			fi := injector(t, b)
			ch := "delay-" + tc.name
			pos := b.subscribe(t, ch)
			fi.DelayNextRelay(ch, delay)
			started := time.Now()
			u := a.publishN(t, ch, tc.n)
			b.r.waitSeq(t, b.name, ch, u[len(u)-1])
			// The delayed relay is late by design: let it arrive before
			// the fence, so a duplicate delivery of it would show.
			if rest := delay + 100*time.Millisecond - time.Since(started); rest > 0 {
				timer := time.NewTimer(rest)
				<-timer.C
			}
			last := fence(t, a, ch, b)
			checkStream(t, "B (one relay delayed)", b.r.stream(ch), pos, last)
		})
	}
}

func testTrimmed(t *testing.T, f Factory) {
	const ch = "trim"
	ns := nodes(t, f, 2)
	a, b := ns[0], ns[1]
	fa, fb := injector(t, a), injector(t, b)
	pos := b.subscribe(t, ch)
	u := a.publishN(t, ch, 20)
	b.r.waitSeq(t, b.name, ch, u[19])
	if err := fa.Trim(ctx(t), ch, 10); err != nil {
		t.Fatal(err)
	}
	for _, from := range []uint64{0, 5, 9} {
		after := protocol.UID{Epoch: pos.Epoch, Seq: from}
		got, err := b.s.Since(ctx(t), ch, after, 0)
		if !errors.Is(err, scaler.ErrTrimmed) || !errors.Is(err, scaler.ErrNotRecoverable) {
			t.Fatalf("Since(%v) after Trim(10) = %d publications, %v; want ErrTrimmed", after, len(got), err)
		}
	}
	got, err := b.s.Since(ctx(t), ch, u[9], 0)
	if err != nil || len(got) != 10 || got[0].UID != u[10] {
		t.Fatalf("Since(%v) after Trim(10) = %d publications, %v; want 11..20", u[9], len(got), err)
	}
	if b.hr != nil {
		h, err := b.hr.History(ctx(t), ch, 0)
		if err != nil || len(h) != 10 || h[0].UID != u[10] || h[9].UID != u[19] {
			t.Fatalf("History after Trim(10) = %d publications, %v; want 11..20", len(h), err)
		}
	}

	// A stream that misses a publication which is then trimmed must say
	// so with Reset, never skip it silently.
	fb.DropNextRelay(ch)
	u21 := a.publish(t, ch, `{"n":21}`)
	if err := fa.Trim(ctx(t), ch, u21.Seq); err != nil {
		t.Fatal(err)
	}
	u22 := a.publish(t, ch, `{"n":22}`)
	b.r.waitSeq(t, b.name, ch, u22)
	last := fence(t, a, ch, b)
	resets := checkStreamResets(t, "B", b.r.stream(ch), pos, last)
	for _, r := range resets {
		if !errors.Is(r.err, scaler.ErrTrimmed) {
			t.Errorf("reset over trimmed history carries %v, want ErrTrimmed", r.err)
		}
	}
}

func testHistoryReset(t *testing.T, f Factory) {
	const ch = "reset"
	ns := nodes(t, f, 2)
	a, b := ns[0], ns[1]
	fa := injector(t, a)
	pos := a.subscribe(t, ch)
	b.subscribe(t, ch)
	u := a.publishN(t, ch, 5)
	for _, nd := range ns {
		nd.r.waitSeq(t, nd.name, ch, u[4])
	}
	if err := fa.ResetHistory(ctx(t), ch); err != nil {
		t.Fatal(err)
	}
	p2, err := b.s.Position(ctx(t), ch)
	if err != nil || p2.Epoch == pos.Epoch || p2.Seq != 0 || !protocol.ValidEpoch(p2.Epoch) {
		t.Fatalf("Position after ResetHistory = %v, %v; want <new epoch>.0 (old epoch %s)", p2, err, pos.Epoch)
	}
	if got, err := b.s.Since(ctx(t), ch, u[2], 0); !errors.Is(err, scaler.ErrEpochChanged) || !errors.Is(err, scaler.ErrNotRecoverable) {
		t.Fatalf("Since(old uid) = %d publications, %v; want ErrEpochChanged", len(got), err)
	}
	if got, err := b.s.Since(ctx(t), ch, p2, 0); err != nil || len(got) != 0 {
		t.Fatalf("Since(new position) = %d publications, %v; want none", len(got), err)
	}
	if b.hr == nil {
		// Nothing to read.
	} else if h, err := b.hr.History(ctx(t), ch, 0); err != nil || len(h) != 0 {
		t.Fatalf("History after ResetHistory = %d publications, %v; want none", len(h), err)
	}
	v := a.publishN(t, ch, 3)
	if v[0] != p2.Next() || v[2].Seq != 3 {
		t.Fatalf("publications after the reset got %v..%v, want %v..", v[0], v[2], p2.Next())
	}
	last := fence(t, b, ch, a, b)
	for _, nd := range ns {
		resets := checkStreamResets(t, nd.name, nd.r.stream(ch), pos, last)
		if len(resets) == 0 {
			t.Errorf("%s: stream went into the new epoch without a Reset", nd.name)
		}
		for _, r := range resets {
			if !errors.Is(r.err, scaler.ErrEpochChanged) || r.pos.Epoch != p2.Epoch {
				t.Errorf("%s: reset to %v with %v, want the new epoch %s and ErrEpochChanged", nd.name, r.pos, r.err, p2.Epoch)
			}
		}
	}
}

func testLeaseExpiry(t *testing.T, f Factory) {
	const ch = "lease"
	ns := nodes(t, f, 2)
	require(t, ns, capPresence, capUsers)
	a, b := ns[0], ns[1]
	fa := injector(t, a)
	for _, j := range []struct {
		nd *node
		id string
	}{{a, "a1"}, {b, "b1"}} {
		if err := j.nd.ps.Join(ctx(t), ch, scaler.Member{ID: j.id}); err != nil {
			t.Fatal(err)
		}
		if err := j.nd.ur.AddUser(ctx(t), "u"+j.id); err != nil {
			t.Fatal(err)
		}
	}
	pollUntil(t, "both members", func() string { return expectPresence(t, ns, ch, "a1", "b1") })
	fa.PauseLease()
	pollUntil(t, "A's entries to vanish for B after its lease ends", func() string {
		if msg := expectPresence(t, ns[1:], ch, "b1"); msg != "" {
			return msg
		}
		return expectUsers(t, ns[1:], "ua1")
	})
	if msg := expectUsers(t, ns[1:], "ub1", b.id()); msg != "" {
		t.Fatalf("B's own user entry: %s", msg)
	}
	fa.ResumeLease()
	pollUntil(t, "A's entries to come back", func() string {
		if msg := expectPresence(t, ns, ch, "a1", "b1"); msg != "" {
			return msg
		}
		return expectUsers(t, ns, "ua1", a.id())
	})
	a.r.wait(t, "A to report EventLeaseLost", func() bool {
		for _, e := range a.r.events {
			if e.Kind == scaler.EventLeaseLost {
				return true
			}
		}
		return false
	})
}
