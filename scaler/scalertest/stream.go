package scalertest

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/sss-go/sss/protocol"
	"github.com/sss-go/sss/scaler"
)

func testSubscribe(t *testing.T, f Factory) {
	ns := nodes(t, f, 2)
	a, b := ns[0], ns[1]
	if (a.cp != nil || a.ur != nil) && (a.id() == "" || a.id() == b.id()) {
		t.Errorf("instance ids %q and %q are not distinct and non-empty", a.id(), b.id())
	}
	const ch = "subscribe"
	pos := a.subscribe(t, ch)
	if pos.Seq != 0 || !protocol.ValidEpoch(pos.Epoch) {
		t.Fatalf("empty channel's position = %q, want <epoch>.0", pos)
	}
	if p, err := b.s.Position(ctx(t), ch); err != nil || p != pos {
		t.Fatalf("B's Position = %v, %v; want %v", p, err, pos)
	}
	if p := b.subscribe(t, ch); p != pos {
		t.Fatalf("B's Subscribe = %v, want %v", p, pos)
	}
	u1 := a.publish(t, ch, `{"n":1}`)
	if u1 != pos.Next() {
		t.Fatalf("first publish uid = %v, want %v", u1, pos.Next())
	}
	// Subscribing again changes nothing: same position, no second stream.
	if p := a.subscribe(t, ch); p != u1 {
		t.Fatalf("A's second Subscribe = %v, want the current position %v", p, u1)
	}
	a.publish(t, ch, `{"n":2}`)
	last := fence(t, b, ch, a, b)
	for _, nd := range ns {
		es := nd.r.stream(ch)
		checkStream(t, nd.name, es, pos, last)
		if len(es) > 0 {
			p := es[0].pub
			if p.Channel != ch || p.Topic != "t" || string(p.Msg) != `{"n":1}` || p.Time.IsZero() {
				t.Errorf("%s: first publication = %+v, want channel %q topic t msg {\"n\":1} and a time", nd.name, p, ch)
			}
		}
	}
	if p, err := a.s.Position(ctx(t), ch); err != nil || p != last {
		t.Errorf("Position = %v, %v; want %v", p, err, last)
	}
}

func testOrderedStream(t *testing.T, f Factory) {
	const (
		ch         = "ordered"
		publishers = 16
		each       = 500
	)
	ns := nodes(t, f, 2)
	pos := ns[0].subscribe(t, ch)
	if p := ns[1].subscribe(t, ch); p != pos {
		t.Fatalf("positions differ: %v and %v", pos, p)
	}
	type sent struct{ p, n int }
	var (
		mu    sync.Mutex
		byUID = make(map[protocol.UID]sent)
		wg    sync.WaitGroup
		fail  atomic.Value
	)
	for p := range publishers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			nd := ns[p%2]
			var prev protocol.UID
			for n := range each {
				body := fmt.Sprintf(`{"p":%d,"n":%d}`, p, n)
				uid, err := nd.s.Publish(ctx(t), ch, "t", json.RawMessage(body), scaler.PublishOptions{})
				if err != nil {
					fail.CompareAndSwap(nil, fmt.Sprintf("publisher %d: %v", p, err))
					return
				}
				if c, ok := uid.Compare(prev); n > 0 && (!ok || c <= 0) {
					fail.CompareAndSwap(nil, fmt.Sprintf("publisher %d: uid %v after %v", p, uid, prev))
				}
				prev = uid
				mu.Lock()
				if _, dup := byUID[uid]; dup {
					fail.CompareAndSwap(nil, fmt.Sprintf("uid %v returned twice", uid))
				}
				byUID[uid] = sent{p, n}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if v := fail.Load(); v != nil {
		t.Fatal(v)
	}
	last := fence(t, ns[0], ch, ns...)
	if last.Seq != pos.Seq+publishers*each+1 {
		t.Errorf("fence uid %v, want seq %d", last, pos.Seq+publishers*each+1)
	}
	for _, nd := range ns {
		es := nd.r.stream(ch)
		checkStream(t, nd.name, es, pos, last)
		next := make([]int, publishers)
		for _, e := range es {
			if e.reset || e.pub.UID == last {
				continue
			}
			want, ok := byUID[e.pub.UID]
			var got struct{ P, N int }
			if err := json.Unmarshal(e.pub.Msg, &got); err != nil || !ok || got.P != want.p || got.N != want.n {
				t.Fatalf("%s: %v carries %s, but Publish returned that uid for {p:%d n:%d}", nd.name, e.pub.UID, e.pub.Msg, want.p, want.n)
			}
			if got.N != next[got.P] {
				t.Fatalf("%s: publisher %d's message %d delivered where %d was due", nd.name, got.P, got.N, next[got.P])
			}
			next[got.P]++
		}
	}
	// The log agrees with the streams (as far as the scaler's retention
	// keeps it).
	if ns[1].hr == nil {
		return
	}
	kept, err := ns[1].hr.History(ctx(t), ch, 0)
	if err != nil {
		t.Fatalf("History: %v", err)
	}
	if len(kept) == 0 || kept[len(kept)-1].UID != last {
		t.Fatalf("History returned %d publications, want the newest to be %v", len(kept), last)
	}
	es := ns[0].r.stream(ch)
	for _, p := range kept {
		i := int(p.UID.Seq - pos.Seq - 1)
		if p.UID.Epoch != pos.Epoch || i < 0 || i >= len(es) || es[i].pub.UID != p.UID || string(es[i].pub.Msg) != string(p.Msg) {
			t.Fatalf("History has %v %s, which the stream did not deliver at that place", p.UID, p.Msg)
		}
	}
	from := kept[0].UID
	if from.Seq > pos.Seq {
		from.Seq--
	}
	since, err := ns[1].s.Since(ctx(t), ch, from, 0)
	if err != nil || len(since) == 0 || since[len(since)-1].UID != last {
		t.Fatalf("Since(%v) = %d publications, %v; want up to %v", from, len(since), err, last)
	}
}

func testSubscribeRace(t *testing.T, f Factory) {
	const rounds = 4
	ns := nodes(t, f, 2)
	a, b := ns[0], ns[1]
	for round := range rounds {
		ch := fmt.Sprintf("race%d", round)
		var (
			stop  = make(chan struct{})
			wg    sync.WaitGroup
			count atomic.Int64
			fail  atomic.Value
		)
		for range 2 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					select {
					case <-stop:
						return
					default:
					}
					if _, err := a.s.Publish(ctx(t), ch, "t", json.RawMessage(`1`), scaler.PublishOptions{}); err != nil {
						fail.CompareAndSwap(nil, err.Error())
						return
					}
					count.Add(1)
				}
			}()
		}
		// Subscribe while the publishers run (after some publications,
		// so the position is not trivially 0).
		for count.Load() < int64(50*(round+1)) && fail.Load() == nil {
			if _, err := a.s.Position(ctx(t), ch); err != nil {
				t.Fatal(err)
			}
		}
		pos := b.subscribe(t, ch)
		target := count.Load() + 200
		for count.Load() < target && fail.Load() == nil {
			if _, err := a.s.Position(ctx(t), ch); err != nil {
				t.Fatal(err)
			}
		}
		close(stop)
		wg.Wait()
		if v := fail.Load(); v != nil {
			t.Fatal(v)
		}
		last := fence(t, a, ch, b)
		checkStream(t, fmt.Sprintf("B (round %d, subscribed at %v)", round, pos), b.r.stream(ch), pos, last)
	}
}

