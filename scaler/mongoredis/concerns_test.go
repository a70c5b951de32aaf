package mongoredis

import (
	"context"
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/event"
	"go.mongodb.org/mongo-driver/v2/mongo"
	mopts "go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/sss-go/sss/internal/testutil"
	"github.com/sss-go/sss/scaler"
)

// commandLog records the commands a MongoDB client sends.
type commandLog struct {
	mu   sync.Mutex
	cmds []loggedCommand
	fail []string
}

type loggedCommand struct {
	name string
	cmd  bson.Raw
	ctx  context.Context
}

func (l *commandLog) monitor() *event.CommandMonitor {
	return &event.CommandMonitor{
		Started: func(ctx context.Context, e *event.CommandStartedEvent) {
			l.mu.Lock()
			l.cmds = append(l.cmds, loggedCommand{e.CommandName, append(bson.Raw(nil), e.Command...), ctx})
			l.mu.Unlock()
		},
		Failed: func(_ context.Context, e *event.CommandFailedEvent) {
			if e.CommandName == "listIndexes" && strings.Contains(e.Failure.Error(), "NamespaceNotFound") {
				return // the collection does not exist yet: expected
			}
			l.mu.Lock()
			l.fail = append(l.fail, e.CommandName+": "+e.Failure.Error())
			l.mu.Unlock()
		},
	}
}

func (l *commandLog) snapshot() ([]loggedCommand, []string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]loggedCommand(nil), l.cmds...), append([]string(nil), l.fail...)
}

// monitoredClient connects to mg with a command monitor.
func monitoredClient(t testing.TB, mg *testutil.Mongo) (*mongo.Client, *commandLog) {
	l := &commandLog{}
	mc, err := mongo.Connect(mopts.Client().ApplyURI(mg.URI).SetMonitor(l.monitor()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = mc.Disconnect(context.Background()) })
	return mc, l
}

// TestConcernsOnTheWire: with the default options every write (insert,
// update, delete) carries writeConcern {w: "majority", j: true} and every
// read readConcern "majority" from the primary (no $readPreference other
// than primary), through publishes, a retried key, a gap fill, Since,
// History, Position, a reset and a trim round; the test MongoDB accepts
// them.
func TestConcernsOnTheWire(t *testing.T) {
	rd := testutil.StartRedis(t)
	mg := testutil.SharedMongo(t)
	mc, cl := monitoredClient(t, mg)
	env := newEnv(t, rd.URL, mg.URI)
	mk := func() *Scaler {
		return env.newScaler(t, func(o *Options) { o.MongoURI, o.MongoClient = "", mc })
	}
	a, b := mk(), mk()
	ra, rb := startScaler(t, a), startScaler(t, b)
	ctx := tctx(t)
	const ch = "concerns"
	pos, err := a.Subscribe(ctx, ch)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Subscribe(ctx, ch); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if _, err := a.Publish(ctx, ch, "t", json.RawMessage(`1`), scaler.PublishOptions{IdempotencyKey: string(rune('a' + i))}); err != nil {
			t.Fatal(err)
		}
	}
	// A retried key (read back), a gap fill and a quiet-channel check.
	if _, err := a.Publish(ctx, ch, "t", json.RawMessage(`1`), scaler.PublishOptions{IdempotencyKey: "a"}); err != nil {
		t.Fatal(err)
	}
	b.dropNextRelay(ch)
	last, err := a.Publish(ctx, ch, "t", json.RawMessage(`2`), scaler.PublishOptions{})
	if err != nil {
		t.Fatal(err)
	}
	rb.waitFor(t, 10*time.Second, "B to fill the dropped relay", func() bool { return rb.count(scaler.EventGapFilled) > 0 })
	ra.waitFor(t, 10*time.Second, "A to deliver the last", func() bool { return len(ra.stream(ch)) == 4 })
	if got, err := b.Since(ctx, ch, pos, 0); err != nil || len(got) != 4 || got[3].UID != last {
		t.Fatalf("Since = %v, %v", got, err)
	}
	if _, err := b.History(ctx, ch, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Position(ctx, ch); err != nil {
		t.Fatal(err)
	}
	// A reset (update, delete) and a trim round (bulk update and delete).
	if _, err := a.Publish(ctx, "concerns-reset", "t", json.RawMessage(`1`), scaler.PublishOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := a.resetHistory(ctx, "concerns-reset"); err != nil {
		t.Fatal(err)
	}
	if err := a.trimRound(ctx, time.Second, true); err != nil {
		t.Fatal(err)
	}
	cmds, fails := cl.snapshot()
	if len(fails) > 0 {
		t.Fatalf("the test MongoDB refused commands: %v", fails)
	}
	counts := map[string]int{}
	for _, c := range cmds {
		switch c.name {
		case "insert", "update", "delete":
			counts[c.name]++
			wc, err := c.cmd.LookupErr("writeConcern")
			if err != nil {
				t.Errorf("%s without writeConcern: %s", c.name, c.cmd)
				continue
			}
			doc, _ := wc.DocumentOK()
			w, _ := doc.Lookup("w").StringValueOK()
			j, _ := doc.Lookup("j").BooleanOK()
			if w != "majority" || !j {
				t.Errorf("%s with writeConcern %s, want {w: majority, j: true}", c.name, wc)
			}
		case "find", "aggregate", "count", "distinct":
			counts[c.name]++
			rc, err := c.cmd.LookupErr("readConcern")
			var level string
			if doc, ok := rc.DocumentOK(); err == nil && ok {
				level, _ = doc.Lookup("level").StringValueOK()
			}
			if level != "majority" {
				t.Errorf("%s with readConcern %v, want majority: %s", c.name, rc, c.cmd)
			}
			if rp, err := c.cmd.LookupErr("$readPreference"); err == nil {
				doc, _ := rp.DocumentOK()
				if mode, _ := doc.Lookup("mode").StringValueOK(); mode != "primary" {
					t.Errorf("%s with $readPreference %s, want primary", c.name, rp)
				}
			}
		}
	}
	t.Logf("commands checked: %v", counts)
	for _, name := range []string{"insert", "update", "delete", "find"} {
		if counts[name] == 0 {
			t.Fatalf("no %s seen: %v", name, counts)
		}
	}
}
