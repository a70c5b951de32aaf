package server_test

// Every row of the bad-input table of docs/protocol.md ("10. Bad input"),
// each followed by a healthy ask on another socket, and custom limits.

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/sss-go/sss/protocol"
)

// e2eNested returns a JSON value nested depth levels deep ([[...1...]]).
func e2eNested(depth int) string {
	return strings.Repeat("[", depth) + "1" + strings.Repeat("]", depth)
}

// expectSubscribeFail reads a SUBSCRIBE reply and requires result false with
// code, and the channel and id of the request.
func (c *e2eConn) expectSubscribeFail(channel, code string) {
	c.t.Helper()
	m := c.subscribeRaw(channel, "null")
	// The protocol encoder leaves the channel key out for the empty name.
	if string(m.fields["result"]) != "false" || m.errCode() != code || m.str("channel") != channel || m.has("lastUid") ||
		(channel != "" && !m.has("channel")) {
		c.t.Fatalf("SUBSCRIBE %.60q: %.300s, want result false, the channel, code %q", channel, m.raw, code)
	}
}

func TestE2EBadInput(t *testing.T) {
	o := e2eOptions()
	o.MaxSubscriptions = 3
	a := startE2E(t, nil, o)
	healthy := a.dial(t, "")
	type row struct {
		name string
		run  func(t *testing.T, c *e2eConn)
	}
	errFrame := func(frame, code string) func(t *testing.T, c *e2eConn) {
		return func(t *testing.T, c *e2eConn) {
			c.Send(frame)
			c.expectErrFrame(code)
			c.expectOpen()
		}
	}
	rows := []row{
		{"binary frame", func(t *testing.T, c *e2eConn) {
			c.SendType(websocket.BinaryMessage, []byte(`{"sys":3}`))
			c.ExpectClose(protocol.CloseUnsupportedData)
		}},
		{"frame over 64 KiB", func(t *testing.T, c *e2eConn) {
			c.Send(`{"sys":5,"topic":"len","id":1,"msg":"` + strings.Repeat("x", 64<<10) + `"}`)
			c.ExpectClose(protocol.CloseTooLarge)
		}},
		{"frame of exactly 64 KiB", func(t *testing.T, c *e2eConn) {
			head, tail := `{"sys":5,"topic":"len","id":1,"msg":"`, `"}`
			n := 64<<10 - len(head) - len(tail)
			c.Send(head + strings.Repeat("x", n) + tail)
			c.expectExact(`{"sys":7,"msg":` + strconv.Itoa(n+2) + `,"id":1}`)
		}},
	}
	rows = append(rows,
		row{"invalid UTF-8 is bad_frame", errFrame("{\"sys\":6,\"topic\":\"post\",\"msg\":\"\xff\xfe\"}", protocol.CodeBadFrame)},
		row{"unknown fields are ignored", func(t *testing.T, c *e2eConn) {
			c.Send(`{"sys":5,"topic":"echo","msg":1,"id":1,"extra":{"x":[1]}}`)
			c.expectExact(`{"sys":7,"msg":1,"id":1}`)
		}},
	)
	for _, f := range []string{`hello`, `{"sys":5`, `{"sys":3}}`, ``, `{"sys":3} {"sys":3}`, `[1,2]`, `"str"`, `42`, `null`, `true`} {
		rows = append(rows, row{"bad_frame " + f, errFrame(f, protocol.CodeBadFrame)})
	}
	rows = append(rows,
		row{"nesting 32 is fine", func(t *testing.T, c *e2eConn) {
			msg := e2eNested(31) // the frame's object is level 1
			c.Send(`{"sys":5,"topic":"echo","msg":` + msg + `,"id":1}`)
			c.expectExact(`{"sys":7,"msg":` + msg + `,"id":1}`)
		}},
		row{"nesting 33 is bad_frame", errFrame(`{"sys":5,"topic":"echo","msg":`+e2eNested(32)+`,"id":1}`, protocol.CodeBadFrame)},
		row{"nesting 33 in objects is bad_frame", errFrame(`{"sys":5,"topic":"echo","msg":`+strings.Repeat(`{"a":`, 32)+`1`+strings.Repeat("}", 32)+`,"id":1}`, protocol.CodeBadFrame)},
		row{"deep brackets inside a string are fine", func(t *testing.T, c *e2eConn) {
			msg := `"` + strings.Repeat("[{", 40) + `"`
			c.Send(`{"sys":5,"topic":"echo","msg":` + msg + `,"id":1}`)
			c.expectExact(`{"sys":7,"msg":` + msg + `,"id":1}`)
		}},
	)
	for _, f := range []string{`{"sys":99}`, `{"sys":0}`, `{"sys":-1}`, `{"topic":"echo","id":1}`, `{}`,
		`{"sys":"5","topic":"echo","id":1}`, `{"sys":5.5,"topic":"echo","id":1}`, `{"sys":null}`, `{"sys":true}`,
		`{"sys":7,"msg":1,"id":1}`, `{"sys":8,"topic":"t","msg":1,"channel":"c","uid":"a.1"}`, `{"sys":9,"reason":"x"}`,
		`{"sys":10}`, `{"sys":11,"topic":"t","msg":1}`, `{"sys":12,"channel":"c","uid":"a.1"}`} {
		rows = append(rows, row{"unknown_sys " + f, errFrame(f, protocol.CodeUnknownSys)})
	}
	withID := []struct{ frame, want string }{
		{`{"sys":1,"channel":5,"id":3}`, `{"sys":1,"result":false,"id":3}`},
		{`{"sys":1,"channel":null,"id":3}`, `{"sys":1,"result":false,"id":3}`},
		{`{"sys":1,"id":3}`, `{"sys":1,"result":false,"id":3}`},
		{`{"sys":5,"id":4}`, `{"sys":7,"id":4}`},
		{`{"sys":5,"topic":7,"id":"x"}`, `{"sys":7,"id":"x"}`},
	}
	for _, tc := range withID {
		rows = append(rows, row{"bad_request with id " + tc.frame, func(t *testing.T, c *e2eConn) {
			c.Send(tc.frame)
			m := c.nextMsg()
			if m.errCode() != protocol.CodeBadRequest || m.has("channel") || m.has("lastUid") || m.has("msg") {
				t.Fatalf("got %s, want a reply with err bad_request and no channel", m.raw)
			}
			delete(m.fields, "err")
			got := "{"
			for i, k := range m.keys {
				if k == "err" {
					continue
				}
				if i > 0 {
					got += ","
				}
				got += strconv.Quote(k) + ":" + string(m.fields[k])
			}
			if !e2eJSONEqual(got+"}", tc.want) {
				t.Fatalf("got %s, want %s plus err", m.raw, tc.want)
			}
			c.expectOpen()
		}})
	}
	for _, f := range []string{`{"sys":6,"topic":5,"msg":1}`, `{"sys":6,"msg":1}`, `{"sys":2,"channel":7}`, `{"sys":2}`,
		`{"sys":4,"subscriptions":"x"}`, `{"sys":4}`, `{"sys":4,"subscriptions":null}`, `{"sys":4,"subscriptions":[5]}`,
		`{"sys":4,"subscriptions":[{"lastUid":null}]}`, `{"sys":4,"subscriptions":[{"channel":"a","lastUid":5}]}`} {
		rows = append(rows, row{"bad_request without id " + f, errFrame(f, protocol.CodeBadRequest)})
	}
	rows = append(rows, row{"TELL unknown topic", errFrame(`{"sys":6,"topic":"nope","msg":1}`, protocol.CodeUnknownTopic)})
	for _, f := range []string{`{"sys":5,"topic":"echo","msg":1}`, `{"sys":1,"channel":"room"}`, `{"sys":5,"topic":"echo","id":null}`,
		`{"sys":1,"channel":"room","id":null}`} {
		rows = append(rows, row{"missing_id " + f, errFrame(f, protocol.CodeMissingID)})
	}
	// An id of the wrong type is a field of the wrong type (docs/protocol.md,
	// "Bad input"), not a missing one.
	for _, f := range []string{`{"sys":5,"topic":"echo","id":{"a":1}}`, `{"sys":5,"topic":"echo","id":[1]}`, `{"sys":5,"topic":"echo","id":true}`,
		`{"sys":1,"channel":"room","id":{}}`, `{"sys":1,"channel":"room","id":false}`} {
		rows = append(rows, row{"bad_request id " + f, errFrame(f, protocol.CodeBadRequest)})
	}
	rows = append(rows,
		row{"reused outstanding id", func(t *testing.T, c *e2eConn) {
			c.Send(`{"sys":5,"topic":"slow","id":1}`)
			a.waitSlowStarted()
			c.Send(`{"sys":5,"topic":"echo","msg":2,"id":1}`)
			c.ExpectClose(protocol.ClosePolicyViolation)
			select {
			case how := <-a.slowEnded:
				if how != "cancelled" {
					t.Errorf("slow handler %s, want its ctx cancelled when the socket closed", how)
				}
			case <-time.After(e2eTimeout):
				t.Error("slow handler's ctx not cancelled after the socket closed")
			}
		}},
		row{"reused answered id is fine", func(t *testing.T, c *e2eConn) {
			for i := 0; i < 3; i++ {
				c.Send(`{"sys":5,"topic":"echo","msg":1,"id":1}`)
				c.expectExact(`{"sys":7,"msg":1,"id":1}`)
				c.Send(`{"sys":1,"channel":"again","id":1}`)
				m := c.nextMsg()
				if string(m.fields["result"]) != "true" {
					t.Fatalf("SUBSCRIBE reusing an answered id: %s", m.raw)
				}
			}
		}},
	)
	for _, ch := range []string{"a b", "", strings.Repeat("c", 201), "é", "a.b", "room/1", "tab\t"} {
		rows = append(rows, row{"bad_channel " + ch, func(t *testing.T, c *e2eConn) {
			c.expectSubscribeFail(ch, protocol.CodeBadChannel)
			c.expectOpen()
		}})
	}
	rows = append(rows,
		row{"channel of 200 bytes is fine", func(t *testing.T, c *e2eConn) {
			c.subscribe(strings.Repeat("c", 200))
		}},
		row{"reserved_channel", func(t *testing.T, c *e2eConn) {
			for _, ch := range []string{"_x", "_user.alice", "_", "_presence"} {
				c.expectSubscribeFail(ch, protocol.CodeReservedChannel)
			}
			c.expectOpen()
		}},
		row{"too_many_subscriptions", func(t *testing.T, c *e2eConn) {
			for i := 0; i < 3; i++ {
				c.subscribe("tm" + strconv.Itoa(i))
			}
			c.expectSubscribeFail("tm3", protocol.CodeTooManySubscriptions)
			c.subscribe("tm0") // a held channel is still granted
			c.Send(`{"sys":2,"channel":"tm1"}`)
			c.subscribe("tm3")
		}},
		row{"bad frames past the limit", func(t *testing.T, c *e2eConn) {
			bad := []struct{ frame, code string }{
				{`x`, protocol.CodeBadFrame}, {`{"sys":99}`, protocol.CodeUnknownSys},
				{`{"sys":6}`, protocol.CodeBadRequest}, {`{"sys":5,"topic":"echo"}`, protocol.CodeMissingID},
			}
			for i := 0; i < 10; i++ {
				b := bad[i%len(bad)]
				c.Send(b.frame)
				c.expectErrFrame(b.code)
				if i == 4 {
					// Errors outside the counted codes do not count.
					for j := 0; j < 3; j++ {
						c.Send(`{"sys":6,"topic":"nope"}`)
						c.expectErrFrame(protocol.CodeUnknownTopic)
					}
					c.expectSubscribeFail("_r", protocol.CodeReservedChannel)
				}
			}
			c.expectOpen()
			c.Send(`x`)
			c.expectErrFrame(protocol.CodeBadFrame)
			c.ExpectClose(protocol.ClosePolicyViolation)
		}},
		row{"SYNC malformed uid", func(t *testing.T, c *e2eConn) {
			r := c.sync(e2eSyncFrame(e2eEntry("sm", `"2"`, "null")))
			r.expectOutcome(t, "sm", false, protocol.CodeNotRecoverable)
			c.expectExact(e2eUpdateSub("sm", a.position("sm")))
		}},
		row{"SYNC another user's channel", func(t *testing.T, c *e2eConn) {
			r := c.sync(e2eSyncFrame(e2eEntry("_user.zed", `null`, "null")))
			r.expectOutcome(t, "_user.zed", false, protocol.CodeForbidden)
		}},
		row{"SYNC reserved channel", func(t *testing.T, c *e2eConn) {
			r := c.sync(e2eSyncFrame(e2eEntry("_zz", `null`, "null")))
			r.expectOutcome(t, "_zz", false, protocol.CodeReservedChannel)
		}},
		row{"SYNC past the subscription limit", func(t *testing.T, c *e2eConn) {
			var es []string
			for i := 0; i < 4; i++ {
				es = append(es, e2eEntry("sl"+strconv.Itoa(i), `null`, "null"))
			}
			r := c.sync(e2eSyncFrame(es...))
			r.expectOutcome(t, "sl3", false, protocol.CodeTooManySubscriptions)
			for i := 0; i < 3; i++ {
				r.expectOutcome(t, "sl"+strconv.Itoa(i), false, protocol.CodeNotRecoverable)
			}
		}},
	)
	for _, r := range rows {
		t.Run(r.name, func(t *testing.T) {
			c := a.dial(t, "")
			r.run(t, c)
			healthy.expectOpen()
		})
	}
}

