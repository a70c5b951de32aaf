package server_test

// Presence tells (docs/protocol.md, "5.8 Presence events"), channel
// options chosen by rule or by the subscription parser, and presence
// writes made only where presence is on.

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
	"testing"

	"github.com/sss-go/sss/internal/testutil"
	"github.com/sss-go/sss/protocol"
	"github.com/sss-go/sss/scaler"
	"github.com/sss-go/sss/server"
)

func TestE2EPresence(t *testing.T) {
	o := e2eOptions()
	o.Channels = []server.ChannelRule{{Pattern: "pres-*", Options: server.ChannelOptions{Presence: true}}}
	a := startE2E(t, nil, o)
	type presence struct {
		Channel, Event string
		Member         struct{ User string }
	}
	// nextPresence returns the next _presence tell that is not about the
	// socket's own user; every other frame fails the test.
	nextPresence := func(t *testing.T, c *e2eConn, self string) presence {
		t.Helper()
		for {
			m := c.nextMsg()
			if m.sys() != 6 || m.str("topic") != protocol.PresenceTopic || len(m.keys) != 3 {
				t.Fatalf("got %s, want a _presence TELL", m.raw)
			}
			var p presence
			if err := json.Unmarshal(m.fields["msg"], &p); err != nil {
				t.Fatalf("presence msg %s: %v", m.fields["msg"], err)
			}
			var raw map[string]json.RawMessage
			_ = json.Unmarshal(m.fields["msg"], &raw)
			var member map[string]json.RawMessage
			_ = json.Unmarshal(raw["member"], &member)
			if _, ok := member["user"]; !ok {
				t.Errorf("presence member has no user key: %s", m.raw)
			}
			if p.Member.User == self {
				continue
			}
			return p
		}
	}
	alice := a.dial(t, "user=alice")
	alice.begin()
	alice.subscribe("pres-1")
	bob := a.dial(t, "user=bob")
	bob.begin()
	bob.subscribe("pres-1")
	if p := nextPresence(t, alice, "alice"); p.Channel != "pres-1" || p.Event != "join" || p.Member.User != "bob" {
		t.Fatalf("alice got %+v, want bob's join", p)
	}
	testutil.WaitFor(t, e2eTimeout, func() bool {
		n, err := a.srv.Count(context.Background(), "pres-1")
		return err == nil && n == 2
	}, "Count(pres-1) == 2")
	members, err := a.srv.Presence(e2eCtx(t), "pres-1")
	if err != nil {
		t.Fatal(err)
	}
	users := map[string]bool{}
	for _, m := range members {
		users[m.User] = true
	}
	if len(members) != 2 || !users["alice"] || !users["bob"] {
		t.Fatalf("Presence = %+v, want alice and bob", members)
	}
	bob.Send(`{"sys":2,"channel":"pres-1"}`)
	if p := nextPresence(t, alice, "alice"); p.Event != "leave" || p.Member.User != "bob" {
		t.Fatalf("alice got %+v, want bob's leave", p)
	}
	carol := a.dial(t, "user=carol")
	carol.subscribe("pres-1")
	if p := nextPresence(t, alice, "alice"); p.Event != "join" || p.Member.User != "carol" {
		t.Fatalf("alice got %+v, want carol's join", p)
	}
	carol.SendClose(protocol.CloseByClient, "bye")
	carol.WaitClosed()
	if p := nextPresence(t, alice, "alice"); p.Event != "leave" || p.Member.User != "carol" {
		t.Fatalf("alice got %+v, want carol's leave on disconnect", p)
	}
	testutil.WaitFor(t, e2eTimeout, func() bool {
		n, err := a.srv.Count(context.Background(), "pres-1")
		return err == nil && n == 1
	}, "Count(pres-1) == 1")
	// A channel without presence sends no presence tells.
	alice.subscribe("plain")
	bob.subscribe("plain")
	u := a.publish("plain", "t", "1")
	bob.expectFeed("plain", "t", "1", u)
	alice.expectFeed("plain", "t", "1", u)
	alice.expectOpen()
}

func TestE2EParserChannelOptions(t *testing.T) {
	a := startE2E(t, nil, e2eOptions())
	t.Run("presence from the parser", func(t *testing.T) {
		c1 := a.dial(t, "user=one")
		c1.subscribe("dynpres")
		c2 := a.dial(t, "user=two")
		c2.subscribe("dynpres")
		m := c1.nextMsg()
		var p struct {
			Channel, Event string
			Member         struct{ User string }
		}
		if m.sys() != 6 || m.str("topic") != protocol.PresenceTopic || json.Unmarshal(m.fields["msg"], &p) != nil ||
			p.Channel != "dynpres" || p.Event != "join" || p.Member.User != "two" {
			t.Fatalf("got %s, want two's join", m.raw)
		}
	})
	t.Run("max subscribers from the parser", func(t *testing.T) {
		c1 := a.dial(t, "")
		c1.subscribe("dynsmall")
		c2 := a.dial(t, "")
		m := c2.subscribeRaw("dynsmall", "null")
		if string(m.fields["result"]) != "false" {
			t.Fatalf("second subscriber of a 1-subscriber channel: %s", m.raw)
		}
	})
}

