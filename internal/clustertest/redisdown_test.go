package clustertest

import (
	"context"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/sss-go/sss/internal/testutil"
	"github.com/sss-go/sss/protocol"
	"github.com/sss-go/sss/server"
)

// TestRedisDownBoundedReplies: with redis-server stopped under a server on
// the mongoredis scaler (BackendTimeout 300 ms), a SUBSCRIBE to a new
// channel is answered "unavailable" within a bound, a SYNC and the BEGIN of
// a user session close with 1013, a client that closes while its
// SUBSCRIBE waits on the backend frees its socket, and Shutdown with a 3 s
// context returns nil.
func TestRedisDownBoundedReplies(t *testing.T) {
	testutil.CheckLeaks(t)
	cl := newCluster(t)
	if !cl.redis.CanRestart() {
		t.Skip("SSS_TEST_REDIS_URL: the shared Redis cannot be restarted")
	}
	in := cl.startInstance(t, "server", server.Options{
		BackendTimeout: 300 * time.Millisecond,
		ShutdownSpread: -1,
		SessionParser: func(r *http.Request) (*server.Session, error) {
			return &server.Session{User: r.URL.Query().Get("user")}, nil
		},
	}, nil)
	held, _ := dialRaw(t, "held", in.url, "")
	held.subscribe(t, "held") // live while Redis is up: served locally later

	cl.redis.Stop()
	defer cl.redis.Start() // the scaler closes quickly at cleanup

	// bound: a failure bound on a loaded machine, far below "never".
	const bound = 15 * time.Second

	sub, _ := dialRaw(t, "subscriber", in.url, "")
	start := time.Now()
	id := sub.id()
	sub.Send(`{"sys":1,"channel":"fresh","id":` + id + `}`)
	m := sub.waitFrame(t, "SUBSCRIBE reply", func(m *protocol.Message) bool {
		return m.Sys == protocol.SysSubscribe && string(m.ID) == id
	})
	if m.Result || m.Err == nil || m.Err.Code != protocol.CodeUnavailable {
		t.Fatalf("SUBSCRIBE with Redis down: result %v, err %+v; want false, unavailable", m.Result, m.Err)
	}
	if d := time.Since(start); d > bound {
		t.Errorf("SUBSCRIBE answered after %v", d)
	}

	syncer := connectRaw(t, "syncer", in.url, "")
	syncer.Send(`{"sys":4,"subscriptions":[{"channel":"other","lastUid":null,"query":null}]}`)
	expectCloseCode(t, syncer, protocol.CloseTryAgainLater)

	user := connectRaw(t, "user", in.url, "ann")
	user.Send(`{"sys":3}`)
	expectCloseCode(t, user, protocol.CloseTryAgainLater)

	// A client that closes while its SUBSCRIBE waits frees its socket.
	quitter := connectRaw(t, "quitter", in.url, "")
	quitter.Send(`{"sys":1,"channel":"third","id":1}`)
	quitter.Close()
	testutil.WaitFor(t, bound, func() bool { return in.srv.Stats().Sockets == 2 }, "only held and subscriber left")

	// A SUBSCRIBE in progress does not hold Shutdown up.
	sub.Send(`{"sys":1,"channel":"fourth","id":"last"}`)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if err := in.srv.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown(3 s) with Redis down: %v", err)
	}
	expectCloseCode(t, held, protocol.CloseGoingAway)
	expectCloseCode(t, sub, protocol.CloseGoingAway)
	if n := in.srv.Stats().Sockets; n != 0 {
		t.Errorf("%d sockets left after Shutdown", n)
	}
}

// expectCloseCode waits until the server ends c's connection and requires
// close code code.
func expectCloseCode(t *testing.T, c *rawClient, code int) {
	t.Helper()
	err := c.closeErr(t)
	var ce *websocket.CloseError
	if !errors.As(err, &ce) || ce.Code != code {
		t.Fatalf("%s: connection ended with %v, want close %d", c.name, err, code)
	}
}
