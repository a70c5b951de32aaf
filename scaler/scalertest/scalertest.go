// Package scalertest checks that a scaler.Scaler implementation keeps the
// contract documented on scaler.Scaler, the way testing/fstest checks an
// fs.FS.
//
// A scaler's test calls Run with a Factory:
//
//	func TestConformance(t *testing.T) {
//		scalertest.Run(t, func(t *testing.T) func() scaler.Scaler {
//			b := scaler.NewMemoryBackend(scaler.MemoryOptions{LeaseTTL: 300 * time.Millisecond})
//			return func() scaler.Scaler { return b.Instance() }
//		})
//	}
//
// Each subtest calls the Factory once for a fresh namespace (a new backend,
// key prefix or database) and makes at least two instances on it with the
// returned function. The suite starts every instance with its own Handler
// and closes it in t.Cleanup, so the Factory must not start or close them.
//
// Subtests, by stable name (run one with go test -run 'TestX/Name'):
//
//	Subscribe        empty position, re-subscribe changes nothing, own publications delivered
//	OrderedStream    16 publishers x 500 over two instances: every instance gets 1..8000 once, in order
//	SubscribeRace    subscribing while others publish: the stream starts right after the returned position
//	Unsubscribe      no delivery after Unsubscribe returns
//	Since            exact suffix from every position 0..200, limits, ErrFuture, ErrEpochChanged
//	History          the newest publications, oldest first
//	Idempotency      the same key twice (from two instances) stores once
//	Control          every instance (three), sender included, gets each control message once, Origin set
//	Presence         Join / Leave / Presence / Count across instances
//	Users            AddUser / RemoveUser counting, UserInstances
//	Health           nil when started
//	Close            errors after Close (ErrClosed), presence and users dropped, Close idempotent, cancelled contexts
//	Payload          non-ASCII text, escapes and big numbers: live and recovered (Since, History) bytes identical; invalid UTF-8 or JSON rejected (ErrBadPayload), nothing stored
//	NoLeak           closing every instance leaves no goroutine behind
//	Fault/DroppedRelay    a dropped relay (first, middle, last) is filled from the log, never a gap
//	Fault/DelayedRelay    a delayed relay overtaken by later ones: still in order, once
//	Fault/Trimmed         Since past trimmed history: ErrTrimmed; a stream gap over trimmed history is reported by Reset
//	Fault/HistoryReset    new epoch: ErrEpochChanged, position <new>.0, streams Reset then continue
//	Fault/LeaseExpiry     a paused lease removes presence and users for others; resumed, they return (EventLeaseLost)
//
// The suite waits at most 30 s for anything (a failure bound, never a
// pause): configure the scaler's lease time to live and position check
// interval short (say 300 ms and 50 ms) so Fault/LeaseExpiry and
// Fault/DroppedRelay/last finish quickly.
//
// A scaler is checked for the capabilities it offers: the subtests of an
// optional capability the instances lack (History: scaler.HistoryReader,
// Control: scaler.ControlPlane, Presence: scaler.PresenceStore, Users:
// scaler.UserRegistry, Fault/LeaseExpiry: presence and users) are skipped
// saying which, and the checks of other subtests that use one are left out
// when it is missing. The Fault subtests need the instances to implement
// scaler.FaultInjector (a test wrapper can provide it: see the mongoredis
// tests); they are skipped, saying so, otherwise.
//
// History reset, as the suite defines it: after ResetHistory, every stream
// of the channel calls Handler.Reset with an error satisfying
// scaler.ErrNotRecoverable and a position in the new epoch before it
// delivers any publication of the new epoch, then continues after that
// position.
//
// Goroutines are counted by NoLeak for the whole process: do not run Run
// in parallel with other tests of the same binary.
package scalertest

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sss-go/sss/protocol"
	"github.com/sss-go/sss/scaler"
)

// Factory creates a fresh namespace for one subtest and returns a function
// that makes a new, unstarted instance on that namespace. Instances are
// started and closed by the suite; anything else the Factory creates it
// releases with t.Cleanup.
type Factory func(t *testing.T) func() scaler.Scaler

// waitBound is the failure bound of every wait: generous for a loaded
// machine; a correct scaler never gets near it.
const waitBound = 30 * time.Second

