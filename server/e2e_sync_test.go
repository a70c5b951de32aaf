package server_test

// Every SYNC outcome of docs/protocol.md ("7. Recovery (SYNC)") over a real
// WebSocket.

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/sss-go/sss/protocol"
	"github.com/sss-go/sss/scaler"
	"github.com/sss-go/sss/server"
)

// e2eEntry builds one SYNC entry; lastUID and query are raw JSON, "" omits
// the key.
func e2eEntry(channel, lastUID, query string) string {
	s := `{"channel":` + strconv.Quote(channel)
	if lastUID != "" {
		s += `,"lastUid":` + lastUID
	}
	if query != "" {
		s += `,"query":` + query
	}
	return s + "}"
}

// e2eSyncFrame builds a SYNC request without id.
func e2eSyncFrame(entries ...string) string {
	return `{"sys":4,"subscriptions":[` + strings.Join(entries, ",") + `]}`
}

// e2eQ quotes a uid as a JSON string.
func e2eQ(u protocol.UID) string { return `"` + u.String() + `"` }

// e2eSyncReply is a decoded SYNC reply.
type e2eSyncReply struct {
	msg     e2eMsg
	result  map[string]bool
	errs    map[string]string // channel -> error code
	records []string          // raw FEED objects
}

// sync sends a SYNC frame and requires the next frame to be a well-formed
// reply: result an object, records an array, an errors entry for every
// false and only for those.
func (c *e2eConn) sync(frame string) e2eSyncReply {
	c.t.Helper()
	c.Send(frame)
	m := c.nextMsg()
	if m.sys() != 4 {
		c.t.Fatalf("SYNC: got %.400s, want the SYNC reply", m.raw)
	}
	r := e2eSyncReply{msg: m, errs: map[string]string{}}
	res := m.fields["result"]
	if len(res) == 0 || res[0] != '{' {
		c.t.Fatalf("SYNC reply result is %s, want an object: %.300s", res, m.raw)
	}
	if err := json.Unmarshal(res, &r.result); err != nil {
		c.t.Fatalf("SYNC reply result %s: %v", res, err)
	}
	recs := m.fields["records"]
	if len(recs) == 0 || recs[0] != '[' {
		c.t.Fatalf("SYNC reply records is %.100s, want an array", recs)
	}
	var raws []json.RawMessage
	if err := json.Unmarshal(recs, &raws); err != nil {
		c.t.Fatalf("SYNC reply records: %v", err)
	}
	for _, x := range raws {
		r.records = append(r.records, string(x))
	}
	if e, ok := m.fields["errors"]; ok {
		var errs map[string]json.RawMessage
		if err := json.Unmarshal(e, &errs); err != nil {
			c.t.Fatalf("SYNC reply errors %s: %v", e, err)
		}
		for ch, obj := range errs {
			for _, k := range []string{"name", "message", "code"} {
				var o map[string]any
				_ = json.Unmarshal(obj, &o)
				if _, ok := o[k].(string); !ok {
					c.t.Errorf("errors[%q] = %s lacks %q", ch, obj, k)
				}
			}
			r.errs[ch] = e2eErrField(obj, "code")
		}
	}
	for ch, ok := range r.result {
		if _, has := r.errs[ch]; has == ok {
			c.t.Errorf("SYNC reply: result[%q]=%v but errors entry present=%v: %.400s", ch, ok, has, m.raw)
		}
	}
	for ch := range r.errs {
		if _, ok := r.result[ch]; !ok {
			c.t.Errorf("SYNC reply: errors[%q] without a result entry", ch)
		}
	}
	return r
}

// expectOutcome requires result[channel] == ok and, when !ok, the code.
func (r e2eSyncReply) expectOutcome(t *testing.T, channel string, ok bool, code string) {
	t.Helper()
	got, present := r.result[channel]
	if !present || got != ok {
		t.Fatalf("SYNC result[%q] = %v (present %v), want %v: %.400s", channel, got, present, ok, r.msg.raw)
	}
	if !ok && r.errs[channel] != code {
		t.Fatalf("SYNC errors[%q] code %q, want %q: %.400s", channel, r.errs[channel], code, r.msg.raw)
	}
}

