package server_test

// Several servers on one in-memory backend: one order for every subscriber
// on every server, the control plane across servers, relay faults, and
// SYNCs of a client ahead of its instance.

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/sss-go/sss/internal/testutil"
	"github.com/sss-go/sss/protocol"
	"github.com/sss-go/sss/scaler"
	"github.com/sss-go/sss/server"
)

// startCluster starts n servers, each on its own instance of one memory
// backend.
func startCluster(t *testing.T, n int, opts func(i int) server.Options) []*e2eApp {
	t.Helper()
	be := scaler.NewMemoryBackend(scaler.MemoryOptions{Logger: e2eLogger()})
	apps := make([]*e2eApp, n)
	for i := range apps {
		o := e2eOptions()
		if opts != nil {
			o = opts(i)
		}
		apps[i] = startE2E(t, be.Instance(), o)
	}
	return apps
}

func TestE2EClusterOrder(t *testing.T) {
	for _, n := range []int{2, 3} {
		t.Run(fmt.Sprintf("%d servers", n), func(t *testing.T) {
			const publishers, per = 3, 200
			apps := startCluster(t, n, nil)
			var subs []*e2eConn
			var starts []protocol.UID
			for _, a := range apps {
				for j := 0; j < 2; j++ {
					c := a.dial(t, "")
					starts = append(starts, c.subscribe("order"))
					subs = append(subs, c)
				}
			}
			// One publisher per server (server i%n), the first through a
			// socket's ask, the others through Server.Publish.
			pubSock := apps[0].dial(t, "")
			errs := make(chan error, publishers)
			ctx := e2eCtx(t)
			var wg sync.WaitGroup
			for p := 1; p < publishers; p++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for k := 0; k < per; k++ {
						msg := fmt.Sprintf(`{"p":%d,"k":%d}`, p, k)
						if _, err := apps[p%n].srv.Publish(ctx, "order", "t", json.RawMessage(msg), server.PublishOptions{}); err != nil {
							errs <- err
							return
						}
					}
				}()
			}
			for k := 0; k < per; k++ {
				pubSock.ask("pub", fmt.Sprintf(`{"channel":"order","topic":"t","msg":{"p":0,"k":%d}}`, k))
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Fatal(err)
			}
			var ref []string
			for i, c := range subs {
				var got []string
				next := map[int]int{}
				for j := 0; j < publishers*per; j++ {
					m := c.nextMsg()
					want := protocol.UID{Epoch: starts[i].Epoch, Seq: starts[i].Seq + uint64(j) + 1}
					if m.sys() != 8 || m.str("uid") != want.String() {
						t.Fatalf("subscriber %d (server %d), item %d: %s, want the FEED of %s", i, i/2, j, m.raw, want)
					}
					var pk struct{ P, K int }
					if err := json.Unmarshal(m.fields["msg"], &pk); err != nil {
						t.Fatal(err)
					}
					if pk.K != next[pk.P] {
						t.Fatalf("subscriber %d: publisher %d's message %d arrived when %d was due", i, pk.P, pk.K, next[pk.P])
					}
					next[pk.P]++
					got = append(got, m.raw)
				}
				if i == 0 {
					ref = got
					continue
				}
				for j := range got {
					if got[j] != ref[j] {
						t.Fatalf("subscriber %d differs from subscriber 0 at %d: %s vs %s", i, j, got[j], ref[j])
					}
				}
				c.expectOpen()
			}
		})
	}
}

