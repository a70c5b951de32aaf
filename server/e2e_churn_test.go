package server_test

// Subscribers coming and going while publications flow: stable subscribers
// see every publication once, in order; sockets that subscribe again and
// again see, after each SUBSCRIBE reply, exactly the publications after its
// lastUid, in order, with no gap and nothing at or before it.

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"testing"

	"github.com/sss-go/sss/internal/testutil"
	"github.com/sss-go/sss/protocol"
	"github.com/sss-go/sss/server"
)

// checkSegments reads a churning socket's frames until it has seen the FEED
// of last: every SUBSCRIBE reply starts a segment at its lastUid, and the
// FEEDs that follow must continue it one by one.
func checkSegments(t *testing.T, c *e2eConn, channel string, replies int, last protocol.UID) {
	t.Helper()
	var next protocol.UID // uid expected next; zero before the first reply
	seenReplies := 0
	var lastSeen protocol.UID
	for seenReplies < replies || lastSeen != last {
		m := c.nextMsg()
		switch m.sys() {
		case 1:
			if string(m.fields["result"]) != "true" {
				t.Fatalf("SUBSCRIBE refused: %s", m.raw)
			}
			l := e2eMustUID(t, m.str("lastUid"))
			if !lastSeen.IsZero() && (l.Epoch != lastSeen.Epoch || l.Seq < lastSeen.Seq) {
				t.Fatalf("reply lastUid %s is before the FEED %s already delivered", l, lastSeen)
			}
			next = l.Next()
			seenReplies++
		case 8:
			if m.str("channel") != channel {
				t.Fatalf("FEED of another channel: %s", m.raw)
			}
			u := e2eMustUID(t, m.str("uid"))
			if next.IsZero() || u != next {
				t.Fatalf("FEED %s, want %s (after %d replies)", u, next, seenReplies)
			}
			lastSeen = u
			next = u.Next()
		default:
			t.Fatalf("unexpected frame %s", m.raw)
		}
	}
}

func TestE2EChurn(t *testing.T) {
	const (
		stable   = 4
		churners = 8
		cycles   = 25 // SUBSCRIBE+UNSUBSCRIBE pairs, then a final SUBSCRIBE
		pubs     = 300
	)
	apps := startCluster(t, 2, nil)
	A, B := apps[0], apps[1]
	var st []*e2eConn
	var starts []protocol.UID
	for i := 0; i < stable; i++ {
		c := A.dial(t, "")
		starts = append(starts, c.subscribe("churn"))
		st = append(st, c)
	}
	// Churners live on B (where the channel empties and fills again, so
	// the scaler subscription comes and goes) and on A.
	var ch []*e2eConn
	for i := 0; i < churners; i++ {
		app := B
		if i%4 == 3 {
			app = A
		}
		ch = append(ch, app.dial(t, ""))
	}
	ctx, cancel := context.WithTimeout(context.Background(), e2eTimeout)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, churners+1)
	for i, c := range ch {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := 0; k < cycles; k++ {
				if err := c.Write(fmt.Sprintf(`{"sys":1,"channel":"churn","id":%d}`, k)); err != nil {
					errs <- fmt.Errorf("churner %d: %w", i, err)
					return
				}
				if err := c.Write(`{"sys":2,"channel":"churn"}`); err != nil {
					errs <- fmt.Errorf("churner %d: %w", i, err)
					return
				}
			}
			if err := c.Write(`{"sys":1,"channel":"churn","id":"final"}`); err != nil {
				errs <- fmt.Errorf("churner %d: %w", i, err)
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for k := 0; k < pubs; k++ {
			if _, err := apps[k%2].srv.Publish(ctx, "churn", "t", json.RawMessage(fmt.Sprint(k)), server.PublishOptions{}); err != nil {
				errs <- err
				return
			}
		}
	}()
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	// Every churner's final SUBSCRIBE is answered before this marker is
	// published: wait for each to be subscribed.
	testutil.WaitFor(t, e2eTimeout, func() bool {
		n := 0
		for _, app := range apps {
			n += app.srv.Stats().Subscriptions
		}
		return n == stable+churners
	}, "the final subscriptions")
	last := A.publish("churn", "t", `"marker"`)
	for i, c := range st {
		for seq := starts[i].Seq + 1; seq <= last.Seq; seq++ {
			m := c.nextMsg()
			if m.sys() != 8 || m.str("uid") != (protocol.UID{Epoch: last.Epoch, Seq: seq}).String() {
				t.Fatalf("stable subscriber %d: %s, want seq %d", i, m.raw, seq)
			}
		}
		c.expectOpen()
	}
	for i, c := range ch {
		t.Run(fmt.Sprintf("churner %d", i), func(t *testing.T) {
			checkSegments(t, c, "churn", cycles+1, last)
			c.expectOpen()
		})
	}
}

// TestE2EReconnectStorm: many sockets SYNC on one instance while
// publications from another keep coming; each gets, from its lastUid on,
// every publication once and in order: records, then FEEDs.
func TestE2EReconnectStorm(t *testing.T) {
	const sockets, pubs = 20, 400
	apps := startCluster(t, 2, nil)
	A, B := apps[0], apps[1]
	w := B.dial(t, "")
	w.subscribe("storm")
	for i := 0; i < 5; i++ {
		u := A.publish("storm", "t", fmt.Sprint(i))
		w.expectFeed("storm", "t", fmt.Sprint(i), u)
	}
	ctx, cancel := context.WithTimeout(context.Background(), e2eTimeout)
	defer cancel()
	done := make(chan protocol.UID, 1)
	go func() {
		var last protocol.UID
		for k := 5; k < 5+pubs; k++ {
			u, err := A.srv.Publish(ctx, "storm", "t", json.RawMessage(fmt.Sprint(k)), server.PublishOptions{})
			if err != nil {
				close(done)
				return
			}
			last = u
		}
		done <- last
	}()
	conns := make([]*e2eConn, sockets)
	froms := make([]protocol.UID, sockets)
	for i := range conns {
		conns[i] = B.dial(t, "")
	}
	for i := range conns {
		// lastUid: what B's own stream has delivered (a lastUid ahead of
		// it is TestE2ESyncAheadOfInstance).
		m := w.nextMsg()
		froms[i] = e2eMustUID(t, m.str("uid"))
		conns[i].Send(e2eSyncFrame(e2eEntry("storm", e2eQ(froms[i]), "null")))
	}
	last, ok := <-done
	if !ok {
		t.Fatal("a publication failed")
	}
	for i, c := range conns {
		m := c.nextMsg()
		if m.sys() != 4 || string(m.fields["result"]) != `{"storm":true}` {
			t.Fatalf("socket %d: %.300s, want the SYNC reply recovering storm", i, m.raw)
		}
		var recs []json.RawMessage
		if err := json.Unmarshal(m.fields["records"], &recs); err != nil {
			t.Fatal(err)
		}
		next := froms[i].Next()
		check := func(raw string) {
			t.Helper()
			f := e2eParse(t, raw)
			if f.sys() != 8 || f.str("uid") != next.String() || string(f.fields["msg"]) != fmt.Sprint(next.Seq-1) {
				t.Fatalf("socket %d: got %s, want the FEED of %s", i, raw, next)
			}
			next = next.Next()
		}
		for _, r := range recs {
			check(string(r))
		}
		for next.Seq <= last.Seq {
			check(c.Next())
		}
		c.expectOpen()
	}
}
