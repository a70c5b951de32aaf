package server_test

// Text frames must be valid UTF-8 (RFC 6455 §8.1): payloads, topics and
// reasons that are not are refused at the API, an ask reply that is not
// becomes "internal", and reasons and error messages are cut on rune
// boundaries. Every frame these tests receive is checked by e2eConn.

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/sss-go/sss/protocol"
	"github.com/sss-go/sss/scaler"
	"github.com/sss-go/sss/server"
)

var (
	badRaw    = json.RawMessage("\"caf\xe9\"") // Latin-1 é: valid JSON, not UTF-8
	badNested = struct {
		M json.RawMessage `json:"m"`
	}{badRaw} // encoding/json passes a RawMessage field through
	badText = "caf\xe9"
)

func TestInvalidUTF8Refused(t *testing.T) {
	be := scaler.NewMemoryBackend(scaler.MemoryOptions{Logger: e2eLogger()})
	a := startE2E(t, be.Instance(), e2eOptions())
	a.srv.HandleAsk("tellbad", func(ctx context.Context, sock *server.Socket, msg json.RawMessage) (any, error) {
		var errs []string
		for _, err := range []error{sock.Tell("t", badRaw), sock.Tell("t", badNested), sock.Tell(badText, 1)} {
			if !errors.Is(err, server.ErrInvalidPayload) {
				errs = append(errs, "Socket.Tell: "+errString(err))
			}
		}
		return errs, nil
	})
	pub, err := server.NewPublisher(be.Instance(), server.PublisherOptions{})
	if err != nil {
		t.Fatal(err)
	}
	c := a.dial(t, "user=uu&session=ss")
	c.begin()
	c.subscribe("ch")
	id := c.whoami()
	ctx := e2eCtx(t)
	s, p := a.srv, pub
	calls := map[string]func() error{
		"Publish raw":        func() error { _, err := s.Publish(ctx, "ch", "t", badRaw, server.PublishOptions{}); return err },
		"Publish nested raw": func() error { _, err := s.Publish(ctx, "ch", "t", badNested, server.PublishOptions{}); return err },
		"Publish topic":      func() error { _, err := s.Publish(ctx, "ch", badText, 1, server.PublishOptions{}); return err },
		"Publish user channel": func() error {
			_, err := s.Publish(ctx, server.UserChannel("uu"), "t", badRaw, server.PublishOptions{})
			return err
		},
		"Broadcast":            func() error { return s.Broadcast(ctx, "t", badRaw) },
		"Broadcast topic":      func() error { return s.Broadcast(ctx, badText, 1) },
		"TellUser":             func() error { return s.TellUser(ctx, "uu", "t", badRaw) },
		"TellSession topic":    func() error { return s.TellSession(ctx, "ss", badText, 1) },
		"TellSocket":           func() error { return s.TellSocket(ctx, id, "t", badNested) },
		"BootSocket":           func() error { return s.BootSocket(ctx, id, badText) },
		"BootSession":          func() error { return s.BootSession(ctx, "ss", badText) },
		"BootUser":             func() error { return s.BootUser(ctx, "uu", badText) },
		"Publisher.Publish":    func() error { _, err := p.Publish(ctx, "ch", "t", badRaw, server.PublishOptions{}); return err },
		"Publisher.Broadcast":  func() error { return p.Broadcast(ctx, badText, 1) },
		"Publisher.TellUser":   func() error { return p.TellUser(ctx, "uu", "t", badNested) },
		"Publisher.TellSocket": func() error { return p.TellSocket(ctx, id, "t", badRaw) },
		"Publisher.BootUser":   func() error { return p.BootUser(ctx, "uu", badText) },
		"Publisher.BootSocket": func() error { return p.BootSocket(ctx, id, badText) },
	}
	for name, call := range calls {
		if err := call(); !errors.Is(err, server.ErrInvalidPayload) {
			t.Errorf("%s with invalid UTF-8: %v, want ErrInvalidPayload", name, err)
		}
	}
	if got := c.ask("tellbad", ""); got != "null" {
		t.Errorf("tellbad: %s", got)
	}
	// Nothing of the above reached the socket: the echo answer comes next.
	c.expectOpen()
	// Valid non-ASCII goes through.
	u := a.publish("ch", "tópico", `"café ☃"`)
	c.expectFeed("ch", "tópico", `"café ☃"`, u)
}

