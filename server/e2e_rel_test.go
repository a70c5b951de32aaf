package server_test

// Reliability: heartbeats are answered while a frame is slow to handle; a
// SYNC of a channel the socket holds repeats nothing and skips nothing;
// Publish reports an uncertain outcome as scaler.ErrUncertain.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sss-go/sss/protocol"
	"github.com/sss-go/sss/scaler"
	"github.com/sss-go/sss/server"
)

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

// TestSyncHeldChannelNoRepeats: a SYNC for a channel the socket already
// holds, from a uid behind what the socket was already sent (those FEEDs
// are in flight to the client), recovers neither those again nor skips
// any: every publication reaches the client once.
func TestSyncHeldChannelNoRepeats(t *testing.T) {
	for _, win := range []int{0, -1} {
		t.Run(map[int]string{0: "window", -1: "scaler"}[win], func(t *testing.T) {
			o := e2eOptions()
			o.RecoveryWindow = win
			a := startE2E(t, nil, o)
			c := a.dial(t, "")
			c.subscribe("held")
			var uids []protocol.UID
			for i := 1; i <= 3; i++ {
				uids = append(uids, a.publish("held", "t", fmt.Sprint(i)))
			}
			seen := map[uint64]int{}
			for i := 0; i < 3; i++ { // the FEEDs were sent; the client has not read them when it sends the SYNC
				seen[e2eMustUID(t, c.nextMsg().str("uid")).Seq]++
			}
			r := c.sync(e2eSyncFrame(e2eEntry("held", e2eQ(uids[0]), "")))
			if !r.result["held"] {
				t.Fatalf("SYNC of a held channel: %s", r.msg.raw)
			}
			for _, rec := range r.records {
				seen[e2eMustUID(t, e2eParse(t, rec).str("uid")).Seq]++
			}
			u4 := a.publish("held", "t", "4")
			c.expectFeed("held", "t", "4", u4)
			seen[u4.Seq]++
			for seq := uint64(1); seq <= 4; seq++ {
				if seen[seq] != 1 {
					t.Errorf("seq %d reached the client %d times, want once (records %v)", seq, seen[seq], r.records)
				}
			}
		})
	}
}

// uncertainScaler's Publish stores nothing and reports ErrUncertain.
type uncertainScaler struct{ scaler.Scaler }

func (u uncertainScaler) Publish(ctx context.Context, channel, topic string, msg json.RawMessage, opts scaler.PublishOptions) (protocol.UID, error) {
	return protocol.UID{}, fmt.Errorf("test publish %q: %w", channel, scaler.ErrUncertain)
}

// TestPublishUncertain: an uncertain scaler publish reaches callers of
// Server.Publish and Publisher.Publish, and EventPublish, as an error
// satisfying errors.Is(err, scaler.ErrUncertain) (not ErrUnavailable).
func TestPublishUncertain(t *testing.T) {
	sc := uncertainScaler{scaler.NewMemory(scaler.MemoryOptions{Logger: e2eLogger()})}
	var evErr atomic.Value
	o := e2eOptions()
	o.OnEvent = func(e server.Event) {
		if e.Kind == server.EventPublish && e.Err != nil {
			evErr.Store(e.Err)
		}
	}
	a := startE2E(t, sc, o)
	_, err := a.srv.Publish(e2eCtx(t), "ch", "t", 1, server.PublishOptions{IdempotencyKey: "k"})
	if !errors.Is(err, scaler.ErrUncertain) || errors.Is(err, scaler.ErrUnavailable) {
		t.Errorf("Server.Publish = %v, want an error wrapping scaler.ErrUncertain", err)
	}
	if e, _ := evErr.Load().(error); !errors.Is(e, scaler.ErrUncertain) {
		t.Errorf("EventPublish.Err = %v, want scaler.ErrUncertain", e)
	}
	p, err := server.NewPublisher(sc, server.PublisherOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Publish(e2eCtx(t), "ch", "t", 1, server.PublishOptions{IdempotencyKey: "k"}); !errors.Is(err, scaler.ErrUncertain) {
		t.Errorf("Publisher.Publish = %v, want an error wrapping scaler.ErrUncertain", err)
	}
}