func TestE2EBadInputWindow(t *testing.T) {
	const window = time.Second
	o := e2eOptions()
	o.BadFrameLimit = 3
	o.BadFrameWindow = window
	a := startE2E(t, nil, o)
	healthy := a.dial(t, "")
	c := a.dial(t, "")
	for i := 0; i < 3; i++ {
		c.Send(`x`)
		c.expectErrFrame(protocol.CodeBadFrame)
	}
	time.Sleep(window + window/2) // the window itself is under test
	for i := 0; i < 3; i++ {
		c.Send(`x`)
		c.expectErrFrame(protocol.CodeBadFrame)
	}
	c.expectOpen()
	c.Send(`x`)
	c.expectErrFrame(protocol.CodeBadFrame)
	c.ExpectClose(protocol.ClosePolicyViolation)
	healthy.expectOpen()
}

// TestE2EReusedIDAcrossKinds: docs/protocol.md, "10. Bad input": a reused outstanding
// id closes with 1008, whatever the request kind.
func TestE2EReusedIDAcrossKinds(t *testing.T) {
	a := startE2E(t, nil, e2eOptions())
	c := a.dial(t, "")
	c.Send(`{"sys":5,"topic":"slow","id":7}`)
	a.waitSlowStarted()
	// ASK and SUBSCRIBE share the SSS client's id counter: a SUBSCRIBE
	// with the id of an outstanding ASK reuses it.
	c.Send(`{"sys":1,"channel":"room","id":7}`)
	c.ExpectClose(protocol.ClosePolicyViolation)
}

func TestE2ECustomLimits(t *testing.T) {
	o := e2eOptions()
	o.MaxFrameBytes = 1024
	o.MaxDepth = 4
	o.MaxChannelLen = 10
	a := startE2E(t, nil, o)
	c := a.dial(t, "")
	c.Send(`{"sys":5,"topic":"echo","msg":` + e2eNested(3) + `,"id":1}`)
	c.expectExact(`{"sys":7,"msg":` + e2eNested(3) + `,"id":1}`)
	c.Send(`{"sys":5,"topic":"echo","msg":` + e2eNested(4) + `,"id":1}`)
	c.expectErrFrame(protocol.CodeBadFrame)
	c.subscribe(strings.Repeat("a", 10))
	c.expectSubscribeFail(strings.Repeat("a", 11), protocol.CodeBadChannel)
	c.Send(`{"sys":5,"topic":"echo","msg":"` + strings.Repeat("x", 1024) + `","id":2}`)
	c.ExpectClose(protocol.CloseTooLarge)
}