// subsOf returns the socket's subscriptions as the server reports them.
func (c *e2eConn) subsOf() map[string]bool {
	c.t.Helper()
	var w struct{ Subs []string }
	if err := json.Unmarshal([]byte(c.ask("whoami", "")), &w); err != nil {
		c.t.Fatal(err)
	}
	m := map[string]bool{}
	for _, s := range w.Subs {
		m[s] = true
	}
	return m
}

func TestE2ESyncRecovered(t *testing.T) {
	a := startE2E(t, nil, e2eOptions())
	for _, n := range []int{120, 300} {
		t.Run(fmt.Sprintf("%d missed", n), func(t *testing.T) {
			ch := fmt.Sprintf("news%d", n)
			c1 := a.dial(t, "")
			c1.subscribe(ch)
			var last protocol.UID
			for i := 0; i < 5; i++ {
				last = a.publish(ch, "t", strconv.Itoa(i))
				c1.expectFeed(ch, "t", strconv.Itoa(i), last)
			}
			c1.SendClose(protocol.CloseByClient, "")
			c1.WaitClosed()
			var want []string
			for i := 0; i < n; i++ {
				topic := "t" + strconv.Itoa(i%3)
				msg := fmt.Sprintf(`{"i":%d,"s":"v%d"}`, i, i)
				u := a.publish(ch, topic, msg)
				want = append(want, e2eFeed(ch, topic, msg, u))
			}
			c2 := a.dial(t, "")
			r := c2.sync(e2eSyncFrame(e2eEntry(ch, e2eQ(last), "null")))
			r.expectOutcome(t, ch, true, "")
			if len(r.records) != n {
				t.Fatalf("%d records, want %d", len(r.records), n)
			}
			for i := range want {
				if r.records[i] != want[i] {
					t.Fatalf("record %d: %s, want %s", i, r.records[i], want[i])
				}
			}
			u := a.publish(ch, "t", `"live"`)
			c2.expectFeed(ch, "t", `"live"`, u)
			// From the middle.
			mid := e2eMustUID(t, e2eParse(t, want[n/2]).str("uid"))
			c3 := a.dial(t, "")
			r = c3.sync(e2eSyncFrame(e2eEntry(ch, e2eQ(mid), "")))
			r.expectOutcome(t, ch, true, "")
			if len(r.records) != n-n/2 || r.records[0] != want[n/2+1] || r.records[len(r.records)-1] != e2eFeed(ch, "t", `"live"`, u) {
				t.Fatalf("from the middle: %d records, want %d starting after %s", len(r.records), n-n/2, mid)
			}
			c3.expectOpen()
		})
	}
	for _, live := range []bool{false, true} {
		t.Run(fmt.Sprintf("while publishing, channel live here %v", live), func(t *testing.T) {
			ch := fmt.Sprintf("busy-sync-%v", live)
			var w *e2eConn
			if live {
				w = a.dial(t, "")
				w.subscribe(ch)
			}
			var from protocol.UID
			for i := 0; i < 10; i++ {
				u := a.publish(ch, "t", strconv.Itoa(i))
				if i == 4 {
					from = u
				}
				if w != nil {
					// This instance's stream has delivered it (a lastUid
					// ahead of the stream is TestE2ESyncAheadOfInstance).
					w.expectFeed(ch, "t", strconv.Itoa(i), u)
				}
			}
			const n = 400
			done := make(chan protocol.UID, 1)
			ctx := e2eCtx(t)
			go func() {
				var last protocol.UID
				for i := 0; i < n; i++ {
					u, err := a.srv.Publish(ctx, ch, "t", json.RawMessage(strconv.Itoa(10+i)), server.PublishOptions{})
					if err != nil {
						close(done)
						return
					}
					last = u
				}
				done <- last
			}()
			c := a.dial(t, "")
			r := c.sync(e2eSyncFrame(e2eEntry(ch, e2eQ(from), "null")))
			r.expectOutcome(t, ch, true, "")
			seq := from.Seq
			check := func(raw string) {
				t.Helper()
				m := e2eParse(t, raw)
				seq++
				if m.sys() != 8 || m.str("uid") != (protocol.UID{Epoch: from.Epoch, Seq: seq}).String() || string(m.fields["msg"]) != strconv.FormatUint(seq-1, 10) {
					t.Fatalf("got %s, want the FEED of seq %d (gap-free, no duplicates)", raw, seq)
				}
			}
			for _, rec := range r.records {
				check(rec)
			}
			last, ok := <-done
			if !ok {
				t.Fatal("a publication failed")
			}
			for seq < last.Seq {
				check(c.Next())
			}
			c.expectOpen()
		})
	}
}

