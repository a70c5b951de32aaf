package server_test

// The upgrade and the session over real WebSockets (docs/protocol.md, "1.
// Transport" and "4. Session start"): the session parser, refusals,
// origins, compression, plain HTTP, BEGIN and the user channel.

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sss-go/sss/internal/testutil"
	"github.com/sss-go/sss/protocol"
	"github.com/sss-go/sss/server"
)

func TestE2ESessionRefused(t *testing.T) {
	t.Run("close 4001 with the reason", func(t *testing.T) {
		a := startE2E(t, nil, e2eOptions())
		c := a.dial(t, "refuse="+url.QueryEscape("go away"))
		if r := c.ExpectClose(protocol.CloseBooted); r != "go away" {
			t.Errorf("close reason %q, want the parser's message", r)
		}
		c.ExpectTCPClosed()
	})
	t.Run("plain error hides details", func(t *testing.T) {
		a := startE2E(t, nil, e2eOptions())
		c := a.dial(t, "refuseplain=1")
		if r := c.ExpectClose(protocol.CloseBooted); r != "refused" {
			t.Errorf("close reason %q, want \"refused\" (the parser's error is not shown)", r)
		}
	})
	t.Run("long reason cut to 123 bytes", func(t *testing.T) {
		a := startE2E(t, nil, e2eOptions())
		for _, reason := range []string{strings.Repeat("x", 300), strings.Repeat("é", 100), strings.Repeat("日", 60)} {
			c := a.dial(t, "refuse="+url.QueryEscape(reason))
			if r := c.ExpectClose(protocol.CloseBooted); len(r) == 0 || len(r) > protocol.MaxReasonLen || !strings.HasPrefix(reason, r) {
				t.Errorf("close reason %q (%d bytes), want a prefix of whole characters, 1..123 bytes", r, len(r))
			}
		}
	})
	t.Run("invalid user id", func(t *testing.T) {
		a := startE2E(t, nil, e2eOptions())
		for _, user := range []string{strings.Repeat("u", 129), "a\nb", "\xff", "bad\x01user"} {
			c := a.dial(t, e2eQueryUser(user))
			if r := c.ExpectClose(protocol.CloseBooted); r != "invalid user id" {
				t.Errorf("user %q: close reason %q, want \"invalid user id\"", user, r)
			}
		}
	})
	t.Run("HTTP 403", func(t *testing.T) {
		o := e2eOptions()
		o.RefuseWithHTTP403 = true
		a := startE2E(t, nil, o)
		_, resp, err := a.dialRaw(t, "refuse=no", nil)
		if err == nil {
			t.Fatal("upgrade succeeded, want HTTP 403")
		}
		if resp == nil || resp.StatusCode != http.StatusForbidden {
			t.Fatalf("response %v, want 403", resp)
		}
		// Accepted sessions still upgrade.
		c := a.dial(t, "user=ok")
		c.begin()
	})
}