// Run runs the conformance suite against the scaler made by f.
func Run(t *testing.T, f Factory) {
	t.Run("Subscribe", func(t *testing.T) { testSubscribe(t, f) })
	t.Run("OrderedStream", func(t *testing.T) { testOrderedStream(t, f) })
	t.Run("SubscribeRace", func(t *testing.T) { testSubscribeRace(t, f) })
	t.Run("Unsubscribe", func(t *testing.T) { testUnsubscribe(t, f) })
	t.Run("Since", func(t *testing.T) { testSince(t, f) })
	t.Run("History", func(t *testing.T) { testHistory(t, f) })
	t.Run("Idempotency", func(t *testing.T) { testIdempotency(t, f) })
	t.Run("Control", func(t *testing.T) { testControl(t, f) })
	t.Run("Presence", func(t *testing.T) { testPresence(t, f) })
	t.Run("Users", func(t *testing.T) { testUsers(t, f) })
	t.Run("Health", func(t *testing.T) { testHealth(t, f) })
	t.Run("Close", func(t *testing.T) { testClose(t, f) })
	t.Run("Payload", func(t *testing.T) { testPayload(t, f) })
	t.Run("NoLeak", func(t *testing.T) { testNoLeak(t, f) })
	t.Run("Fault", func(t *testing.T) {
		t.Run("DroppedRelay", func(t *testing.T) { testDroppedRelay(t, f) })
		t.Run("DelayedRelay", func(t *testing.T) { testDelayedRelay(t, f) })
		t.Run("Trimmed", func(t *testing.T) { testTrimmed(t, f) })
		t.Run("HistoryReset", func(t *testing.T) { testHistoryReset(t, f) })
		t.Run("LeaseExpiry", func(t *testing.T) { testLeaseExpiry(t, f) })
	})
}

// entry is one thing a stream delivered: a publication or a reset.
type entry struct {
	pub   scaler.Publication
	reset bool
	pos   protocol.UID // reset position
	err   error        // reset error
}

// recorder is the Handler of one instance: it records everything, and
// lets tests wait for conditions.
type recorder struct {
	mu       sync.Mutex
	streams  map[string][]entry
	controls []scaler.Control
	events   []scaler.Event
	sig      chan struct{}
}

func newRecorder() *recorder {
	return &recorder{streams: make(map[string][]entry), sig: make(chan struct{})}
}

func (r *recorder) add(f func()) {
	r.mu.Lock()
	f()
	close(r.sig)
	r.sig = make(chan struct{})
	r.mu.Unlock()
}

func (r *recorder) handler() scaler.Handler {
	return scaler.Handler{
		Publication: func(p scaler.Publication) {
			p.Msg = append(json.RawMessage(nil), p.Msg...)
			r.add(func() { r.streams[p.Channel] = append(r.streams[p.Channel], entry{pub: p}) })
		},
		Reset: func(ch string, pos protocol.UID, err error) {
			r.add(func() { r.streams[ch] = append(r.streams[ch], entry{reset: true, pos: pos, err: err}) })
		},
		Control: func(c scaler.Control) {
			r.add(func() { r.controls = append(r.controls, c) })
		},
		Event: func(e scaler.Event) {
			r.add(func() { r.events = append(r.events, e) })
		},
	}
}

// wait blocks until cond, called with r.mu held, is true; it fails the
// test after waitBound.
func (r *recorder) wait(t *testing.T, what string, cond func() bool) {
	t.Helper()
	timer := time.NewTimer(waitBound)
	defer timer.Stop()
	for {
		r.mu.Lock()
		ok := cond()
		sig := r.sig
		r.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-sig:
		case <-timer.C:
			t.Fatalf("timed out after %v waiting for %s", waitBound, what)
		}
	}
}

// stream returns a copy of what channel's stream delivered so far.
func (r *recorder) stream(ch string) []entry {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]entry(nil), r.streams[ch]...)
}

// waitSeq waits until channel's stream has delivered uid (or a later seq
// of its epoch, or a reset past it).
func (r *recorder) waitSeq(t *testing.T, name, ch string, uid protocol.UID) {
	t.Helper()
	r.wait(t, fmt.Sprintf("%s to deliver %s on %q", name, uid, ch), func() bool {
		s := r.streams[ch]
		for i := len(s) - 1; i >= 0; i-- {
			e := s[i]
			u := e.pub.UID
			if e.reset {
				u = e.pos
			}
			if u.Epoch == uid.Epoch && u.Seq >= uid.Seq {
				return true
			}
		}
		return false
	})
}

// node is one started instance, its optional capabilities (nil when the
// scaler does not offer them) and its recorder.
type node struct {
	name string
	s    scaler.Scaler
	hr   scaler.HistoryReader
	cp   scaler.ControlPlane
	ps   scaler.PresenceStore
	ur   scaler.UserRegistry
	r    *recorder
}

// id returns the instance's id, from its ControlPlane or UserRegistry.
func (nd *node) id() string {
	switch {
	case nd.cp != nil:
		return nd.cp.ID()
	case nd.ur != nil:
		return nd.ur.ID()
	}
	return ""
}

// capability names a scaler's optional capability, for require.
type capability string

const (
	capHistory  capability = "scaler.HistoryReader"
	capControl  capability = "scaler.ControlPlane"
	capPresence capability = "scaler.PresenceStore"
	capUsers    capability = "scaler.UserRegistry"
)

// has reports whether nd offers c.
func (nd *node) has(c capability) bool {
	switch c {
	case capHistory:
		return nd.hr != nil
	case capControl:
		return nd.cp != nil
	case capPresence:
		return nd.ps != nil
	case capUsers:
		return nd.ur != nil
	}
	return false
}

