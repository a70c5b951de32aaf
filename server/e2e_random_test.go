package server_test

// Random frames, mutated from the SSS client's golden frames: the server
// answers or closes with a code of docs/protocol.md, never panics, and other
// sockets never notice.

import (
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/sss-go/sss/protocol"
)

// e2eMutate returns a random variation of frame.
func e2eMutate(r *rand.Rand, frame string) string {
	b := []byte(frame)
	values := []string{`null`, `true`, `-1`, `0`, `1e999`, `1.5`, `"x"`, `[]`, `{}`, `"\u0000"`, `99999999999999999999`, `"_x"`, `"a.1"`, `[[[[[[]]]]]]`}
	for n := r.IntN(3) + 1; n > 0; n-- {
		if len(b) == 0 {
			b = []byte("{}")
		}
		switch r.IntN(5) {
		case 0: // one byte, anything
			b[r.IntN(len(b))] = byte(r.IntN(256))
		case 1: // one printable byte
			b[r.IntN(len(b))] = byte(32 + r.IntN(95))
		case 2: // cut a span
			i := r.IntN(len(b))
			j := i + r.IntN(len(b)-i+1)
			b = append(b[:i:i], b[j:]...)
		case 3: // repeat a span
			i := r.IntN(len(b))
			j := i + r.IntN(min(len(b)-i, 16)+1)
			b = append(b[:j:j], append(append([]byte(nil), b[i:j]...), b[j:]...)...)
		case 4: // a value in place of a value
			s := string(b)
			if k := strings.Index(s, ":"); k >= 0 {
				rest := s[k+1:]
				end := strings.IndexAny(rest, ",}")
				if end < 0 {
					end = len(rest)
				}
				s = s[:k+1] + values[r.IntN(len(values))] + rest[end:]
			}
			b = []byte(s)
		}
	}
	return string(b)
}

func TestE2ERandomFrames(t *testing.T) {
	g := loadGolden(t)
	var frames []string
	for _, f := range g {
		if f.frame != "" && f.frame != "h" {
			frames = append(frames, f.frame)
		}
	}
	frames = append(frames, `{"sys":4,"id":"s","subscriptions":[{"channel":"room1","lastUid":"abc.1","query":{"q":[1]}}]}`,
		`{"sys":1,"channel":"_user.alice","id":9}`, `{"sys":6,"topic":"post","msg":[1,{"a":"b"}]}`)
	o := e2eOptions()
	o.BadFrameLimit = -1 // every frame gets an answer, none closes for the count
	a := startE2E(t, nil, o)
	healthy := a.dial(t, "user=zed")
	healthy.begin()
	seeds := uint64(5)
	if v, err := strconv.ParseUint(os.Getenv("SSS_E2E_RANDOM_SEEDS"), 10, 64); err == nil {
		seeds = v // a longer hunt
	}
	for seed := uint64(1); seed <= seeds; seed++ {
		e2eRandomRound(t, a, frames, seed)
	}
	healthy.expectOpen()
}

// e2eRandomRound sends 400 mutated frames from one seed.
func e2eRandomRound(t *testing.T, a *e2eApp, frames []string, seed uint64) {
	t.Helper()
	r := rand.New(rand.NewPCG(seed, 2))
	c := a.dial(t, "user=alice")
	closes := 0
	for i := 0; i < 400; i++ {
		select {
		case <-c.Done():
			switch c.CloseCode() {
			case protocol.ClosePolicyViolation: // a reused outstanding id
			default:
				t.Fatalf("seed %d: closed with %d %q after random frames", seed, c.CloseCode(), c.CloseReason())
			}
			closes++
			c = a.dial(t, "user=alice")
		default:
		}
		f := e2eMutate(r, frames[r.IntN(len(frames))])
		if err := c.Write(f); err != nil {
			continue // closed under us: seen at the next round
		}
		// Every server frame stays one JSON object with "sys" first or
		// an error frame.
		for {
			fr, ok := c.NextFrame(0)
			if !ok {
				break
			}
			if string(fr.Data) != protocol.Heartbeat {
				e2eParse(t, string(fr.Data))
			}
		}
	}
	t.Logf("seed %d: %d sockets closed for reused ids", seed, closes)
	// Drain: every remaining frame well formed, then the echo answered,
	// unless a reused id closed the socket meanwhile.
	if err := c.Write(`{"sys":5,"topic":"echo","msg":"end","id":"end"}`); err != nil {
		return
	}
	for {
		f, ok := c.NextFrame(e2eTimeout)
		if !ok {
			if c.CloseCode() != protocol.ClosePolicyViolation {
				t.Fatalf("seed %d: closed with %d %q", seed, c.CloseCode(), c.CloseReason())
			}
			return
		}
		if string(f.Data) == protocol.Heartbeat {
			continue
		}
		if m := e2eParse(t, string(f.Data)); m.sys() == 7 && string(m.fields["id"]) == `"end"` {
			return
		}
	}
}
