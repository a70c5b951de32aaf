package server_test

// Heartbeats (docs/protocol.md, "8. Heartbeats"): answered, unanswered, in
// the middle of data, and while a frame is slow to handle.

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/sss-go/sss/protocol"
	"github.com/sss-go/sss/server"
)

func TestE2EHeartbeat(t *testing.T) {
	const interval = 300 * time.Millisecond
	o := e2eOptions()
	o.HeartbeatInterval = interval
	a := startE2E(t, nil, o)
	waitH := func(t *testing.T, c *e2eConn, n int) {
		t.Helper()
		for i := 0; i < n; i++ {
			select {
			case <-c.Heartbeats():
			case <-c.Done():
				t.Fatalf("closed with %d %q after %d heartbeats", c.CloseCode(), c.CloseReason(), c.HeartbeatCount())
			case <-time.After(e2eTimeout):
				t.Fatalf("no heartbeat within %v", e2eTimeout)
			}
		}
	}
	t.Run("answered stays open", func(t *testing.T) {
		c := a.dial(t, "")
		m := c.begin()
		if string(m.fields["prot"]) != `{"v":1,"hb":true,"hbInterval":300,"hbThreshold":2500}` {
			t.Errorf("prot %s", m.fields["prot"])
		}
		waitH(t, c, 6)
		c.expectOpen()
		// An SSS client closes with 4100 after hbInterval + hbThreshold
		// without "h": the gaps stay well within that, and "h" does not
		// come much faster than the interval either.
		times := c.HeartbeatTimes()
		for i := 1; i < len(times); i++ {
			if gap := times[i].Sub(times[i-1]); gap > interval+2500*time.Millisecond {
				t.Errorf("heartbeat gap %v, interval %v", gap, interval)
			}
		}
		if avg := times[len(times)-1].Sub(times[0]) / time.Duration(len(times)-1); avg < interval/2 {
			t.Errorf("heartbeats every %v on average, interval %v", avg, interval)
		}
	})
	t.Run("unanswered closes 4003", func(t *testing.T) {
		c := a.dial(t, "")
		c.AnswerHeartbeats(false)
		c.begin()
		c.ExpectClose(protocol.CloseHeartbeatTimeout)
		if c.HeartbeatCount() < 1 {
			t.Error("closed 4003 without ever sending h")
		}
	})
	t.Run("h flows with data", func(t *testing.T) {
		c := a.dial(t, "")
		c.begin() // heartbeats start with BEGIN or SYNC
		pos := c.subscribe("flood")
		seq := pos.Seq
		start := c.HeartbeatCount()
		deadline := time.Now().Add(e2eTimeout)
		for c.HeartbeatCount() < start+4 {
			if time.Now().After(deadline) {
				t.Fatalf("only %d heartbeats while data flowed", c.HeartbeatCount()-start)
			}
			var last protocol.UID
			for i := 0; i < 20; i++ {
				last = a.publish("flood", "t", `"`+strings.Repeat("d", 500)+`"`)
			}
			for seq < last.Seq {
				m := c.nextMsg()
				seq++
				if m.sys() != 8 || m.str("uid") != (protocol.UID{Epoch: pos.Epoch, Seq: seq}).String() {
					t.Fatalf("got %s, want FEED seq %d", m.raw, seq)
				}
			}
		}
		c.expectOpen()
	})
}

// TestSlowParserKeepsHeartbeat: with a 300 ms heartbeat, a subscription
// parser that takes a second does not get the socket closed with 4003:
// its SUBSCRIBE and SYNC succeed and the socket stays open.
func TestSlowParserKeepsHeartbeat(t *testing.T) {
	o := e2eOptions()
	o.HeartbeatInterval = 300 * time.Millisecond
	o.SubscriptionParser = func(ctx context.Context, sock *server.Socket, channel string, query json.RawMessage) (*server.ChannelOptions, error) {
		if strings.HasPrefix(channel, "slow") {
			time.Sleep(time.Second) // slow work of the application, not synchronisation
		}
		return nil, nil
	}
	a := startE2E(t, nil, o)
	c := a.dial(t, "")
	c.begin()
	c.subscribe("slow-1")
	pos := a.position("slow-2")
	r := c.sync(e2eSyncFrame(e2eEntry("slow-2", e2eQ(pos), "")))
	if !r.result["slow-2"] {
		t.Fatalf("SYNC: %s", r.msg.raw)
	}
	c.expectOpen()
	if n := c.HeartbeatCount(); n < 3 {
		t.Errorf("%d heartbeats in 2 s of slow parsing, want them to go on", n)
	}
}