func TestE2ESessionValues(t *testing.T) {
	a := startE2E(t, nil, e2eOptions())
	var w struct {
		ID, User, Session, Role, Cookie string
	}
	c, _, err := a.dialRaw(t, "user=alice&session=s9&role=admin", http.Header{"Cookie": {"sid=cookie-value"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal([]byte(c.ask("whoami", "")), &w); err != nil {
		t.Fatal(err)
	}
	if w.ID == "" || w.User != "alice" || w.Session != "s9" || w.Role != "admin" || w.Cookie != "cookie-value" {
		t.Fatalf("socket %+v, want user alice, session s9, role admin, cookie from Socket.Request()", w)
	}
	c2 := a.dial(t, "")
	if err := json.Unmarshal([]byte(c2.ask("whoami", "")), &w); err != nil {
		t.Fatal(err)
	}
	if w.Session == "" || w.User != "" || w.ID == "" {
		t.Fatalf("socket %+v, want a generated session id and no user", w)
	}
	first := w
	c3 := a.dial(t, "")
	if err := json.Unmarshal([]byte(c3.ask("whoami", "")), &w); err != nil {
		t.Fatal(err)
	}
	if w.Session == first.Session || w.ID == first.ID {
		t.Fatalf("two sockets share session %q / id %q", w.Session, w.ID)
	}
}

func TestE2EOrigin(t *testing.T) {
	o := e2eOptions()
	o.AllowedOrigins = []string{"http://good.example"}
	a := startE2E(t, nil, o)
	for _, tc := range []struct {
		origin string
		ok     bool
	}{
		{"", true},
		{strings.TrimSuffix(a.hs.URL, "/"), true},
		{"http://good.example", true},
		{"http://evil.example", false},
	} {
		t.Run("origin "+tc.origin, func(t *testing.T) {
			h := http.Header{}
			if tc.origin != "" {
				h.Set("Origin", tc.origin)
			}
			c, resp, err := a.dialRaw(t, "", h)
			if tc.ok {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				c.begin()
				return
			}
			if err == nil {
				t.Fatal("cross-origin upgrade accepted")
			}
			if resp == nil || resp.StatusCode != http.StatusForbidden {
				t.Errorf("response %v, want 403", resp)
			}
		})
	}
}

func TestE2EUserChannel(t *testing.T) {
	a := startE2E(t, nil, e2eOptions())
	alice1 := a.dial(t, "user=alice")
	alice2 := a.dial(t, "user=alice")
	bob := a.dial(t, "user=bob")
	anon := a.dial(t, "")
	var pos protocol.UID
	for _, c := range []*e2eConn{alice1, alice2} {
		m := c.begin()
		if m.str("channel") != "_user.alice" {
			t.Fatalf("BEGIN reply %s, want channel _user.alice", m.raw)
		}
		pos = e2eMustUID(t, m.str("lastUid"))
	}
	bob.begin()
	anon.begin()
	t.Run("publish reaches the user", func(t *testing.T) {
		u := a.publish("_user.alice", "dm", `{"from":"bob"}`)
		if u.Epoch != pos.Epoch || u.Seq != pos.Seq+1 {
			t.Errorf("uid %s after BEGIN lastUid %s", u, pos)
		}
		alice1.expectFeed("_user.alice", "dm", `{"from":"bob"}`, u)
		alice2.expectFeed("_user.alice", "dm", `{"from":"bob"}`, u)
		bob.expectOpen()
		anon.expectOpen()
	})
	t.Run("SUBSCRIBE to a user channel is reserved", func(t *testing.T) {
		for _, ch := range []string{"_user.alice", "_user.bob"} {
			m := alice1.subscribeRaw(ch, "null")
			if string(m.fields["result"]) != "false" || m.errCode() != protocol.CodeReservedChannel {
				t.Errorf("SUBSCRIBE %s: %s, want false reserved_channel", ch, m.raw)
			}
		}
	})
	t.Run("TellUser", func(t *testing.T) {
		if err := a.srv.TellUser(e2eCtx(t), "alice", "note", json.RawMessage(`"hi alice"`)); err != nil {
			t.Fatal(err)
		}
		alice1.expectExact(`{"sys":6,"topic":"note","msg":"hi alice"}`)
		alice2.expectExact(`{"sys":6,"topic":"note","msg":"hi alice"}`)
		bob.expectOpen()
		anon.expectOpen()
	})
	t.Run("unsubscribe then BEGIN again", func(t *testing.T) {
		alice2.Send(`{"sys":2,"channel":"_user.alice"}`)
		alice2.expectOpen()
		u := a.publish("_user.alice", "dm", `2`)
		alice1.expectFeed("_user.alice", "dm", `2`, u)
		alice2.expectOpen()
		m := alice2.begin()
		if m.str("channel") != "_user.alice" || m.str("lastUid") != u.String() {
			t.Fatalf("second BEGIN %s, want the user channel at %s", m.raw, u)
		}
		u2 := a.publish("_user.alice", "dm", `3`)
		alice1.expectFeed("_user.alice", "dm", `3`, u2)
		alice2.expectFeed("_user.alice", "dm", `3`, u2)
	})
	t.Run("BootUser", func(t *testing.T) {
		if err := a.srv.BootUser(e2eCtx(t), "alice", "bye alice"); err != nil {
			t.Fatal(err)
		}
		for _, c := range []*e2eConn{alice1, alice2} {
			c.expectExact(`{"sys":9,"reason":"bye alice"}`)
			c.SendClose(protocol.CloseBooted, "bye alice")
			if r := c.ExpectClose(protocol.CloseBooted); r != "bye alice" {
				t.Errorf("close reason %q", r)
			}
		}
		bob.expectOpen()
		anon.expectOpen()
	})
}

func TestE2EUserIDEscaping(t *testing.T) {
	a := startE2E(t, nil, e2eOptions())
	for _, user := range []string{`a b/ü`, `al"ice<&>\`, "日本", strings.Repeat("u", 128)} {
		t.Run(user, func(t *testing.T) {
			c := a.dial(t, e2eQueryUser(user))
			m := c.begin()
			uc := server.UserChannel(user)
			if m.str("channel") != uc {
				t.Fatalf("BEGIN %s, want channel %q", m.raw, uc)
			}
			if strings.Contains(m.raw, `\u003c`) || strings.Contains(m.raw, `\u0026`) {
				t.Errorf("HTML-escaped frame %s", m.raw)
			}
			u := a.publish(uc, "dm", `"x"`)
			f := c.nextMsg()
			if f.sys() != 8 || f.str("channel") != uc || f.str("uid") != u.String() {
				t.Fatalf("FEED %s, want channel %q uid %s", f.raw, uc, u)
			}
			if err := a.srv.TellUser(e2eCtx(t), user, "note", json.RawMessage(`1`)); err != nil {
				t.Fatal(err)
			}
			c.expectExact(`{"sys":6,"topic":"note","msg":1}`)
		})
	}
}

// e2eQueryUser is the query string naming user.
func e2eQueryUser(user string) string { return url.Values{"user": {user}}.Encode() }

func TestE2EBegin(t *testing.T) {
	t.Run("no user, heartbeat off", func(t *testing.T) {
		a := startE2E(t, nil, e2eOptions())
		c := a.dial(t, "")
		c.Send(`{"sys":3}`)
		c.expectExact(`{"sys":3,"prot":{"v":1}}`)
	})
	t.Run("no user, heartbeat default", func(t *testing.T) {
		o := e2eOptions()
		o.HeartbeatInterval = 0 // default 30 s
		a := startE2E(t, nil, o)
		c := a.dial(t, "")
		c.Send(`{"sys":3}`)
		c.expectExact(`{"sys":3,"prot":{"v":1,"hb":true,"hbInterval":30000,"hbThreshold":2500}}`)
	})
	t.Run("heartbeat custom", func(t *testing.T) {
		o := e2eOptions()
		o.HeartbeatInterval = 1500 * time.Millisecond
		o.HeartbeatThreshold = 700 * time.Millisecond
		a := startE2E(t, nil, o)
		c := a.dial(t, "")
		c.Send(`{"sys":3}`)
		c.expectExact(`{"sys":3,"prot":{"v":1,"hb":true,"hbInterval":1500,"hbThreshold":700}}`)
	})
	t.Run("with user", func(t *testing.T) {
		a := startE2E(t, nil, e2eOptions())
		c := a.dial(t, "user=alice")
		m := c.begin()
		pos := a.position("_user.alice")
		want := `{"sys":3,"prot":{"v":1},"channel":"_user.alice","lastUid":"` + pos.String() + `"}`
		if !e2eJSONEqual(m.raw, want) {
			t.Fatalf("BEGIN reply %s, want %s", m.raw, want)
		}
		if string(m.fields["prot"]) != `{"v":1}` {
			t.Errorf("prot = %s, want exactly {\"v\":1}", m.fields["prot"])
		}
		if ch := server.UserChannel("alice"); ch != "_user.alice" {
			t.Errorf("UserChannel(alice) = %q", ch)
		}
		// A second BEGIN gets the same reply again.
		c.Send(`{"sys":3}`)
		c.expectExact(m.raw)
	})
	t.Run("with user and publications", func(t *testing.T) {
		a := startE2E(t, nil, e2eOptions())
		var last protocol.UID
		for i := 0; i < 3; i++ {
			last = a.publish("_user.bob", "dm", strconv.Itoa(i))
		}
		c := a.dial(t, "user=bob")
		m := c.begin()
		if m.str("channel") != "_user.bob" || m.str("lastUid") != last.String() {
			t.Fatalf("BEGIN reply %s, want channel _user.bob lastUid %s", m.raw, last)
		}
		uid := a.publish("_user.bob", "dm", `"next"`)
		c.expectFeed("_user.bob", "dm", `"next"`, uid)
	})
	t.Run("no user has no channel", func(t *testing.T) {
		a := startE2E(t, nil, e2eOptions())
		c := a.dial(t, "")
		m := c.begin()
		if m.has("channel") || m.has("lastUid") {
			t.Fatalf("BEGIN reply without user carries a channel: %s", m.raw)
		}
	})
}

func TestE2EPlainHTTP(t *testing.T) {
	a := startE2E(t, nil, e2eOptions())
	for _, method := range []string{http.MethodGet, http.MethodPost, http.MethodHead} {
		req, _ := http.NewRequest(method, a.hs.URL+"/", nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode < 400 || resp.StatusCode >= 500 {
			t.Errorf("%s without upgrade: HTTP %d, want a 4xx", method, resp.StatusCode)
		}
	}
	c := a.dial(t, "")
	c.expectOpen()
}

func TestE2ECompression(t *testing.T) {
	t.Run("declined by default", func(t *testing.T) {
		a := startE2E(t, nil, e2eOptions())
		c, resp, err := e2eDialURL(t, a.url, "", testutil.WireOptions{Compression: true})
		if err != nil {
			t.Fatal(err)
		}
		if ext := resp.Header.Get("Sec-WebSocket-Extensions"); ext != "" {
			t.Errorf("server accepted %q with compression off", ext)
		}
		c.begin()
	})
	t.Run("on", func(t *testing.T) {
		o := e2eOptions()
		o.EnableCompression = true
		a := startE2E(t, nil, o)
		c, resp, err := e2eDialURL(t, a.url, "user=alice", testutil.WireOptions{Compression: true})
		if err != nil {
			t.Fatal(err)
		}
		if ext := resp.Header.Get("Sec-WebSocket-Extensions"); !strings.Contains(ext, "permessage-deflate") {
			t.Errorf("extensions %q, want permessage-deflate", ext)
		}
		m := c.begin()
		if m.str("channel") != "_user.alice" {
			t.Fatalf("BEGIN %s", m.raw)
		}
		pos := c.subscribe("zip")
		msg := `{"text":"` + strings.Repeat("compress me ", 200) + `"}`
		u := a.publish("zip", "t", msg)
		if u.Seq != pos.Seq+1 {
			t.Fatalf("uid %s after %s", u, pos)
		}
		c.expectFeed("zip", "t", msg, u)
		c.Send(`{"sys":5,"topic":"echo","msg":` + msg + `,"id":1}`)
		c.expectExact(`{"sys":7,"msg":` + msg + `,"id":1}`)
		c.SendClose(protocol.CloseByClient, "bye")
		if r := c.ExpectClose(protocol.CloseByClient); r != "bye" {
			t.Errorf("echo reason %q", r)
		}
		c.ExpectTCPClosed()
		// BOOT on a compressed socket.
		b, _, err := e2eDialURL(t, a.url, "", testutil.WireOptions{Compression: true})
		if err != nil {
			t.Fatal(err)
		}
		if err := a.srv.BootSocket(e2eCtx(t), b.whoami(), "zipped"); err != nil {
			t.Fatal(err)
		}
		b.expectExact(`{"sys":9,"reason":"zipped"}`)
		if r := b.ExpectClose(protocol.CloseBooted); r != "zipped" {
			t.Errorf("close reason %q", r)
		}
	})
}