func TestE2EClusterControl(t *testing.T) {
	apps := startCluster(t, 2, func(int) server.Options {
		o := e2eOptions()
		o.Channels = []server.ChannelRule{{Pattern: "pres-*", Options: server.ChannelOptions{Presence: true}}}
		return o
	})
	A, B := apps[0], apps[1]
	aliceA := A.dial(t, "user=alice")
	aliceB := B.dial(t, "user=alice")
	bobB := B.dial(t, "user=bob")
	for _, c := range []*e2eConn{aliceA, aliceB, bobB} {
		c.begin()
	}
	t.Run("user channel publish", func(t *testing.T) {
		u := B.publish("_user.alice", "dm", `"from B"`)
		aliceA.expectFeed("_user.alice", "dm", `"from B"`, u)
		aliceB.expectFeed("_user.alice", "dm", `"from B"`, u)
		bobB.expectOpen()
	})
	t.Run("TellUser", func(t *testing.T) {
		if err := A.srv.TellUser(e2eCtx(t), "alice", "note", json.RawMessage(`1`)); err != nil {
			t.Fatal(err)
		}
		aliceA.expectExact(`{"sys":6,"topic":"note","msg":1}`)
		aliceB.expectExact(`{"sys":6,"topic":"note","msg":1}`)
		bobB.expectOpen()
	})
	t.Run("Broadcast", func(t *testing.T) {
		if err := B.srv.Broadcast(e2eCtx(t), "all", json.RawMessage(`"x"`)); err != nil {
			t.Fatal(err)
		}
		for _, c := range []*e2eConn{aliceA, aliceB, bobB} {
			c.expectExact(`{"sys":11,"topic":"all","msg":"x"}`)
		}
	})
	t.Run("TellSocket across servers", func(t *testing.T) {
		id := bobB.whoami()
		if err := A.srv.TellSocket(e2eCtx(t), id, "direct", json.RawMessage(`2`)); err != nil {
			t.Fatal(err)
		}
		bobB.expectExact(`{"sys":6,"topic":"direct","msg":2}`)
	})
	t.Run("exclusion across servers", func(t *testing.T) {
		s := A.dial(t, "")
		o := B.dial(t, "")
		s.subscribe("xs")
		pos := o.subscribe("xs")
		s.Send(`{"sys":5,"topic":"pub","msg":{"channel":"xs","topic":"mine","msg":1,"exclude":true},"id":"x"}`)
		items, resp := collectStream(t, s, "xs", 1, 1) // UPDATESUB and RESPONSE, in either order
		u := e2eMustUID(t, resp[`"x"`])
		if u.Seq != pos.Seq+1 {
			t.Fatalf("uid %s after %s", u, pos)
		}
		if items[0].raw != e2eUpdateSub("xs", u) {
			t.Fatalf("got %s, want the UPDATESUB of %s", items[0].raw, u)
		}
		o.expectFeed("xs", "mine", "1", u)
	})
	t.Run("presence across servers", func(t *testing.T) {
		p1 := A.dial(t, "user=carol")
		p1.subscribe("pres-x")
		p2 := B.dial(t, "user=dave")
		p2.subscribe("pres-x")
		for {
			m := p1.nextMsg()
			var p struct {
				Channel, Event string
				Member         struct{ User string }
			}
			if m.sys() != 6 || json.Unmarshal(m.fields["msg"], &p) != nil {
				t.Fatalf("got %s, want a _presence TELL", m.raw)
			}
			if p.Member.User == "carol" {
				continue
			}
			if p.Event != "join" || p.Member.User != "dave" || p.Channel != "pres-x" {
				t.Fatalf("got %s, want dave's join", m.raw)
			}
			break
		}
		for _, a := range apps {
			testutil.WaitFor(t, e2eTimeout, func() bool {
				n, err := a.srv.Count(context.Background(), "pres-x")
				return err == nil && n == 2
			}, "Count(pres-x) == 2 on every server")
		}
	})
	t.Run("recovery of another server's publications", func(t *testing.T) {
		w := A.dial(t, "")
		w.subscribe("rec")
		var uids []protocol.UID
		for i := 0; i < 30; i++ {
			u := A.publish("rec", "t", strconv.Itoa(i))
			w.expectFeed("rec", "t", strconv.Itoa(i), u)
			uids = append(uids, u)
		}
		c := B.dial(t, "")
		r := c.sync(e2eSyncFrame(e2eEntry("rec", e2eQ(uids[9]), "null")))
		r.expectOutcome(t, "rec", true, "")
		if len(r.records) != 20 || r.records[19] != e2eFeed("rec", "t", "29", uids[29]) {
			t.Fatalf("records %q", r.records)
		}
		u := A.publish("rec", "t", `"live"`)
		c.expectFeed("rec", "t", `"live"`, u)
	})
	t.Run("BootSocket across servers", func(t *testing.T) {
		id := bobB.whoami()
		if err := A.srv.BootSocket(e2eCtx(t), id, "from A"); err != nil {
			t.Fatal(err)
		}
		bobB.expectExact(`{"sys":9,"reason":"from A"}`)
		bobB.ExpectClose(protocol.CloseBooted)
	})
	t.Run("BootUser across servers", func(t *testing.T) {
		if err := B.srv.BootUser(e2eCtx(t), "alice", "from B"); err != nil {
			t.Fatal(err)
		}
		for _, c := range []*e2eConn{aliceA, aliceB} {
			c.expectExact(`{"sys":9,"reason":"from B"}`)
			if r := c.ExpectClose(protocol.CloseBooted); r != "from B" {
				t.Errorf("close reason %q", r)
			}
		}
	})
}

