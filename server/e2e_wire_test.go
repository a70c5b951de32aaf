package server_test

// The raw test client: testutil.WireConn, with helpers to expect exact
// frames (docs/protocol.md), decoded fields, requests and replies.

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"reflect"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/sss-go/sss/internal/testutil"
	"github.com/sss-go/sss/protocol"
)

// e2eConn is a raw protocol client: testutil.WireConn (frames as given,
// every frame the server sends in order, heartbeats answered) with the
// protocol-level expectations of these tests.
type e2eConn struct {
	*testutil.WireConn
	t      *testing.T
	nextID atomic.Int64
}

// dial connects to the app with the given raw query string (may be "").
func (a *e2eApp) dial(t *testing.T, query string) *e2eConn {
	t.Helper()
	c, resp, err := a.dialRaw(t, query, nil)
	if err != nil {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		t.Fatalf("dial %s?%s: %v (HTTP %d)", a.url, query, err, status)
	}
	return c
}

// dialRaw connects and returns the handshake response and error as they are.
func (a *e2eApp) dialRaw(t *testing.T, query string, hdr http.Header) (*e2eConn, *http.Response, error) {
	t.Helper()
	return e2eDialURL(t, a.url, query, testutil.WireOptions{Header: hdr})
}

// e2eDialURL connects to base?query.
func e2eDialURL(t *testing.T, base, query string, opts testutil.WireOptions) (*e2eConn, *http.Response, error) {
	t.Helper()
	u := base
	if query != "" {
		u += "?" + query
	}
	opts.Timeout = e2eTimeout
	wc, resp, err := testutil.DialWire(t, u, opts)
	if err != nil {
		return nil, resp, err
	}
	return &e2eConn{WireConn: wc, t: t}, resp, nil
}

// id returns a fresh request id (as JSON text).
func (c *e2eConn) id() string { return strconv.FormatInt(c.nextID.Add(1), 10) }

// e2eMsg is a decoded server frame: its keys with their raw JSON values, and
// the frame's text.
type e2eMsg struct {
	raw    string
	fields map[string]json.RawMessage
	keys   []string // in frame order
}

// e2eParse decodes one frame as a JSON object and checks that it is a
// single compact object whose first key is "sys" (or, for error frames,
// whose only key is "err").
func e2eParse(t *testing.T, frame string) e2eMsg {
	t.Helper()
	m := e2eMsg{raw: frame, fields: map[string]json.RawMessage{}}
	if err := json.Unmarshal([]byte(frame), &m.fields); err != nil {
		t.Fatalf("server frame is not a JSON object: %v: %.300q", err, frame)
	}
	dec := json.NewDecoder(strings.NewReader(frame))
	if _, err := dec.Token(); err != nil { // {
		t.Fatalf("frame %q: %v", frame, err)
	}
	for dec.More() {
		k, err := dec.Token()
		if err != nil {
			t.Fatalf("frame %q: %v", frame, err)
		}
		m.keys = append(m.keys, k.(string))
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			t.Fatalf("frame %q: %v", frame, err)
		}
	}
	if _, err := dec.Token(); err != nil { // }
		t.Fatalf("frame %q: %v", frame, err)
	}
	if dec.More() {
		t.Fatalf("frame holds more than one JSON value: %.300q", frame)
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, []byte(frame)); err != nil || buf.String() != frame {
		t.Errorf("frame is not compact JSON: %.300q", frame)
	}
	switch {
	case len(m.keys) > 0 && m.keys[0] == "sys":
	case len(m.keys) == 1 && m.keys[0] == "err":
		m.checkErrObject(t, "err")
	default:
		t.Fatalf("frame's first key is not \"sys\" (and it is not an error frame): %.300q", frame)
	}
	if _, ok := m.fields["err"]; ok && m.keys[0] == "sys" {
		m.checkErrObject(t, "err")
	}
	return m
}

// checkErrObject checks that fields[key] is {"name","message","code"} with
// all three strings present.
func (m e2eMsg) checkErrObject(t *testing.T, key string) {
	t.Helper()
	var e map[string]any
	if err := json.Unmarshal(m.fields[key], &e); err != nil || e == nil {
		t.Fatalf("%q is not an error object in %s", key, m.raw)
	}
	for _, k := range []string{"name", "message", "code"} {
		if _, ok := e[k].(string); !ok {
			t.Errorf("error object %s lacks string %q (docs/protocol.md, 3.2: all three always present) in %s", m.fields[key], k, m.raw)
		}
	}
}

