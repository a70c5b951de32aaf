package server_test

// The send queue's bounds (docs/protocol.md, "9.1 Close codes": 4002): a
// socket that does not read is closed and recovers by SYNC; replies and
// publications larger than the bound are still answered or delivered.

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/sss-go/sss/protocol"
	"github.com/sss-go/sss/server"
)

func TestE2ESlowConsumer(t *testing.T) {
	for _, tc := range []struct {
		name        string
		msgs, bytes int
	}{{"frames bound", 16, 0}, {"bytes bound", 100000, 256 << 10}} {
		t.Run(tc.name, func(t *testing.T) {
			o := e2eOptions()
			o.SendQueueMessages = tc.msgs
			o.SendQueueBytes = tc.bytes
			e2eSlowConsumer(t, o)
		})
	}
}

// e2eSlowConsumer: a socket that stops reading is closed with 4002 once
// its queue overflows, gets what was written before, and recovers the rest
// by SYNC; a socket that reads is not affected.
func e2eSlowConsumer(t *testing.T, o server.Options) {
	a := startE2E(t, nil, o)
	slow := a.dial(t, "")
	from := slow.subscribe("slow")
	fast := a.dial(t, "")
	fast.subscribe("slow")
	slow.PauseReads()
	big := `"` + strings.Repeat("z", 64<<10) + `"`
	var last protocol.UID
	start := time.Now()
	for i := 0; a.srv.Stats().SlowConsumerCloses == 0; i++ {
		if i == 2000 {
			t.Fatal("no slow-consumer close after 2000 publications of 64 KiB to a socket that does not read")
		}
		last = a.publish("slow", "t", big)
		// The socket that reads has each one before the next is
		// published, so that even on a loaded machine only the one
		// that does not read overflows.
		if m := fast.Next(); !strings.Contains(m, `"uid":"`+last.String()+`"`) {
			t.Fatalf("fast reader got %.100s, want %v", m, last)
		}
	}
	t.Logf("slow consumer closed after %d publications, %v", last.Seq-from.Seq, time.Since(start))
	// The slow one gets what was written, in order, then 4002 (its reader
	// resumes well within the server's write timeout).
	slow.ResumeReads()
	got := from
	for {
		f, ok := slow.NextFrame(e2eTimeout)
		if !ok {
			break
		}
		m := e2eParse(t, string(f.Data))
		if m.sys() != 8 || m.str("uid") != got.Next().String() {
			t.Fatalf("slow reader got %.100s after %s", m.raw, got)
		}
		got = got.Next()
	}
	if slow.CloseCode() != protocol.CloseSlowConsumer {
		t.Fatalf("slow reader closed with %d %q after %v, want 4002", slow.CloseCode(), slow.CloseReason(), time.Since(start))
	}
	// The socket that reads is not affected (it had every publication).
	fast.expectOpen()
	// It recovers the rest by SYNC (or is told it cannot, when the
	// records would not fit its send queue: TestE2ESyncReplyOverQueueBytes).
	c := a.dial(t, "")
	r := c.sync(e2eSyncFrame(e2eEntry("slow", e2eQ(got), "null")))
	if r.result["slow"] {
		if uint64(len(r.records)) != last.Seq-got.Seq {
			t.Fatalf("%d records after %s, want %d", len(r.records), got, last.Seq-got.Seq)
		}
	} else {
		r.expectOutcome(t, "slow", false, protocol.CodeNotRecoverable)
		c.expectExact(e2eUpdateSub("slow", last))
	}
	c.expectOpen()
}