func errString(err error) string {
	if err == nil {
		return "nil"
	}
	return err.Error()
}

func TestInvalidUTF8AskReplyIsInternal(t *testing.T) {
	a := startE2E(t, nil, e2eOptions())
	a.srv.HandleAsk("badreply", func(ctx context.Context, sock *server.Socket, msg json.RawMessage) (any, error) {
		return badRaw, nil
	})
	a.srv.HandleAsk("badnested", func(ctx context.Context, sock *server.Socket, msg json.RawMessage) (any, error) {
		return badNested, nil
	})
	a.srv.HandleAsk("baderr", func(ctx context.Context, sock *server.Socket, msg json.RawMessage) (any, error) {
		return nil, &protocol.Error{Name: "N\xff", Message: strings.Repeat("é", 200) + "\xfe", Code: "c\xff"}
	})
	c := a.dial(t, "")
	for _, topic := range []string{"badreply", "badnested"} {
		if m := c.askRaw(topic, ""); m.errCode() != protocol.CodeInternal {
			t.Errorf("%s: got %s, want an internal error", topic, m.raw)
		}
	}
	m := c.askRaw("baderr", "")
	for _, f := range []string{"name", "message", "code"} {
		if v := m.errField(f); v == "" || !utf8.ValidString(v) {
			t.Errorf("error object field %s = %q", f, v)
		}
	}
	if !strings.HasPrefix(m.errField("message"), strings.Repeat("é", 10)) {
		t.Errorf("message %q lost its valid text", m.errField("message"))
	}
}

func TestInvalidUTF8Reasons(t *testing.T) {
	long := strings.Repeat("é", 100) // 200 bytes: byte 123 is inside a rune
	o := e2eOptions()
	o.SubscriptionParser = func(ctx context.Context, sock *server.Socket, channel string, query json.RawMessage) (*server.ChannelOptions, error) {
		return nil, &protocol.Error{Name: "Refused", Message: "no " + badText}
	}
	a := startE2E(t, nil, o)
	a.srv.HandleAsk("close", func(ctx context.Context, sock *server.Socket, msg json.RawMessage) (any, error) {
		var reason string
		_ = json.Unmarshal(msg, &reason)
		if string(msg) == `"bad"` {
			reason = "bye " + badText
		}
		sock.Close(protocol.CloseBooted, reason)
		return nil, nil
	})
	checkReason := func(t *testing.T, c *e2eConn, code int, wantPrefix string) {
		t.Helper()
		got, text := c.WaitClosed()
		if got != code || !utf8.ValidString(text) || len(text) > protocol.MaxReasonLen || !strings.HasPrefix(text, wantPrefix) {
			t.Errorf("closed with %d %q (%v), want %d, a valid UTF-8 reason of at most %d bytes beginning %q",
				got, text, c.Err(), code, protocol.MaxReasonLen, wantPrefix)
		}
	}
	t.Run("parser refusal message", func(t *testing.T) {
		c := a.dial(t, "")
		m := c.subscribeRaw("any", "")
		if msg := m.errField("message"); !strings.HasPrefix(msg, "no caf") || !utf8.ValidString(msg) {
			t.Errorf("refusal message %q", msg)
		}
	})
	t.Run("Socket.Close long reason", func(t *testing.T) {
		c := a.dial(t, "")
		b, _ := json.Marshal(long)
		c.Send(`{"sys":5,"topic":"close","msg":` + string(b) + `,"id":1}`)
		checkReason(t, c, protocol.CloseBooted, strings.Repeat("é", 61))
	})
	t.Run("Socket.Close invalid reason", func(t *testing.T) {
		c := a.dial(t, "")
		c.Send(`{"sys":5,"topic":"close","msg":"bad","id":1}`)
		checkReason(t, c, protocol.CloseBooted, "bye caf")
	})
	t.Run("session refusal invalid and long", func(t *testing.T) {
		c := a.dial(t, "refuse=%E9"+strings.Repeat("%C3%A9", 100))
		checkReason(t, c, protocol.CloseBooted, "")
	})
	t.Run("boot long reason", func(t *testing.T) {
		c := a.dial(t, "session=boot1")
		if err := a.srv.BootSession(e2eCtx(t), "boot1", long); err != nil {
			t.Fatal(err)
		}
		m := c.nextMsg()
		if r := m.str("reason"); m.sys() != 9 || len(r) > protocol.MaxReasonLen || r != strings.Repeat("é", 61) {
			t.Fatalf("got %s, want a BOOT with the reason cut to 61 runes", m.raw)
		}
		checkReason(t, c, protocol.CloseBooted, strings.Repeat("é", 61))
	})
}