func TestE2ESyncNotRecoverable(t *testing.T) {
	sc := scaler.NewMemory(scaler.MemoryOptions{Logger: e2eLogger()})
	o := e2eOptions()
	o.MaxRecovery = 10
	a := startE2E(t, sc, o)
	fi := a.faults()
	ctx := e2eCtx(t)
	cases := []struct {
		name    string
		lastUID func(epoch string) string // raw JSON, "" = missing
		fault   func(t *testing.T, ch string)
	}{
		{"other epoch", func(e string) string { return `"` + e + `.10"` }, func(t *testing.T, ch string) {
			if err := fi.ResetHistory(ctx, ch); err != nil {
				t.Fatal(err)
			}
		}},
		{"trimmed", func(e string) string { return `"` + e + `.5"` }, func(t *testing.T, ch string) {
			if err := fi.Trim(ctx, ch, 10); err != nil {
				t.Fatal(err)
			}
		}},
		{"malformed uid 2", func(string) string { return `"2"` }, nil},
		{"malformed uid empty", func(string) string { return `""` }, nil},
		{"malformed uid junk", func(string) string { return `"x.y.z"` }, nil},
		{"malformed uid bad seq", func(e string) string { return `"` + e + `.01"` }, nil},
		{"future uid", func(e string) string { return `"` + e + `.999"` }, nil},
		{"null lastUid", func(string) string { return `null` }, nil},
		{"missing lastUid", func(string) string { return `` }, nil},
		{"too many missed", func(e string) string { return `"` + e + `.9"` }, nil}, // 11 missed, MaxRecovery 10
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ch := fmt.Sprintf("nr%d", i)
			var pos protocol.UID
			for j := 0; j < 20; j++ {
				pos = a.publish(ch, "t", strconv.Itoa(j))
			}
			if tc.fault != nil {
				tc.fault(t, ch)
				pos = a.position(ch)
			}
			c := a.dial(t, "")
			r := c.sync(e2eSyncFrame(e2eEntry(ch, tc.lastUID(pos.Epoch), "null")))
			r.expectOutcome(t, ch, false, protocol.CodeNotRecoverable)
			if len(r.records) != 0 {
				t.Fatalf("records %q for a channel that is not recoverable", r.records)
			}
			c.expectExact(e2eUpdateSub(ch, pos))
			if !c.subsOf()[ch] {
				t.Errorf("socket not subscribed to %s after not_recoverable", ch)
			}
			u := a.publish(ch, "t", `"after"`)
			if u.Epoch != pos.Epoch || u.Seq != pos.Seq+1 {
				t.Fatalf("publication %s after position %s", u, pos)
			}
			c.expectFeed(ch, "t", `"after"`, u)
		})
	}
	t.Run("exactly MaxRecovery missed", func(t *testing.T) {
		ch := "nr-max"
		var uids []protocol.UID
		for j := 0; j < 20; j++ {
			uids = append(uids, a.publish(ch, "t", strconv.Itoa(j)))
		}
		c := a.dial(t, "")
		r := c.sync(e2eSyncFrame(e2eEntry(ch, e2eQ(uids[9]), "null")))
		r.expectOutcome(t, ch, true, "")
		if len(r.records) != 10 || r.records[9] != e2eFeed(ch, "t", "19", uids[19]) {
			t.Fatalf("records %q, want the last 10", r.records)
		}
	})
	t.Run("mixed entries", func(t *testing.T) {
		var okFrom, okLast protocol.UID
		for j := 0; j < 3; j++ {
			okLast = a.publish("mix-ok", "t", strconv.Itoa(j))
			if j == 0 {
				okFrom = okLast
			}
		}
		nrPos := a.publish("mix-nr", "t", "0")
		c := a.dial(t, "")
		r := c.sync(e2eSyncFrame(
			e2eEntry("mix-nr", `null`, "null"),
			e2eEntry("mix-ok", e2eQ(okFrom), `{"q":1}`),
			e2eEntry("forbidden", e2eQ(okFrom), "null"),
		))
		r.expectOutcome(t, "mix-ok", true, "")
		r.expectOutcome(t, "mix-nr", false, protocol.CodeNotRecoverable)
		r.expectOutcome(t, "forbidden", false, protocol.CodeRefused)
		if len(r.records) != 2 || r.records[1] != e2eFeed("mix-ok", "t", "2", okLast) {
			t.Fatalf("records %q", r.records)
		}
		c.expectExact(e2eUpdateSub("mix-nr", nrPos))
		if q := a.queriesOf("mix-ok"); len(q) == 0 || q[len(q)-1] != `{"q":1}` {
			t.Errorf("subscription parser saw %q for mix-ok, want the SYNC entry's query", q)
		}
		subs := c.subsOf()
		if !subs["mix-ok"] || !subs["mix-nr"] || subs["forbidden"] {
			t.Errorf("subscriptions %v, want mix-ok and mix-nr only", subs)
		}
	})
}