// TestE2ESyncReplyOverQueueBytes: a SYNC whose records outgrow the send
// queue's byte bound (default 4 MiB) must still be answered, with the
// records or "not recoverable"; closing with 4002 would make the client
// reconnect and send the same SYNC forever.
func TestE2ESyncReplyOverQueueBytes(t *testing.T) {
	o := e2eOptions()
	a := startE2E(t, nil, o)
	from := a.position("big")
	big := `"` + strings.Repeat("b", 60<<10) + `"`
	var last protocol.UID
	for i := 0; i < 100; i++ { // 6 MB of missed publications, within MaxRecovery
		last = a.publish("big", "t", big)
	}
	c := a.dial(t, "")
	c.Send(e2eSyncFrame(e2eEntry("big", e2eQ(from), "null")))
	f, ok := c.NextFrame(e2eTimeout)
	if !ok {
		t.Fatalf("SYNC of 100 publications of 60 KiB: closed with %d %q instead of a reply", c.CloseCode(), c.CloseReason())
	}
	m := e2eParse(t, string(f.Data))
	if m.sys() != 4 {
		t.Fatalf("got %.200s, want the SYNC reply", m.raw)
	}
	var res map[string]bool
	_ = json.Unmarshal(m.fields["result"], &res)
	if !res["big"] {
		var errs map[string]json.RawMessage
		_ = json.Unmarshal(m.fields["errors"], &errs)
		if e2eErrField(errs["big"], "code") != protocol.CodeNotRecoverable {
			t.Fatalf("SYNC reply %.300s: false without not_recoverable", m.raw)
		}
		c.expectExact(e2eUpdateSub("big", last))
	}
	c.expectOpen()
}

// TestE2ESyncReplyOverQueueBytesManyChannels: the byte bound holds for the
// whole SYNC reply, not per channel.
func TestE2ESyncReplyOverQueueBytesManyChannels(t *testing.T) {
	a := startE2E(t, nil, e2eOptions())
	big := `"` + strings.Repeat("b", 60<<10) + `"`
	var entries []string
	for k := 0; k < 4; k++ {
		ch := fmt.Sprintf("big%d", k)
		entries = append(entries, e2eEntry(ch, e2eQ(a.position(ch)), "null"))
		for i := 0; i < 25; i++ { // 1.5 MB each, 6 MB in all
			a.publish(ch, "t", big)
		}
	}
	c := a.dial(t, "")
	c.Send(e2eSyncFrame(entries...))
	f, ok := c.NextFrame(e2eTimeout)
	if !ok {
		t.Fatalf("SYNC of 4 channels x 1.5 MB: closed with %d %q instead of a reply", c.CloseCode(), c.CloseReason())
	}
	m := e2eParse(t, string(f.Data))
	if m.sys() != 4 {
		t.Fatalf("got %.200s, want the SYNC reply", m.raw)
	}
	var res map[string]bool
	var recs []json.RawMessage
	_ = json.Unmarshal(m.fields["result"], &res)
	_ = json.Unmarshal(m.fields["records"], &recs)
	okN := 0
	for _, ok := range res {
		if ok {
			okN++
		}
	}
	if len(res) != 4 || len(recs) != 25*okN {
		t.Fatalf("result %v with %d records, want 25 records per recovered channel", res, len(recs))
	}
	t.Logf("%d of 4 channels recovered, reply of %d bytes", okN, len(f.Data))
	c.drainOpen()
}

// TestE2EPublishOverQueueBytes: a publication bigger than a socket's send
// queue can hold is refused by Publish, or delivered; it must not close
// every subscriber with 4002 (their SYNC would fail the same way, forever).
func TestE2EPublishOverQueueBytes(t *testing.T) {
	o := e2eOptions()
	o.SendQueueBytes = 64 << 10
	a := startE2E(t, nil, o)
	c := a.dial(t, "")
	pos := c.subscribe("huge")
	huge := `"` + strings.Repeat("h", 100<<10) + `"`
	u, err := a.srv.Publish(e2eCtx(t), "huge", "t", json.RawMessage(huge), server.PublishOptions{})
	if err != nil {
		t.Logf("Publish refused: %v", err)
		c.expectOpen()
		return
	}
	if u.Seq != pos.Seq+1 {
		t.Fatalf("uid %s after %s", u, pos)
	}
	f, ok := c.NextFrame(e2eTimeout)
	if !ok {
		t.Fatalf("subscriber closed with %d %q by a publication of 100 KiB (SendQueueBytes 64 KiB)", c.CloseCode(), c.CloseReason())
	}
	if string(f.Data) != e2eFeed("huge", "t", huge, u) {
		t.Fatalf("got %.100s, want the FEED", f.Data)
	}
}
