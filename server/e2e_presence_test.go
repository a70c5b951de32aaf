package server_test

// Presence tells and channel options chosen by rule or by the
// subscription parser.

import (
	"context"
	"encoding/json"
	"errors"
	"testing"

	"github.com/sss-go/sss/internal/testutil"
	"github.com/sss-go/sss/protocol"
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