// TestE2EStreamReset: an instance whose stream cannot continue without a
// hole (a relayed publication lost and no longer in the log) must not
// deliver later publications silently: its subscribers are told, and a
// SYNC from before the hole is not recoverable.
func TestE2EStreamReset(t *testing.T) {
	apps := startCluster(t, 2, nil)
	A, B := apps[0], apps[1]
	c := B.dial(t, "")
	pos := c.subscribe("hole")
	fi, ok := B.sc.(scaler.FaultInjector)
	if !ok {
		t.Fatalf("%T is no FaultInjector", B.sc)
	}
	fi.DropNextRelay("hole")
	u1 := A.publish("hole", "t", "1")
	if err := fi.Trim(e2eCtx(t), "hole", u1.Seq); err != nil {
		t.Fatal(err)
	}
	u2 := A.publish("hole", "t", "2")
	f, ok := c.NextFrame(e2eTimeout)
	if ok {
		m := e2eParse(t, string(f.Data))
		if m.sys() == 8 {
			t.Fatalf("after a lost publication (%s), got %s silently", u1, m.raw)
		}
		t.Logf("told by %s", m.raw)
	} else if c.CloseCode() == protocol.CloseByClient || c.CloseCode() == protocol.CloseBooted || c.CloseCode() == 0 {
		t.Fatalf("closed with %d, want a code that makes the client reconnect and SYNC", c.CloseCode())
	}
	d := B.dial(t, "")
	r := d.sync(e2eSyncFrame(e2eEntry("hole", e2eQ(pos), "null")))
	r.expectOutcome(t, "hole", false, protocol.CodeNotRecoverable)
	d.expectExact(e2eUpdateSub("hole", u2))
}

func TestE2EClusterShutdownPresence(t *testing.T) {
	apps := startCluster(t, 2, func(int) server.Options {
		o := e2eOptions()
		o.Channels = []server.ChannelRule{{Pattern: "room-*", Options: server.ChannelOptions{Presence: true}}}
		return o
	})
	A, B := apps[0], apps[1]
	a1 := A.dial(t, "user=ann")
	a1.subscribe("room-1")
	b1 := B.dial(t, "user=ben")
	b1.subscribe("room-1")
	b2 := B.dial(t, "user=bea")
	b2.subscribe("room-1")
	testutil.WaitFor(t, e2eTimeout, func() bool {
		n, err := A.srv.Count(context.Background(), "room-1")
		return err == nil && n == 3
	}, "Count 3")
	if err := B.srv.Shutdown(e2eCtx(t)); err != nil {
		t.Fatal(err)
	}
	b1.WaitClosed()
	b2.WaitClosed()
	// A's subscriber hears both leave (joins first), and the count drops.
	left := map[string]bool{}
	for len(left) < 2 {
		m := a1.nextMsg()
		var p struct {
			Event  string
			Member struct{ User string }
		}
		if m.sys() != 6 || json.Unmarshal(m.fields["msg"], &p) != nil {
			t.Fatalf("got %s, want _presence tells", m.raw)
		}
		if p.Event == "leave" {
			left[p.Member.User] = true
		}
	}
	if !left["ben"] || !left["bea"] {
		t.Fatalf("leaves %v", left)
	}
	testutil.WaitFor(t, e2eTimeout, func() bool {
		n, err := A.srv.Count(context.Background(), "room-1")
		return err == nil && n == 1
	}, "Count 1 after B's shutdown")
	// BootChannel from A reaches A's subscriber.
	if err := A.srv.BootChannel(e2eCtx(t), "room-1"); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, e2eTimeout, func() bool { return len(A.srv.Channels()) == 0 }, "room-1 emptied")
	// The socket stays; it may be told by an {"err":...} frame, which
	// can come after the subscription is gone.
	a1.Send(`{"sys":1,"channel":"room-1","id":"again"}`)
	for {
		m := a1.nextMsg()
		if !m.has("sys") || m.sys() == 6 {
			continue // the notice, or presence tells
		}
		if m.sys() != 1 || string(m.fields["result"]) != "true" {
			t.Fatalf("got %s, want the SUBSCRIBE reply", m.raw)
		}
		break
	}
}