func TestE2ESyncRefused(t *testing.T) {
	a := startE2E(t, nil, e2eOptions())
	u := a.publish("forbidden", "t", "1")
	c := a.dial(t, "")
	r := c.sync(e2eSyncFrame(e2eEntry("forbidden", e2eQ(u), `{"why":"golden"}`), e2eEntry("coded-refuse", "null", "")))
	r.expectOutcome(t, "forbidden", false, protocol.CodeRefused)
	r.expectOutcome(t, "coded-refuse", false, "custom_code")
	if q := a.queriesOf("forbidden"); len(q) != 1 || q[0] != `{"why":"golden"}` {
		t.Errorf("parser saw %q", q)
	}
	if len(r.records) != 0 {
		t.Errorf("records %q of a refused channel", r.records)
	}
	if s := c.subsOf(); s["forbidden"] || s["coded-refuse"] {
		t.Errorf("refused channels subscribed: %v", s)
	}
	a.publish("forbidden", "t", "2")
	c.expectOpen()
}

func TestE2ESyncUserChannel(t *testing.T) {
	a := startE2E(t, nil, e2eOptions())
	c1 := a.dial(t, "user=alice")
	m := c1.begin()
	begin := e2eMustUID(t, m.str("lastUid"))
	var seen protocol.UID
	for i := 0; i < 3; i++ {
		seen = a.publish("_user.alice", "dm", strconv.Itoa(i))
		c1.expectFeed("_user.alice", "dm", strconv.Itoa(i), seen)
	}
	if seen.Seq != begin.Seq+3 {
		t.Fatalf("uids after BEGIN %s: %s", begin, seen)
	}
	c1.SendClose(protocol.CloseByClient, "")
	c1.WaitClosed()
	var missed []string
	var last protocol.UID
	for i := 0; i < 5; i++ {
		last = a.publish("_user.alice", "dm", `"m`+strconv.Itoa(i)+`"`)
		missed = append(missed, e2eFeed("_user.alice", "dm", `"m`+strconv.Itoa(i)+`"`, last))
	}
	t.Run("granted and recovered", func(t *testing.T) {
		c := a.dial(t, "user=alice")
		r := c.sync(e2eSyncFrame(e2eEntry("_user.alice", e2eQ(seen), "null")))
		r.expectOutcome(t, "_user.alice", true, "")
		if strings.Join(r.records, "\n") != strings.Join(missed, "\n") {
			t.Fatalf("records %q, want %q", r.records, missed)
		}
		u := a.publish("_user.alice", "dm", `"live"`)
		c.expectFeed("_user.alice", "dm", `"live"`, u)
		last = u
	})
	t.Run("granted with null lastUid", func(t *testing.T) {
		c := a.dial(t, "user=alice")
		r := c.sync(e2eSyncFrame(e2eEntry("_user.alice", "null", "null")))
		r.expectOutcome(t, "_user.alice", false, protocol.CodeNotRecoverable)
		c.expectExact(e2eUpdateSub("_user.alice", last))
		u := a.publish("_user.alice", "dm", `"live2"`)
		c.expectFeed("_user.alice", "dm", `"live2"`, u)
	})
	t.Run("another user's channel is forbidden", func(t *testing.T) {
		bob := a.dial(t, "user=bob")
		bob.begin()
		for _, q := range []string{"user=alice", ""} {
			c := a.dial(t, q)
			r := c.sync(e2eSyncFrame(e2eEntry("_user.bob", "null", "null")))
			r.expectOutcome(t, "_user.bob", false, protocol.CodeForbidden)
			u := a.publish("_user.bob", "dm", `"private"`)
			bob.expectFeed("_user.bob", "dm", `"private"`, u)
			c.expectOpen()
		}
	})
	t.Run("not listed: not subscribed", func(t *testing.T) {
		w := a.dial(t, "user=alice")
		w.begin()
		c := a.dial(t, "user=alice")
		c.sync(e2eSyncFrame(e2eEntry("room", "null", "null")))
		c.expectExact(e2eUpdateSub("room", a.position("room")))
		u := a.publish("_user.alice", "dm", `"x"`)
		w.expectFeed("_user.alice", "dm", `"x"`, u)
		c.expectOpen()
	})
}