// require skips the test, saying why, unless every node offers every
// capability in cs: a scaler is checked for the capabilities it offers.
func require(t *testing.T, ns []*node, cs ...capability) {
	t.Helper()
	for _, c := range cs {
		for _, nd := range ns {
			if !nd.has(c) {
				t.Skipf("%T does not offer %s; its checks skipped", nd.s, c)
			}
		}
	}
}

// nodes makes n started instances on one fresh namespace.
func nodes(t *testing.T, f Factory, n int) []*node {
	t.Helper()
	mk := f(t)
	out := make([]*node, n)
	for i := range out {
		out[i] = startNode(t, mk, string(rune('A'+i)))
	}
	return out
}

func startNode(t *testing.T, mk func() scaler.Scaler, name string) *node {
	t.Helper()
	s := mk()
	if s == nil {
		t.Fatal("factory returned a nil scaler")
	}
	nd := &node{name: name, s: s, r: newRecorder()}
	nd.hr, _ = s.(scaler.HistoryReader)
	nd.cp, _ = s.(scaler.ControlPlane)
	nd.ps, _ = s.(scaler.PresenceStore)
	nd.ur, _ = s.(scaler.UserRegistry)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), waitBound)
		defer cancel()
		if err := s.Close(ctx); err != nil {
			t.Errorf("close %s: %v", name, err)
		}
	})
	if err := s.Start(ctx(t), nd.r.handler()); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	return nd
}

func ctx(t *testing.T) context.Context { return t.Context() }

func (nd *node) subscribe(t *testing.T, ch string) protocol.UID {
	t.Helper()
	pos, err := nd.s.Subscribe(ctx(t), ch)
	if err != nil {
		t.Fatalf("%s: subscribe %q: %v", nd.name, ch, err)
	}
	return pos
}

func (nd *node) publish(t *testing.T, ch string, body string) protocol.UID {
	t.Helper()
	uid, err := nd.s.Publish(ctx(t), ch, "t", json.RawMessage(body), scaler.PublishOptions{})
	if err != nil {
		t.Fatalf("%s: publish %q: %v", nd.name, ch, err)
	}
	return uid
}

// publishN publishes n messages {"n":i}, i from 1, and returns their uids.
func (nd *node) publishN(t *testing.T, ch string, n int) []protocol.UID {
	t.Helper()
	out := make([]protocol.UID, n)
	for i := range out {
		out[i] = nd.publish(t, ch, fmt.Sprintf(`{"n":%d}`, i+1))
	}
	return out
}

// fence publishes a last message from nd and waits until every node in
// waiters delivered it: as streams are ordered, nothing published before
// can still arrive afterwards without being a duplicate or out of order.
func fence(t *testing.T, nd *node, ch string, waiters ...*node) protocol.UID {
	t.Helper()
	uid := nd.publish(t, ch, `"fence"`)
	for _, w := range waiters {
		w.r.waitSeq(t, w.name, ch, uid)
	}
	return uid
}

// checkStream asserts that es is exactly the publications after `after`
// up to and including `last`, in order, each once, with no reset.
func checkStream(t *testing.T, who string, es []entry, after, last protocol.UID) {
	t.Helper()
	want := after.Seq + 1
	var problems []string
	for i, e := range es {
		if len(problems) >= 5 {
			problems = append(problems, "...")
			break
		}
		switch {
		case e.reset:
			problems = append(problems, fmt.Sprintf("entry %d: unexpected reset to %s: %v", i, e.pos, e.err))
		case e.pub.UID.Epoch != after.Epoch:
			problems = append(problems, fmt.Sprintf("entry %d: uid %s not in epoch %s", i, e.pub.UID, after.Epoch))
		case e.pub.UID.Seq != want:
			problems = append(problems, fmt.Sprintf("entry %d: got seq %d, want %d", i, e.pub.UID.Seq, want))
			want = e.pub.UID.Seq + 1
		default:
			want++
		}
	}
	if len(problems) == 0 && want != last.Seq+1 {
		problems = append(problems, fmt.Sprintf("stream ends before %d (last seq %d)", last.Seq, want-1))
	}
	if len(problems) > 0 {
		t.Errorf("%s: stream after %s to %s is not gap-free, ordered and exactly-once (%d entries):\n  %s",
			who, after, last, len(es), strings.Join(problems, "\n  "))
	}
}

// pollUntil polls cond until it returns "" or waitBound passes; for state
// the suite does not receive through a Handler (presence, users).
func pollUntil(t *testing.T, what string, cond func() string) {
	t.Helper()
	deadline := time.Now().Add(waitBound)
	delay := time.Millisecond
	for {
		msg := cond()
		if msg == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s: %s", waitBound, what, msg)
		}
		time.Sleep(delay)
		delay = min(2*delay, 50*time.Millisecond)
	}
}

// injector returns nd's FaultInjector or skips the test.
func injector(t *testing.T, nd *node) scaler.FaultInjector {
	t.Helper()
	fi, ok := nd.s.(scaler.FaultInjector)
	if !ok {
		t.Skipf("%T does not implement scaler.FaultInjector; fault checks skipped", nd.s)
	}
	return fi
}