// TestE2ECountWithoutPresence: on a channel whose rule has presence off,
// Count and Presence return ErrPresenceOff on every instance, and no
// presence tells are sent.
func TestE2ECountWithoutPresence(t *testing.T) {
	apps := startCluster(t, 2, nil)
	c1 := apps[0].dial(t, "user=a")
	c1.subscribe("counted")
	c2 := apps[1].dial(t, "")
	c2.subscribe("counted")
	for _, app := range apps {
		if _, err := app.srv.Count(e2eCtx(t), "counted"); !errors.Is(err, server.ErrPresenceOff) {
			t.Errorf("Count(counted) = %v, want ErrPresenceOff", err)
		}
		if _, err := app.srv.Presence(e2eCtx(t), "counted"); !errors.Is(err, server.ErrPresenceOff) {
			t.Errorf("Presence(counted) = %v, want ErrPresenceOff", err)
		}
	}
	// No presence tells on a channel without presence.
	c2.Send(`{"sys":2,"channel":"counted"}`)
	c2.expectOpen()
	c1.expectOpen()
}

// joinCounter counts the presence writes a server makes, per channel.
type joinCounter struct {
	*scaler.Memory
	mu     sync.Mutex
	joins  map[string]int
	leaves map[string]int
}

func newJoinCounter() *joinCounter {
	return &joinCounter{
		Memory: scaler.NewMemory(scaler.MemoryOptions{Logger: e2eLogger()}),
		joins:  map[string]int{}, leaves: map[string]int{},
	}
}

func (j *joinCounter) Join(ctx context.Context, channel string, m scaler.Member) error {
	j.mu.Lock()
	j.joins[channel]++
	j.mu.Unlock()
	return j.Memory.Join(ctx, channel, m)
}

func (j *joinCounter) Leave(ctx context.Context, channel, id string) error {
	j.mu.Lock()
	j.leaves[channel]++
	j.mu.Unlock()
	return j.Memory.Leave(ctx, channel, id)
}

func (j *joinCounter) counts(channel string) (joins, leaves int) {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.joins[channel], j.leaves[channel]
}

// TestPresenceWritesOnlyWherePresenceIsOn: the server records presence
// (scaler Join/Leave) only for subscriptions whose options have Presence
// on; Count and Presence of a channel whose rule has presence off return
// ErrPresenceOff (the rule decides, whatever a parser chose per socket).
func TestPresenceWritesOnlyWherePresenceIsOn(t *testing.T) {
	sc := newJoinCounter()
	o := e2eOptions()
	o.Channels = []server.ChannelRule{{Pattern: "pres-*", Options: server.ChannelOptions{Presence: true}}}
	a := startE2E(t, sc, o)
	c := a.dial(t, "user=pat")
	c.begin()
	c.subscribe("plain")
	c.subscribe("pres-1")
	c.subscribe("dynpres") // the test parser turns presence on for this socket
	c.Send(`{"sys":2,"channel":"plain"}`)
	c.Send(`{"sys":2,"channel":"pres-1"}`)
	c.expectOpen() // the unsubscribes are handled
	for _, tc := range []struct {
		channel       string
		joins, leaves int
	}{{"plain", 0, 0}, {"pres-1", 1, 1}, {"dynpres", 1, 0}, {server.UserChannel("pat"), 0, 0}} {
		if j, l := sc.counts(tc.channel); j != tc.joins || l != tc.leaves {
			t.Errorf("%s: %d joins, %d leaves; want %d, %d", tc.channel, j, l, tc.joins, tc.leaves)
		}
	}
	ctx := e2eCtx(t)
	for _, ch := range []string{"plain", "dynpres", "never-used"} {
		if _, err := a.srv.Count(ctx, ch); !errors.Is(err, server.ErrPresenceOff) {
			t.Errorf("Count(%s) = %v, want ErrPresenceOff", ch, err)
		}
		if _, err := a.srv.Presence(ctx, ch); !errors.Is(err, server.ErrPresenceOff) {
			t.Errorf("Presence(%s) = %v, want ErrPresenceOff", ch, err)
		}
	}
	if n, err := a.srv.Count(ctx, "pres-1"); err != nil || n != 0 {
		t.Errorf("Count(pres-1) = %d, %v; want 0 after the leave", n, err)
	}
}

// TestE2EPresenceFrame: the _presence TELL byte for byte (docs/protocol.md,
// "5.8 Presence events"): user null for a socket without a user, info {}
// when the session attached none.
func TestE2EPresenceFrame(t *testing.T) {
	o := e2eOptions()
	o.Channels = []server.ChannelRule{{Pattern: "pf-*", Options: server.ChannelOptions{Presence: true}}}
	a := startE2E(t, nil, o)
	anon := a.dial(t, "")
	anon.subscribe("pf-1")
	bob := a.dial(t, "user=bob")
	bob.subscribe("pf-1")
	anon.expectExact(`{"sys":6,"topic":"_presence","msg":{"channel":"pf-1","event":"join","member":{"user":"bob","info":{}}}}`)
	other := a.dial(t, "")
	other.subscribe("pf-1")
	bob.expectExact(`{"sys":6,"topic":"_presence","msg":{"channel":"pf-1","event":"join","member":{"user":null,"info":{}}}}`)
	bob.Send(`{"sys":2,"channel":"pf-1"}`)
	other.expectExact(`{"sys":6,"topic":"_presence","msg":{"channel":"pf-1","event":"leave","member":{"user":"bob","info":{}}}}`)
}