func TestE2ESyncReserved(t *testing.T) {
	a := startE2E(t, nil, e2eOptions())
	c := a.dial(t, "user=alice")
	r := c.sync(e2eSyncFrame(e2eEntry("_x", "null", "null"), e2eEntry("_u_alice", "null", "null"), e2eEntry("_user", "null", "null")))
	for _, ch := range []string{"_x", "_u_alice", "_user"} {
		r.expectOutcome(t, ch, false, protocol.CodeReservedChannel)
	}
	c.expectOpen()
}

func TestE2ESyncSubscriptionLimit(t *testing.T) {
	o := e2eOptions()
	o.MaxSubscriptions = 3
	a := startE2E(t, nil, o)
	var entries []string
	for i := 0; i < 5; i++ {
		ch := "lim" + strconv.Itoa(i)
		entries = append(entries, e2eEntry(ch, e2eQ(a.position(ch)), "null"))
	}
	c := a.dial(t, "")
	r := c.sync(e2eSyncFrame(entries...))
	for i := 0; i < 3; i++ {
		r.expectOutcome(t, "lim"+strconv.Itoa(i), true, "")
	}
	for i := 3; i < 5; i++ {
		r.expectOutcome(t, "lim"+strconv.Itoa(i), false, protocol.CodeTooManySubscriptions)
	}
	if s := c.subsOf(); len(s) != 3 || s["lim3"] || s["lim4"] {
		t.Errorf("subscriptions %v, want lim0..lim2", s)
	}
}

// e2eFailScaler wraps a scaler and makes Subscribe or Since report the
// backend unavailable on demand.
type e2eFailScaler struct {
	*scaler.Memory
	failSubscribe atomic.Bool
	failSince     atomic.Bool
	failHealth    atomic.Bool
	sinceCalls    atomic.Int64
}

func (f *e2eFailScaler) Health(ctx context.Context) error {
	if f.failHealth.Load() {
		return fmt.Errorf("e2e: health: %w", scaler.ErrUnavailable)
	}
	return f.Memory.Health(ctx)
}

func (f *e2eFailScaler) Subscribe(ctx context.Context, channel string) (protocol.UID, error) {
	if f.failSubscribe.Load() {
		return protocol.UID{}, fmt.Errorf("e2e: subscribe %q: %w", channel, scaler.ErrUnavailable)
	}
	return f.Memory.Subscribe(ctx, channel)
}

func (f *e2eFailScaler) Since(ctx context.Context, channel string, after protocol.UID, limit int) ([]scaler.Publication, error) {
	f.sinceCalls.Add(1)
	if f.failSince.Load() {
		return nil, fmt.Errorf("e2e: since %q: %w", channel, scaler.ErrUnavailable)
	}
	return f.Memory.Since(ctx, channel, after, limit)
}