func testUnsubscribe(t *testing.T, f Factory) {
	ns := nodes(t, f, 2)
	a, b := ns[0], ns[1]
	const ch = "unsub"
	a.subscribe(t, ch)
	pos := b.subscribe(t, ch)
	u := a.publishN(t, ch, 3)
	b.r.waitSeq(t, b.name, ch, u[2])
	checkStream(t, "B before Unsubscribe", b.r.stream(ch), pos, u[2])
	if err := b.s.Unsubscribe(ctx(t), ch); err != nil {
		t.Fatal(err)
	}
	if err := b.s.Unsubscribe(ctx(t), "never-subscribed"); err != nil {
		t.Fatalf("Unsubscribe of a channel not held: %v", err)
	}
	after := a.publishN(t, ch, 5)
	// A is subscribed: once A has them all, a relay to B would have had
	// every chance to arrive before the fence from B's point of view too.
	fence(t, a, ch, a)
	if es := b.r.stream(ch); len(es) != 3 {
		t.Fatalf("B's stream has %d entries after Unsubscribe returned, want the 3 before it: %+v", len(es), es)
	}
	// B re-subscribes: its new stream starts after the new position, and
	// a fence seen by B proves any stale relay of the unsubscribed ones
	// has been processed.
	pos2 := b.subscribe(t, ch)
	last := fence(t, a, ch, b)
	es := b.r.stream(ch)
	for _, e := range es {
		if !e.reset && e.pub.UID.Seq >= after[0].Seq && e.pub.UID.Seq <= pos2.Seq {
			t.Fatalf("B got %v, published after its Unsubscribe returned", e.pub.UID)
		}
	}
	checkStream(t, "B after re-subscribe", es[3:], pos2, last)
}

