package server_test

import (
	"context"
	"errors"
	"sync"
	"testing"

	"github.com/sss-go/sss/scaler"
	"github.com/sss-go/sss/server"
)

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