func TestE2ESyncUnavailable(t *testing.T) {
	fs := &e2eFailScaler{Memory: scaler.NewMemory(scaler.MemoryOptions{Logger: e2eLogger()})}
	a := startE2E(t, fs, e2eOptions())
	healthy := a.dial(t, "")
	t.Run("ReadyHandler follows Health", func(t *testing.T) {
		ready := func() int {
			rec := httptest.NewRecorder()
			a.srv.ReadyHandler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/ready", nil))
			return rec.Code
		}
		if got := ready(); got != http.StatusOK {
			t.Fatalf("ReadyHandler %d, want 200", got)
		}
		fs.failHealth.Store(true)
		defer fs.failHealth.Store(false)
		if got := ready(); got != http.StatusServiceUnavailable {
			t.Fatalf("ReadyHandler %d with the scaler unhealthy, want 503", got)
		}
	})
	for _, tc := range []struct {
		name string
		flag *atomic.Bool
	}{{"Subscribe", &fs.failSubscribe}, {"Since", &fs.failSince}} {
		t.Run(tc.name+" unavailable", func(t *testing.T) {
			ch := "un-" + tc.name
			var from protocol.UID
			for i := 0; i < 5; i++ {
				u := a.publish(ch, "t", strconv.Itoa(i))
				if i == 1 {
					from = u
				}
			}
			tc.flag.Store(true)
			c := a.dial(t, "")
			c.Send(e2eSyncFrame(e2eEntry(ch, e2eQ(from), "null")))
			c.ExpectClose(protocol.CloseTryAgainLater)
			tc.flag.Store(false)
			healthy.expectOpen()
			// Once the backend is back, the same SYNC recovers.
			c2 := a.dial(t, "")
			r := c2.sync(e2eSyncFrame(e2eEntry(ch, e2eQ(from), "null")))
			r.expectOutcome(t, ch, true, "")
			if len(r.records) != 3 {
				t.Fatalf("%d records, want 3", len(r.records))
			}
		})
	}
}

func TestE2ESyncID(t *testing.T) {
	a := startE2E(t, nil, e2eOptions())
	c := a.dial(t, "")
	t.Run("empty", func(t *testing.T) {
		c.Send(`{"sys":4,"subscriptions":[]}`)
		c.expectExact(`{"sys":4,"result":{},"records":[]}`)
	})
	for _, id := range []string{`"s1"`, `0`, `17`} {
		t.Run("id "+id, func(t *testing.T) {
			c.Send(`{"sys":4,"id":` + id + `,"subscriptions":[]}`)
			m := c.expectJSON(`{"sys":4,"id":` + id + `,"result":{},"records":[]}`)
			if string(m.fields["id"]) != id {
				t.Errorf("id %s, want %s byte for byte", m.fields["id"], id)
			}
		})
	}
	t.Run("id with entries", func(t *testing.T) {
		pos := a.position("withid")
		c.Send(`{"sys":4,"subscriptions":[` + e2eEntry("withid", e2eQ(pos), "null") + `],"id":"z"}`)
		c.expectJSON(`{"sys":4,"id":"z","result":{"withid":true},"records":[]}`)
	})
}

func TestE2ESyncWindowBoundaries(t *testing.T) {
	for _, window := range []int{8, -1} {
		t.Run(fmt.Sprintf("window %d", window), func(t *testing.T) {
			o := e2eOptions()
			o.RecoveryWindow = window
			a := startE2E(t, nil, o)
			w := a.dial(t, "")
			pos := w.subscribe("win") // live here: the window fills
			var feeds []string
			for i := 0; i < 20; i++ {
				u := a.publish("win", "t", strconv.Itoa(i))
				w.expectFeed("win", "t", strconv.Itoa(i), u)
				feeds = append(feeds, e2eFeed("win", "t", strconv.Itoa(i), u))
			}
			for _, k := range []int{0, 1, 7, 8, 9, 19, 20} {
				from := protocol.UID{Epoch: pos.Epoch, Seq: pos.Seq + uint64(20-k)}
				c := a.dial(t, "")
				r := c.sync(e2eSyncFrame(e2eEntry("win", e2eQ(from), "null")))
				r.expectOutcome(t, "win", true, "")
				if strings.Join(r.records, "\n") != strings.Join(feeds[20-k:], "\n") {
					t.Fatalf("%d missed: records %q, want %q", k, r.records, feeds[20-k:])
				}
				c.expectOpen()
			}
		})
	}
}