// nextMsg returns the next frame decoded.
func (c *e2eConn) nextMsg() e2eMsg {
	c.t.Helper()
	return e2eParse(c.t, c.Next())
}

// sys returns the frame's sys code (0 for error frames).
func (m e2eMsg) sys() int {
	raw, ok := m.fields["sys"]
	if !ok {
		return 0
	}
	n, err := strconv.Atoi(string(raw))
	if err != nil {
		return -1
	}
	return n
}

// str returns a string field ("" when absent or not a string).
func (m e2eMsg) str(key string) string {
	var s string
	if raw, ok := m.fields[key]; ok {
		_ = json.Unmarshal(raw, &s)
	}
	return s
}

// has reports whether the frame has key.
func (m e2eMsg) has(key string) bool { _, ok := m.fields[key]; return ok }

// errCode returns the code of the frame's err object ("" if none).
func (m e2eMsg) errCode() string { return e2eErrField(m.fields["err"], "code") }

// errField returns a field of the frame's err object.
func (m e2eMsg) errField(f string) string { return e2eErrField(m.fields["err"], f) }

func e2eErrField(raw json.RawMessage, f string) string {
	var e map[string]any
	if raw == nil || json.Unmarshal(raw, &e) != nil {
		return ""
	}
	s, _ := e[f].(string)
	return s
}

// e2eJSONEqual reports whether two JSON texts hold equal values.
func e2eJSONEqual(a, b string) bool {
	var va, vb any
	da := json.NewDecoder(strings.NewReader(a))
	da.UseNumber()
	db := json.NewDecoder(strings.NewReader(b))
	db.UseNumber()
	if da.Decode(&va) != nil || db.Decode(&vb) != nil {
		return false
	}
	return reflect.DeepEqual(va, vb)
}

// expectExact reads the next frame and requires it byte for byte.
func (c *e2eConn) expectExact(want string) {
	c.t.Helper()
	got := c.Next()
	if got != want {
		c.t.Fatalf("frame mismatch\n got: %.400s\nwant: %.400s", got, want)
	}
	if got != protocol.Heartbeat {
		e2eParse(c.t, got)
	}
}

// expectJSON reads the next frame and requires it to equal want as JSON
// (any key order), with "sys" first.
func (c *e2eConn) expectJSON(want string) e2eMsg {
	c.t.Helper()
	m := c.nextMsg()
	if !e2eJSONEqual(m.raw, want) {
		c.t.Fatalf("frame mismatch\n got: %.400s\nwant: %.400s", m.raw, want)
	}
	return m
}

// expectErrFrame reads the next frame and requires {"err":{...code...}}.
func (c *e2eConn) expectErrFrame(code string) e2eMsg {
	c.t.Helper()
	m := c.nextMsg()
	if m.has("sys") || m.errCode() != code {
		c.t.Fatalf("got %s, want an error frame {\"err\":{...\"code\":%q}}", m.raw, code)
	}
	return m
}

// expectOpen requires the socket to be open and to have nothing queued for
// the client before an echo ask's response (a quiet check: frames of
// something the socket must not receive would come first when the server
// already queued them).
func (c *e2eConn) expectOpen() {
	c.t.Helper()
	c.ask("echo", `"ping-`+c.id()+`"`)
}

// drainOpen sends an echo ask and skips every frame before its response:
// the socket is open, whatever it had queued.
func (c *e2eConn) drainOpen() {
	c.t.Helper()
	id := c.id()
	c.Send(`{"sys":5,"topic":"echo","msg":"drain","id":` + id + `}`)
	for {
		m := c.nextMsg()
		if m.sys() == 7 && string(m.fields["id"]) == id {
			return
		}
	}
}

// ask sends an ASK and requires the next frame to be its RESPONSE with a
// msg; it returns the msg.
func (c *e2eConn) ask(topic, msg string) string {
	c.t.Helper()
	m := c.askRaw(topic, msg)
	if m.has("err") {
		c.t.Fatalf("ask %q: got error response %s", topic, m.raw)
	}
	return string(m.fields["msg"])
}