// TestE2ESyncAheadOfInstance: a client that saw a publication on one
// instance SYNCs on another whose stream has not delivered it yet (a relay
// a little late). Its lastUid is within the channel's history, not in the
// future: recovered, and the late publication is not sent again.
func TestE2ESyncAheadOfInstance(t *testing.T) {
	apps := startCluster(t, 2, nil)
	A, B := apps[0], apps[1]
	w := B.dial(t, "")
	pos := w.subscribe("ahead") // the channel is live on B
	seen := A.dial(t, "")
	seen.subscribe("ahead")
	fi, ok := B.sc.(scaler.FaultInjector)
	if !ok {
		t.Fatalf("%T is no FaultInjector", B.sc)
	}
	fi.DelayNextRelay("ahead", time.Second)
	u1 := A.publish("ahead", "t", "1")
	seen.expectFeed("ahead", "t", "1", u1)
	if u1.Seq != pos.Seq+1 {
		t.Fatalf("uid %s after %s", u1, pos)
	}
	c := B.dial(t, "")
	r := c.sync(e2eSyncFrame(e2eEntry("ahead", e2eQ(u1), "null")))
	r.expectOutcome(t, "ahead", true, "")
	if len(r.records) != 0 {
		t.Fatalf("records %q, want none", r.records)
	}
	u2 := A.publish("ahead", "t", "2")
	w.expectFeed("ahead", "t", "1", u1)
	w.expectFeed("ahead", "t", "2", u2)
	c.expectFeed("ahead", "t", "2", u2)
	c.expectOpen()
}

// TestE2ESyncAheadThenResubscribe: after a SYNC ahead of the local stream,
// an UNSUBSCRIBE and a new SUBSCRIBE start over from the reply's lastUid:
// the late publications after it are delivered, none skipped.
func TestE2ESyncAheadThenResubscribe(t *testing.T) {
	apps := startCluster(t, 2, nil)
	A, B := apps[0], apps[1]
	w := B.dial(t, "")
	pos := w.subscribe("ahead2")
	fi, ok := B.sc.(scaler.FaultInjector)
	if !ok {
		t.Fatalf("%T is no FaultInjector", B.sc)
	}
	fi.DelayNextRelay("ahead2", time.Second)
	u1 := A.publish("ahead2", "t", "1")
	c := B.dial(t, "")
	r := c.sync(e2eSyncFrame(e2eEntry("ahead2", e2eQ(u1), "null")))
	r.expectOutcome(t, "ahead2", true, "")
	c.Send(`{"sys":2,"channel":"ahead2"}`)
	again := c.subscribe("ahead2")
	if again.Epoch != pos.Epoch || again.Seq > u1.Seq {
		t.Fatalf("SUBSCRIBE lastUid %s", again)
	}
	u2 := A.publish("ahead2", "t", "2")
	if again.Seq < u1.Seq {
		c.expectFeed("ahead2", "t", "1", u1)
	}
	c.expectFeed("ahead2", "t", "2", u2)
	w.expectFeed("ahead2", "t", "1", u1)
	w.expectFeed("ahead2", "t", "2", u2)
}

func TestE2ERelayFaults(t *testing.T) {
	be := scaler.NewMemoryBackend(scaler.MemoryOptions{Logger: e2eLogger(), CheckInterval: 100 * time.Millisecond})
	A := startE2E(t, be.Instance(), e2eOptions())
	B := startE2E(t, be.Instance(), e2eOptions())
	c := B.dial(t, "")
	pos := c.subscribe("faulty")
	fi, ok := B.sc.(scaler.FaultInjector)
	if !ok {
		t.Fatalf("%T is no FaultInjector", B.sc)
	}
	fi.DropNextRelay("faulty")
	var uids []protocol.UID
	for i := 0; i < 3; i++ {
		uids = append(uids, A.publish("faulty", "t", strconv.Itoa(i)))
	}
	fi.DelayNextRelay("faulty", 200*time.Millisecond)
	for i := 3; i < 6; i++ {
		uids = append(uids, A.publish("faulty", "t", strconv.Itoa(i)))
	}
	fi.DropNextRelay("faulty") // the last one: found by the position check
	uids = append(uids, A.publish("faulty", "t", "6"))
	for i, u := range uids {
		if u.Seq != pos.Seq+uint64(i)+1 {
			t.Fatalf("uid %s", u)
		}
		c.expectFeed("faulty", "t", strconv.Itoa(i), u)
	}
	c.expectOpen()
}