func testSince(t *testing.T, f Factory) {
	const (
		ch = "since"
		n  = 200
	)
	ns := nodes(t, f, 2)
	a, b := ns[0], ns[1]
	pos, err := b.s.Position(ctx(t), ch)
	if err != nil {
		t.Fatal(err)
	}
	empty, err := b.s.Since(ctx(t), ch, pos, 0)
	if err != nil || len(empty) != 0 {
		t.Fatalf("Since(position of an empty channel) = %d publications, %v; want none", len(empty), err)
	}
	uids := a.publishN(t, ch, n)
	for i, u := range uids {
		if u.Epoch != pos.Epoch || u.Seq != uint64(i+1) {
			t.Fatalf("publication %d got uid %v", i+1, u)
		}
	}
	for from := uint64(0); from <= n; from++ {
		after := protocol.UID{Epoch: pos.Epoch, Seq: from}
		got, err := b.s.Since(ctx(t), ch, after, 0)
		if err != nil {
			t.Fatalf("Since(%v): %v", after, err)
		}
		if len(got) != int(n-from) {
			t.Fatalf("Since(%v) returned %d publications, want %d", after, len(got), n-from)
		}
		for i, p := range got {
			want := from + uint64(i) + 1
			if p.UID.Seq != want || p.UID.Epoch != pos.Epoch || p.Channel != ch || string(p.Msg) != fmt.Sprintf(`{"n":%d}`, want) {
				t.Fatalf("Since(%v)[%d] = %v %s, want seq %d", after, i, p.UID, p.Msg, want)
			}
		}
	}
	limited, err := b.s.Since(ctx(t), ch, protocol.UID{Epoch: pos.Epoch, Seq: 10}, 7)
	if err != nil || len(limited) != 7 || limited[0].UID.Seq != 11 || limited[6].UID.Seq != 17 {
		t.Fatalf("Since(10, limit 7) = %d publications, %v; want 11..17", len(limited), err)
	}
	for _, tc := range []struct {
		name  string
		after protocol.UID
		want  error
	}{
		{"future", protocol.UID{Epoch: pos.Epoch, Seq: n + 1}, scaler.ErrFuture},
		{"other epoch", protocol.UID{Epoch: otherEpoch(pos.Epoch), Seq: 1}, scaler.ErrEpochChanged},
		{"other epoch at 0", protocol.UID{Epoch: otherEpoch(pos.Epoch), Seq: 0}, scaler.ErrEpochChanged},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := b.s.Since(ctx(t), ch, tc.after, 0)
			if !errors.Is(err, tc.want) || !errors.Is(err, scaler.ErrNotRecoverable) {
				t.Fatalf("Since(%v) = %d publications, %v; want %v (not recoverable)", tc.after, len(got), err, tc.want)
			}
			if !strings.Contains(err.Error(), ch) {
				t.Errorf("error %q does not name the channel %q", err, ch)
			}
		})
	}
}

// otherEpoch returns a valid epoch different from e.
func otherEpoch(e string) string {
	if e == "zzzzzzzz" {
		return "yyyyyyyy"
	}
	return "zzzzzzzz"
}

func testHistory(t *testing.T, f Factory) {
	const ch = "history"
	ns := nodes(t, f, 2)
	require(t, ns, capHistory)
	a, b := ns[0], ns[1]
	if h, err := b.hr.History(ctx(t), ch, 10); err != nil || len(h) != 0 {
		t.Fatalf("History of an empty channel = %d, %v", len(h), err)
	}
	uids := a.publishN(t, ch, 50)
	for _, tc := range []struct {
		name        string
		limit       int
		first, last uint64
	}{
		{"newest 10", 10, 41, 50},
		{"newest 1", 1, 50, 50},
		{"more than kept", 1000, 1, 50},
		{"all", 0, 1, 50},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, err := b.hr.History(ctx(t), ch, tc.limit)
			if err != nil {
				t.Fatal(err)
			}
			if want := int(tc.last - tc.first + 1); len(h) != want {
				t.Fatalf("History(%d) returned %d, want %d", tc.limit, len(h), want)
			}
			for i, p := range h {
				want := tc.first + uint64(i)
				if p.UID != (protocol.UID{Epoch: uids[0].Epoch, Seq: want}) || string(p.Msg) != fmt.Sprintf(`{"n":%d}`, want) {
					t.Fatalf("History(%d)[%d] = %v %s, want seq %d", tc.limit, i, p.UID, p.Msg, want)
				}
			}
		})
	}
}

func testIdempotency(t *testing.T, f Factory) {
	const ch = "idem"
	ns := nodes(t, f, 2)
	a, b := ns[0], ns[1]
	pub := func(nd *node, ch, key, body string) protocol.UID {
		t.Helper()
		uid, err := nd.s.Publish(ctx(t), ch, "t", json.RawMessage(body), scaler.PublishOptions{IdempotencyKey: key})
		if err != nil {
			t.Fatal(err)
		}
		return uid
	}
	u1 := pub(a, ch, "k1", `1`)
	if u := pub(a, ch, "k1", `1`); u != u1 {
		t.Errorf("retry on the same instance returned %v, want %v", u, u1)
	}
	if u := pub(b, ch, "k1", `1`); u != u1 {
		t.Errorf("retry on another instance returned %v, want %v", u, u1)
	}
	u2 := pub(a, ch, "k2", `2`)
	if u2 == u1 {
		t.Errorf("another key returned the same uid %v", u2)
	}
	if u := pub(a, "idem-other", "k1", `1`); u.Seq != 1 {
		t.Errorf("the same key on another channel returned %v, want seq 1 of that channel", u)
	}
	h, err := b.s.Since(ctx(t), ch, protocol.UID{Epoch: u1.Epoch}, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(h) != 2 || h[0].UID != u1 || h[1].UID != u2 {
		t.Fatalf("Since(%s.0) after retries = %d publications, want exactly %v and %v", u1.Epoch, len(h), u1, u2)
	}
}
