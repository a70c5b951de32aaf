package clustertest

import (
	"encoding/json"
	"fmt"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/sss-go/sss/protocol"
)

// rawClient speaks PROTOCOL.md with raw frames over gorilla/websocket:
// one reader goroutine records every decoded frame; writes are serialised.
type rawClient struct {
	name string
	ws   *websocket.Conn
	wmu  sync.Mutex

	mu      sync.Mutex
	frames  []*protocol.Message
	bad     []string // frames the client could not decode
	readErr error
	notify  chan struct{}
	done    chan struct{}
	nextID  int
}

// dialRaw connects to wsURL (user, when not empty, as the "user" query
// parameter), sends BEGIN and waits for its reply. The connection is
// closed when the test ends.
func dialRaw(t *testing.T, name, wsURL, user string) (*rawClient, *protocol.Message) {
	t.Helper()
	c := connectRaw(t, name, wsURL, user)
	c.send(t, `{"sys":3}`)
	begin := c.waitFrame(t, "BEGIN reply", func(m *protocol.Message) bool { return m.Sys == protocol.SysBegin })
	return c, begin
}

// connectRaw connects like dialRaw but sends nothing: a reconnecting
// client's first frame is SYNC.
func connectRaw(t *testing.T, name, wsURL, user string) *rawClient {
	t.Helper()
	u := wsURL
	if user != "" {
		u += "?user=" + url.QueryEscape(user)
	}
	d := websocket.Dialer{HandshakeTimeout: wait}
	ws, resp, err := d.Dial(u, nil)
	if err != nil {
		t.Fatalf("%s: dial %s: %v", name, u, err)
	}
	resp.Body.Close()
	c := &rawClient{name: name, ws: ws, notify: make(chan struct{}, 1), done: make(chan struct{})}
	go c.read()
	t.Cleanup(c.close)
	return c
}

// closeErr waits until the server ends the connection and returns why.
func (c *rawClient) closeErr(t *testing.T) error {
	t.Helper()
	select {
	case <-c.done:
	case <-time.After(wait):
		t.Fatalf("%s: connection still open after %v", c.name, wait)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.readErr
}

func (c *rawClient) read() {
	defer close(c.done)
	lim := protocol.Limits{MaxFrameBytes: -1, MaxDepth: -1}
	for {
		_, data, err := c.ws.ReadMessage()
		if err != nil {
			c.mu.Lock()
			c.readErr = err
			c.mu.Unlock()
			c.poke()
			return
		}
		if string(data) == protocol.Heartbeat {
			c.write([]byte(protocol.Heartbeat))
			continue
		}
		m, derr := protocol.DecodeServer(data, lim)
		c.mu.Lock()
		if derr != nil {
			c.bad = append(c.bad, fmt.Sprintf("%s: %v", data, derr))
		} else {
			c.frames = append(c.frames, m)
		}
		c.mu.Unlock()
		c.poke()
	}
}

func (c *rawClient) poke() {
	select {
	case c.notify <- struct{}{}:
	default:
	}
}

func (c *rawClient) write(b []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	_ = c.ws.SetWriteDeadline(time.Now().Add(wait))
	return c.ws.WriteMessage(websocket.TextMessage, b)
}

// send writes one frame; it fails the test on error (test goroutine only).
func (c *rawClient) send(t *testing.T, frame string) {
	t.Helper()
	if err := c.write([]byte(frame)); err != nil {
		t.Fatalf("%s: send %s: %v", c.name, frame, err)
	}
}

// close sends a normal close frame, closes the connection and waits for
// the reader.
func (c *rawClient) close() {
	c.wmu.Lock()
	_ = c.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
	c.wmu.Unlock()
	select {
	case <-c.done: // the server echoed the close and ended the connection
	case <-time.After(5 * time.Second):
	}
	c.ws.Close()
	<-c.done
}

// snapshot returns the frames received so far.
func (c *rawClient) snapshot() []*protocol.Message {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]*protocol.Message(nil), c.frames...)
}

// waitUntil waits until cond holds on the frames received so far,
// failing the test after wait, on an undecodable frame, or when the
// connection ends first.
func (c *rawClient) waitUntil(t *testing.T, what string, cond func([]*protocol.Message) bool) {
	t.Helper()
	deadline := time.NewTimer(wait)
	defer deadline.Stop()
	for {
		c.mu.Lock()
		frames, bad, rerr := append([]*protocol.Message(nil), c.frames...), c.bad, c.readErr
		c.mu.Unlock()
		if len(bad) > 0 {
			t.Fatalf("%s: undecodable frames from the server: %q", c.name, bad)
		}
		if cond(frames) {
			return
		}
		if rerr != nil {
			t.Fatalf("%s: connection ended (%v) while waiting for %s", c.name, rerr, what)
		}
		select {
		case <-c.notify:
		case <-deadline.C:
			t.Fatalf("%s: timed out after %v waiting for %s (%d frames)", c.name, wait, what, len(frames))
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
	c.mu.Lock()
	defer c.mu.Unlock()
	c.nextID++
	return fmt.Sprint(c.nextID)
}

// subscribe subscribes to channel and returns the position it was granted.
func (c *rawClient) subscribe(t *testing.T, channel string) protocol.UID {
	t.Helper()
	id := c.id()
	c.send(t, fmt.Sprintf(`{"sys":1,"channel":%q,"query":null,"id":%s}`, channel, id))
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
	c.send(t, fmt.Sprintf(`{"sys":5,"topic":%q,"msg":%s,"id":%s}`, topic, b, id))
	return c.waitFrame(t, "RESPONSE to "+topic, func(m *protocol.Message) bool {
		return m.Sys == protocol.SysResponse && string(m.ID) == id
	})
}
