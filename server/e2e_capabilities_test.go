package server_test

import (
	"errors"
	"testing"

	"github.com/sss-go/sss/internal/testutil"
	"github.com/sss-go/sss/scaler"
	"github.com/sss-go/sss/server"
)

// coreScaler offers only the required core of scaler.Scaler, none of the
// optional capabilities.
type coreScaler struct{ scaler.Scaler }

// TestCoreOnlyScalerFallbacks: on a scaler with none of the optional
// capabilities, the server falls back as documented: control messages
// reach this instance's sockets, presence and UserOnline see this
// instance, History reads through Position and Since; a Publisher cannot
// broadcast and says so.
func TestCoreOnlyScalerFallbacks(t *testing.T) {
	testutil.CheckLeaks(t)
	mem := scaler.NewMemory(scaler.MemoryOptions{Logger: e2eLogger()})
	o := e2eOptions()
	o.DefaultChannel = server.ChannelOptions{Presence: true}
	a := startE2E(t, coreScaler{mem}, o)
	ctx := e2eCtx(t)

	alice := a.dial(t, "user=alice")
	alice.begin()
	alice.subscribe("room")
	bob := a.dial(t, "user=bob")
	bob.begin()
	bob.subscribe("room")
	alice.expectJSON(`{"sys":6,"topic":"_presence","msg":{"channel":"room","event":"join","member":{"user":"bob","info":{}}}}`)

	if err := a.srv.Broadcast(ctx, "news", map[string]int{"n": 1}); err != nil {
		t.Fatalf("Broadcast: %v", err)
	}
	for _, c := range []*e2eConn{alice, bob} {
		c.expectExact(`{"sys":11,"topic":"news","msg":{"n":1}}`)
	}
	if err := a.srv.TellUser(ctx, "bob", "hi", "there"); err != nil {
		t.Fatalf("TellUser: %v", err)
	}
	bob.expectExact(`{"sys":6,"topic":"hi","msg":"there"}`)

	if n, err := a.srv.Count(ctx, "room"); err != nil || n != 2 {
		t.Fatalf("Count = %d, %v; want the 2 local members", n, err)
	}
	if on, err := a.srv.UserOnline(ctx, "alice"); err != nil || !on {
		t.Fatalf("UserOnline(alice) = %v, %v; want true", on, err)
	}
	if on, err := a.srv.UserOnline(ctx, "carol"); err != nil || on {
		t.Fatalf("UserOnline(carol) = %v, %v; want false", on, err)
	}

	var uids []string
	for i := 1; i <= 5; i++ {
		u, err := a.srv.Publish(ctx, "room", "n", i, server.PublishOptions{})
		if err != nil {
			t.Fatal(err)
		}
		uids = append(uids, u.String())
	}
	h, err := a.srv.History(ctx, "room", 3)
	if err != nil || len(h) != 3 || h[0].UID.String() != uids[2] || h[2].UID.String() != uids[4] {
		t.Fatalf("History(3) = %v, %v; want the uids %v", h, err, uids[2:])
	}

	pub, err := server.NewPublisher(coreScaler{mem}, server.PublisherOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := pub.Broadcast(ctx, "news", 1); !errors.Is(err, server.ErrNotSupported) {
		t.Fatalf("Publisher.Broadcast without a control plane = %v, want ErrNotSupported", err)
	}
	if _, err := pub.Publish(ctx, "room", "n", 6, server.PublishOptions{}); err != nil {
		t.Fatalf("Publisher.Publish = %v", err)
	}
}

// TestCapabilitiesUsed: a scaler that offers the capabilities is used for
// them (the memory scaler shares presence and users across instances).
func TestCapabilitiesUsed(t *testing.T) {
	testutil.CheckLeaks(t)
	be := scaler.NewMemoryBackend(scaler.MemoryOptions{Logger: e2eLogger()})
	o := e2eOptions()
	o.DefaultChannel = server.ChannelOptions{Presence: true}
	a := startE2E(t, be.Instance(), o)
	b := startE2E(t, be.Instance(), o)
	ctx := e2eCtx(t)
	alice := a.dial(t, "user=alice")
	alice.begin()
	alice.subscribe("room")
	testutil.WaitFor(t, e2eTimeout, func() bool {
		n, err := b.srv.Count(ctx, "room")
		return err == nil && n == 1
	}, "B to count A's member")
	if on, err := b.srv.UserOnline(ctx, "alice"); err != nil || !on {
		t.Fatalf("B: UserOnline(alice) = %v, %v; want true through the scaler", on, err)
	}
}
