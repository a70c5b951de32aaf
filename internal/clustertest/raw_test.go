package clustertest

import (
	"encoding/json"
	"fmt"
	"net/url"
	"testing"
	"time"

	"github.com/sss-go/sss/internal/testutil"
	"github.com/sss-go/sss/protocol"
)

// rawClient speaks the wire (docs/protocol.md) in raw frames through
// testutil.WireConn, keeping every frame it received, decoded, so a test
// can wait for a condition on all of them. Its methods run on the test's
// goroutine, except Write (of WireConn), which any goroutine may call.
type rawClient struct {
	*testutil.WireConn
	name   string
	frames []*protocol.Message // received so far, in order
	nextID int
}

// dialRaw connects to wsURL (user, when not empty, as the "user" query
// parameter), sends BEGIN and waits for its reply. The connection is
// closed when the test ends.
func dialRaw(t *testing.T, name, wsURL, user string) (*rawClient, *protocol.Message) {
	t.Helper()
	c := connectRaw(t, name, wsURL, user)
	c.Send(`{"sys":3}`)
	begin := c.waitFrame(t, "BEGIN reply", func(m *protocol.Message) bool { return m.Sys == protocol.SysBegin })
	return c, begin
}

// connectRaw connects like dialRaw but sends nothing: a reconnecting
// client's first frame is SYNC. At the end of the test the client closes
// politely (close frame, wait for the server's echo).
func connectRaw(t *testing.T, name, wsURL, user string) *rawClient {
	t.Helper()
	u := wsURL
	if user != "" {
		u += "?user=" + url.QueryEscape(user)
	}
	wc, _, err := testutil.DialWire(t, u, testutil.WireOptions{Timeout: wait})
	if err != nil {
		t.Fatalf("%s: dial %s: %v", name, u, err)
	}
	c := &rawClient{WireConn: wc, name: name}
	t.Cleanup(c.Close)
	return c
}

// closeErr waits until the server ends the connection and returns why
// (a *websocket.CloseError when it sent a close frame).
func (c *rawClient) closeErr(t *testing.T) error {
	t.Helper()
	c.WaitClosed()
	return c.Err()
}

// take decodes one received frame into c.frames.
func (c *rawClient) take(t *testing.T, f testutil.Frame) {
	t.Helper()
	m, err := protocol.DecodeServer(f.Data, protocol.Limits{MaxFrameBytes: -1, MaxDepth: -1})
	if err != nil {
		t.Fatalf("%s: undecodable frame from the server: %s: %v", c.name, f.Data, err)
	}
	c.frames = append(c.frames, m)
}

// drain takes every frame received and not taken yet.
func (c *rawClient) drain(t *testing.T) {
	t.Helper()
	for {
		f, ok := c.NextFrame(0)
		if !ok {
			return
		}
		c.take(t, f)
	}
}

// snapshot returns the frames received so far.
func (c *rawClient) snapshot(t *testing.T) []*protocol.Message {
	t.Helper()
	c.drain(t)
	return append([]*protocol.Message(nil), c.frames...)
}

// waitUntil waits until cond holds on the frames received so far,
// failing the test after wait, on an undecodable frame, or when the
// connection ends first.
func (c *rawClient) waitUntil(t *testing.T, what string, cond func([]*protocol.Message) bool) {
	t.Helper()
	deadline := time.Now().Add(wait)
	for {
		c.drain(t)
		if cond(c.frames) {
			return
		}
		left := time.Until(deadline)
		if left <= 0 {
			t.Fatalf("%s: timed out after %v waiting for %s (%d frames)", c.name, wait, what, len(c.frames))
		}
		f, ok := c.NextFrame(left)
		if ok {
			c.take(t, f)
			continue
		}
		select {
		case <-c.Done():
			t.Fatalf("%s: connection ended (%v) while waiting for %s", c.name, c.Err(), what)
		default:
		}
	}
}

// waitFrame waits for the first frame matching match and returns it.
func (c *rawClient) waitFrame(t *testing.T, what string, match func(*protocol.Message) bool) *protocol.Message {
	t.Helper()
	var found *protocol.Message
	c.waitUntil(t, what, func(fs []*protocol.Message) bool {
		for _, m := range fs {
			if match(m) {
				found = m
				return true
			}
		}
		return false
	})
	return found
}

// id returns a request id not used before on this client.
func (c *rawClient) id() string {
	c.nextID++
	return fmt.Sprint(c.nextID)
}

// subscribe subscribes to channel and returns the position it was granted.
func (c *rawClient) subscribe(t *testing.T, channel string) protocol.UID {
	t.Helper()
	id := c.id()
	c.Send(fmt.Sprintf(`{"sys":1,"channel":%q,"query":null,"id":%s}`, channel, id))
	m := c.waitFrame(t, "SUBSCRIBE reply", func(m *protocol.Message) bool {
		return m.Sys == protocol.SysSubscribe && string(m.ID) == id
	})
	if !m.Result || m.Channel != channel {
		t.Fatalf("%s: subscribe %s refused: %+v", c.name, channel, m.Err)
	}
	pos, err := protocol.ParseUID(m.LastUID)
	if err != nil {
		t.Fatalf("%s: subscribe %s: lastUid %q: %v", c.name, channel, m.LastUID, err)
	}
	return pos
}

// ask sends an ASK and returns its RESPONSE.
func (c *rawClient) ask(t *testing.T, topic string, msg any) *protocol.Message {
	t.Helper()
	b, err := json.Marshal(msg)
	if err != nil {
		t.Fatal(err)
	}
	id := c.id()
	c.Send(fmt.Sprintf(`{"sys":5,"topic":%q,"msg":%s,"id":%s}`, topic, b, id))
	return c.waitFrame(t, "RESPONSE to "+topic, func(m *protocol.Message) bool {
		return m.Sys == protocol.SysResponse && string(m.ID) == id
	})
}