// TestE2ESyncFromWindow: recovery near the tail of a channel live on this
// instance is served from the in-memory window, without a backend read
// (docs/architecture.md, "7. The path of a recovery"); beyond the window it reads the scaler.
func TestE2ESyncFromWindow(t *testing.T) {
	fs := &e2eFailScaler{Memory: scaler.NewMemory(scaler.MemoryOptions{Logger: e2eLogger()})}
	o := e2eOptions()
	o.RecoveryWindow = 16
	a := startE2E(t, fs, o)
	w := a.dial(t, "")
	w.subscribe("tail")
	var uids []protocol.UID
	for i := 0; i < 40; i++ {
		u := a.publish("tail", "t", strconv.Itoa(i))
		w.expectFeed("tail", "t", strconv.Itoa(i), u)
		uids = append(uids, u)
	}
	before := fs.sinceCalls.Load()
	c := a.dial(t, "")
	r := c.sync(e2eSyncFrame(e2eEntry("tail", e2eQ(uids[29]), "null"))) // 10 missed
	r.expectOutcome(t, "tail", true, "")
	if len(r.records) != 10 {
		t.Fatalf("%d records", len(r.records))
	}
	if n := fs.sinceCalls.Load() - before; n != 0 {
		t.Errorf("%d backend reads for a recovery inside the window", n)
	}
	c2 := a.dial(t, "")
	r = c2.sync(e2eSyncFrame(e2eEntry("tail", e2eQ(uids[9]), "null"))) // 30 missed
	r.expectOutcome(t, "tail", true, "")
	if len(r.records) != 30 {
		t.Fatalf("%d records", len(r.records))
	}
	if n := fs.sinceCalls.Load() - before; n == 0 {
		t.Errorf("no backend read for a recovery beyond the window")
	}
}

// TestE2ESyncHeldChannel: a SYNC for a channel the socket already holds,
// from a uid behind what the socket was already sent (FEEDs on their way
// to the client, which does not de-duplicate), is recovered with nothing
// repeated and nothing skipped, whether records would come from the
// recovery window or from the scaler; a channel repeated in one SYNC
// counts once.
func TestE2ESyncHeldChannel(t *testing.T) {
	for _, win := range []int{0, -1} {
		t.Run(map[int]string{0: "window", -1: "scaler"}[win], func(t *testing.T) {
			o := e2eOptions()
			o.RecoveryWindow = win
			a := startE2E(t, nil, o)
			c := a.dial(t, "")
			pos := c.subscribe("held")
			var uids []protocol.UID
			for i := 1; i <= 3; i++ {
				uids = append(uids, a.publish("held", "t", fmt.Sprint(i)))
			}
			seen := map[uint64]int{}
			for i := 0; i < 3; i++ { // the FEEDs the server sent before the SYNCs
				seen[e2eMustUID(t, c.nextMsg().str("uid")).Seq]++
			}
			// From before every FEED sent, then from after the first.
			for _, from := range []protocol.UID{pos, uids[0]} {
				r := c.sync(e2eSyncFrame(e2eEntry("held", e2eQ(from), "")))
				r.expectOutcome(t, "held", true, "")
				if len(r.records) != 0 {
					t.Errorf("SYNC from %s: records %q, want none: the FEEDs were sent already", from, r.records)
				}
				for _, rec := range r.records {
					seen[e2eMustUID(t, e2eParse(t, rec).str("uid")).Seq]++
				}
			}
			u4 := a.publish("held", "t", "4")
			c.expectFeed("held", "t", "4", u4)
			seen[u4.Seq]++
			for seq := uint64(1); seq <= 4; seq++ {
				if seen[seq] != 1 {
					t.Errorf("seq %d reached the client %d times, want once", seq, seen[seq])
				}
			}
			c.expectOpen()
			// A repeated entry in one SYNC counts once.
			r := c.sync(e2eSyncFrame(e2eEntry("held", e2eQ(u4), "null"), e2eEntry("held", e2eQ(u4), "null")))
			r.expectOutcome(t, "held", true, "")
			if len(r.records) != 0 {
				t.Fatalf("records %q", r.records)
			}
			u5 := a.publish("held", "t", "5")
			c.expectFeed("held", "t", "5", u5)
			c.expectOpen()
		})
	}
}
