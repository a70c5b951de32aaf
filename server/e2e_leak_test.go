package server_test

import (
	"testing"
	"time"

	"github.com/sss-go/sss/internal/testutil"
	"github.com/sss-go/sss/scaler"
	"github.com/sss-go/sss/server"
)

// TestE2ENoGoroutineLeft: after Shutdown, nothing the servers, their own
// scalers, sockets, writers, asks and heartbeats started is left running.
func TestE2ENoGoroutineLeft(t *testing.T) {
	testutil.CheckLeaks(t) // first: its check runs after every other cleanup
	o := e2eOptions()
	o.HeartbeatInterval = time.Second
	o.Channels = []server.ChannelRule{{Pattern: "p-*", Options: server.ChannelOptions{Presence: true}}}
	a := startE2E(t, nil, o) // the server's own memory scaler
	be := scaler.NewMemoryBackend(scaler.MemoryOptions{Logger: e2eLogger()})
	b := startE2E(t, be.Instance(), o)
	c1 := a.dial(t, "user=alice")
	c1.begin()
	c1.subscribe("p-1")
	c2 := b.dial(t, "user=bob")
	c2.begin()
	c2.subscribe("p-1")
	a.publish("p-1", "t", "1")
	c1.drainOpen()
	c1.Send(`{"sys":5,"topic":"slow","id":"s"}`) // left running: cancelled by the close
	a.waitSlowStarted()
	c2.Send(`{"sys":5,"topic":"pub","msg":{"channel":"p-1","topic":"t","msg":2,"exclude":true},"id":"p"}`)
	if err := b.srv.BootUser(e2eCtx(t), "bob", "bye"); err != nil {
		t.Fatal(err)
	}
	c2.WaitClosed()
}