// TestUTF8LiveAndRecoveredIdentical: a publication with non-ASCII content
// reaches a live subscriber and a SYNC (from the recovery window and from
// the scaler) as byte-identical FEEDs.
func TestUTF8LiveAndRecoveredIdentical(t *testing.T) {
	msgs := []string{`"café"`, `{"s":"☃ 😀 \u00e9 \ud83d\ude00 <&>","n":[1,"ß"]}`, `"\u2028 \u2029"`}
	for _, win := range []int{0, -1} {
		name := map[int]string{0: "window", -1: "scaler"}[win]
		t.Run(name, func(t *testing.T) {
			o := e2eOptions()
			o.RecoveryWindow = win
			a := startE2E(t, nil, o)
			live := a.dial(t, "")
			start := live.subscribe("uni")
			var frames []string
			for _, m := range msgs {
				u := a.publish("uni", "tópico", m)
				f := live.Next()
				if !strings.Contains(f, `"uid":"`+u.String()+`"`) {
					t.Fatalf("live frame %s, want uid %v", f, u)
				}
				frames = append(frames, f)
			}
			late := a.dial(t, "")
			r := late.sync(e2eSyncFrame(e2eEntry("uni", e2eQ(start), "")))
			if !r.result["uni"] || len(r.records) != len(frames) {
				t.Fatalf("SYNC: %s", r.msg.raw)
			}
			for i := range frames {
				if r.records[i] != frames[i] {
					t.Errorf("record %d differs from the live FEED\nlive:      %s\nrecovered: %s", i, frames[i], r.records[i])
				}
			}
		})
	}
}

// TestInvalidUTF8SessionInfo: a Session.Info that is not valid UTF-8 is
// dropped, so the presence tells about that socket carry {} and stay
// valid UTF-8 (e2eConn checks every frame).
func TestInvalidUTF8SessionInfo(t *testing.T) {
	o := e2eOptions()
	o.Channels = []server.ChannelRule{{Pattern: "pres-*", Options: server.ChannelOptions{Presence: true}}}
	o.SessionParser = func(r *http.Request) (*server.Session, error) {
		return &server.Session{User: r.URL.Query().Get("user"), Info: json.RawMessage(r.URL.Query().Get("info"))}, nil
	}
	a := startE2E(t, nil, o)
	first := a.dial(t, "user=first")
	first.subscribe("pres-u")
	bad := a.dial(t, "user=bad&info=%7B%22n%22%3A%22caf%E9%22%7D") // {"n":"caf\xe9"}
	bad.subscribe("pres-u")
	m := first.nextMsg()
	var p struct {
		Event  string
		Member struct {
			User string
			Info json.RawMessage
		}
	}
	if m.sys() != 6 || json.Unmarshal(m.fields["msg"], &p) != nil || p.Event != "join" || p.Member.User != "bad" {
		t.Fatalf("got %s, want bad's join", m.raw)
	}
	if string(p.Member.Info) != "{}" {
		t.Errorf("member info %s, want {} for an Info that is not UTF-8", p.Member.Info)
	}
	good := a.dial(t, "user=good&info=%7B%22n%22%3A%22caf%C3%A9%22%7D") // {"n":"café"}
	good.subscribe("pres-u")
	for {
		m = first.nextMsg()
		if json.Unmarshal(m.fields["msg"], &p) == nil && p.Member.User == "good" {
			break
		}
	}
	if string(p.Member.Info) != `{"n":"café"}` {
		t.Errorf("member info %s, want {\"n\":\"café\"}", p.Member.Info)
	}
}