// askRaw sends an ASK (msg "" = no msg key) and returns the response frame,
// which must be the next frame, carry the id and have sys 7.
func (c *e2eConn) askRaw(topic, msg string) e2eMsg {
	c.t.Helper()
	id := c.id()
	if msg == "" {
		c.Send(`{"sys":5,"topic":` + strconv.Quote(topic) + `,"id":` + id + `}`)
	} else {
		c.Send(`{"sys":5,"topic":` + strconv.Quote(topic) + `,"msg":` + msg + `,"id":` + id + `}`)
	}
	m := c.nextMsg()
	if m.sys() != 7 || string(m.fields["id"]) != id {
		c.t.Fatalf("ask %q id %s: got %s, want its RESPONSE", topic, id, m.raw)
	}
	if m.has("err") == m.has("msg") {
		c.t.Fatalf("RESPONSE must hold exactly one of msg and err: %s", m.raw)
	}
	return m
}

// begin sends BEGIN and returns the reply.
func (c *e2eConn) begin() e2eMsg {
	c.t.Helper()
	c.Send(`{"sys":3}`)
	m := c.nextMsg()
	if m.sys() != 3 {
		c.t.Fatalf("BEGIN: got %s, want a BEGIN reply", m.raw)
	}
	return m
}

// subscribe subscribes to channel and requires success; it returns lastUid.
func (c *e2eConn) subscribe(channel string) protocol.UID {
	c.t.Helper()
	m := c.subscribeRaw(channel, "")
	if string(m.fields["result"]) != "true" {
		c.t.Fatalf("SUBSCRIBE %q: got %s, want result true", channel, m.raw)
	}
	uid, err := protocol.ParseUID(m.str("lastUid"))
	if err != nil {
		c.t.Fatalf("SUBSCRIBE %q: lastUid %s is not a uid: %v", channel, m.fields["lastUid"], err)
	}
	return uid
}

// subscribeRaw sends a SUBSCRIBE (query "" = no query key) and returns the
// reply, which must be the next frame and carry the id.
func (c *e2eConn) subscribeRaw(channel, query string) e2eMsg {
	c.t.Helper()
	id := c.id()
	f := `{"sys":1,"channel":` + strconv.Quote(channel)
	if query != "" {
		f += `,"query":` + query
	}
	c.Send(f + `,"id":` + id + `}`)
	m := c.nextMsg()
	if m.sys() != 1 || string(m.fields["id"]) != id {
		c.t.Fatalf("SUBSCRIBE %q id %s: got %s, want its reply", channel, id, m.raw)
	}
	return m
}

// whoami returns the socket's id as the server knows it.
func (c *e2eConn) whoami() string {
	c.t.Helper()
	var w struct{ ID string }
	if err := json.Unmarshal([]byte(c.ask("whoami", "")), &w); err != nil || w.ID == "" {
		c.t.Fatalf("whoami: bad answer: %v", err)
	}
	return w.ID
}

// expectFeed reads the next frame and requires exactly the FEED
// {"sys":8,"topic":...,"msg":...,"channel":...,"uid":...}, byte for byte.
func (c *e2eConn) expectFeed(channel, topic, msg string, uid protocol.UID) {
	c.t.Helper()
	c.expectExact(e2eFeed(channel, topic, msg, uid))
}

// e2eFeed is the exact FEED frame (docs/protocol.md, "5.5 FEED").
func e2eFeed(channel, topic, msg string, uid protocol.UID) string {
	return `{"sys":8,"topic":` + strconv.Quote(topic) + `,"msg":` + msg + `,"channel":` + strconv.Quote(channel) + `,"uid":"` + uid.String() + `"}`
}

// e2eUpdateSub is the exact UPDATESUB frame (docs/protocol.md, "5.6
// UPDATESUB").
func e2eUpdateSub(channel string, uid protocol.UID) string {
	return `{"sys":12,"channel":` + strconv.Quote(channel) + `,"uid":"` + uid.String() + `"}`
}

// e2eMustUID parses a uid or fails.
func e2eMustUID(t *testing.T, s string) protocol.UID {
	t.Helper()
	u, err := protocol.ParseUID(s)
	if err != nil {
		t.Fatalf("%q is not a uid: %v", s, err)
	}
	return u
}

// e2eCtx returns a context bounded by e2eTimeout.
func e2eCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), e2eTimeout)
	t.Cleanup(cancel)
	return ctx
}
