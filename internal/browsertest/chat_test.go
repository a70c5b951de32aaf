package browsertest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sss-go/sss/internal/testutil"
	"github.com/sss-go/sss/scaler/mongoredis"
	"github.com/sss-go/sss/server"
)

// roomName returns a room no earlier run used on the shared MongoDB.
func roomName(prefix string) string {
	return prefix + strconv.FormatInt(time.Now().UnixNano()%1e12, 36)
}

// numbers returns "1" .. "n", the texts the publisher publishes.
func numbers(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = strconv.Itoa(i + 1)
	}
	return out
}

// publisher is the third party of the tests: a server.Publisher on its own
// mongoredis scaler, publishing numbered chat messages as user "pub".
type publisher struct {
	t   *testing.T
	pub *server.Publisher
}

func newPublisher(t *testing.T, mongoURI, redisURL string) *publisher {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	sc, err := mongoredis.New(ctx, mongoredis.Options{MongoURI: mongoURI, RedisURL: redisURL, Logger: quiet()})
	if err != nil {
		t.Fatalf("publisher's scaler: %v", err)
	}
	pub, err := server.NewPublisher(sc, server.PublisherOptions{Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		defer cancel()
		_ = pub.Close(ctx)
		_ = sc.Close(ctx)
	})
	return &publisher{t: t, pub: pub}
}

// publish publishes the message numbered n to room, once: a publish
// whose outcome is unknown is retried with the same idempotency key.
func (p *publisher) publish(ctx context.Context, room string, n int) error {
	msg := map[string]any{"text": strconv.Itoa(n), "user": "pub"}
	key := room + "-" + strconv.Itoa(n)
	var err error
	for attempt := 0; attempt < 5; attempt++ {
		if _, err = p.pub.Publish(ctx, room, "message", msg, server.PublishOptions{IdempotencyKey: key}); err == nil {
			return nil
		}
		if ctx.Err() != nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("publish %d to %s: %w", n, room, err)
}

// run publishes from..to in the background, one every pace; each number
// in notify is sent on the returned channel once published, and gate,
// when not nil, is awaited before publishing gateAt. The error channel
// gets the outcome.
func (p *publisher) run(room string, from, to int, pace time.Duration, gateAt int, gate <-chan struct{}) (progress <-chan int, done <-chan error) {
	prog := make(chan int, to-from+1)
	errc := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*wait)
		defer cancel()
		t := time.NewTicker(pace)
		defer t.Stop()
		for n := from; n <= to; n++ {
			if n == gateAt && gate != nil {
				select {
				case <-gate:
				case <-ctx.Done():
					errc <- errors.New("publisher: the gate never opened")
					return
				}
			}
			if err := p.publish(ctx, room, n); err != nil {
				errc <- err
				return
			}
			prog <- n
			<-t.C
		}
		errc <- nil
	}()
	return prog, errc
}

// waitProgress waits until the publisher has published n.
func waitProgress(t *testing.T, progress <-chan int, done <-chan error, n int) {
	t.Helper()
	timeout := time.After(wait)
	for {
		select {
		case got := <-progress:
			if got >= n {
				return
			}
		case err := <-done:
			t.Fatalf("publisher ended before %d: %v", n, err)
		case <-timeout:
			t.Fatalf("publisher did not reach %d within %v", n, wait)
		}
	}
}

func waitDone(t *testing.T, done <-chan error) {
	t.Helper()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(2 * wait):
		t.Fatalf("publisher not done within %v", 2*wait)
	}
}

// expectMessages waits until the page shows as many messages as want,
// then checks that they are want exactly, in order; on a timeout it says
// which are missing or repeated.
func expectMessages(t *testing.T, p *page, want []string) {
	t.Helper()
	deadline := time.Now().Add(wait)
	var got []string
	for {
		got = p.messages()
		if len(got) >= len(want) || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if slices.Equal(got, want) {
		return
	}
	seen := map[string]int{}
	for _, g := range got {
		seen[g]++
	}
	var missing, repeated []string
	for _, w := range want {
		switch seen[w] {
		case 0:
			missing = append(missing, w)
		case 1:
		default:
			repeated = append(repeated, w)
		}
	}
	t.Fatalf("page %s shows %d messages %v, want exactly %d in order; missing %v, repeated %v", p.name, len(got), abbreviate(got), len(want), abbreviate(missing), abbreviate(repeated))
}

func abbreviate(s []string) []string {
	if len(s) <= 12 {
		return s
	}
	return append(append(append([]string{}, s[:6]...), "..."), s[len(s)-6:]...)
}

// shotsOnFailure saves the pages' screenshots if t fails.
func shotsOnFailure(t *testing.T, pages ...*page) {
	t.Cleanup(func() {
		if t.Failed() {
			for _, p := range pages {
				p.screenshot()
			}
		}
	})
}

// TestChatCluster drives the chat page in one Chromium with two pages on
// two chat processes sharing a mongoredis backend (a real redis-server and
// FerretDB), while a third party publishes.
func TestChatCluster(t *testing.T) {
	testutil.CheckLeaks(t)
	rd := testutil.StartRedis(t)
	mg := testutil.SharedMongo(t)
	bin := buildChat(t)
	owner := newProcOwner(t)
	env := []string{"MONGO_URI=" + mg.URI, "REDIS_URL=" + rd.URL}
	chatA := startChat(t, owner, bin, "chatA", env)
	chatB := startChat(t, owner, bin, "chatB", env)
	pub := newPublisher(t, mg.URI, rd.URL)
	br := startBrowser(t)
	alice := br.newPage(t, "alice")
	bob := br.newPage(t, "bob")

	t.Run("messages, members and DMs across instances", func(t *testing.T) {
		alice.t, bob.t = t, t
		shotsOnFailure(t, alice, bob)
		room := roomName("lobby")
		alice.open(chatA.url(""), "alice", room)
		alice.waitFor(wait, "alice in her member list", `document.querySelector('#members li[data-user="alice"]')`)
		bob.open(chatB.url(""), "bob", room)
		alice.waitFor(wait, "bob's join in alice's member list", `document.querySelector('#members li[data-user="bob"]')`)
		bob.waitFor(wait, "alice in bob's member list", `document.querySelector('#members li[data-user="alice"]')`)

		// Switching rooms in the page keeps one connection: the state
		// stays live (nothing stale from the room left).
		alice.eval(`(() => { const f = document.querySelector("#newroom"); f.room.value = `+jsString(room+"x")+`; f.requestSubmit(); })()`, nil)
		alice.waitFor(wait, "the other room", `document.querySelector("#room-title").textContent === `+jsString("#"+room+"x")+` && document.querySelector("#state").dataset.state === "live"`)
		alice.eval(`(() => { const f = document.querySelector("#newroom"); f.room.value = `+jsString(room)+`; f.requestSubmit(); })()`, nil)
		alice.waitFor(wait, "back in the room", `document.querySelector("#room-title").textContent === `+jsString("#"+room)+` && document.querySelector("#state").dataset.state === "live"`)
		if st := alice.states(); !slices.Equal(st, []string{"connecting", "live", "connecting", "live", "connecting", "live"}) {
			t.Fatalf("alice's page showed %v while switching rooms", st)
		}
		var conns int
		alice.eval(`chatClient.stats.reconnects`, &conns)
		if conns != 0 {
			t.Fatalf("switching rooms reconnected %d times", conns)
		}
		alice.waitFor(wait, "bob in alice's member list again", `document.querySelector('#members li[data-user="bob"]')`)

		alice.post("hello bob")
		bob.waitFor(wait, "alice's message on bob's page", `[...document.querySelectorAll("#messages li")].some(li => li.textContent.includes("alice") && li.textContent.includes("hello bob"))`)
		alice.waitFor(wait, "alice's message on her page", `document.querySelectorAll("#messages li").length === 1`)
		if got := bob.messages(); !slices.Equal(got, []string{"hello bob"}) {
			t.Fatalf("bob's messages %v", got)
		}

		bob.sendDM("alice", "psst, alice")
		alice.waitFor(wait, "bob's DM", `[...document.querySelectorAll("#dms li")].some(li => li.textContent === "bob: psst, alice")`)

		// Bob leaves (navigates away): alice's list drops him at once,
		// not when a lease or a heartbeat runs out.
		bob.navigate(chatB.url("/ready"))
		alice.waitFor(10*time.Second, "bob's leave in alice's member list", `!document.querySelector('#members li[data-user="bob"]')`)
		alice.post("while bob was away")
		alice.waitFor(wait, "alice's second message", `document.querySelectorAll("#messages li").length === 2`)

		// Back: from the back/forward cache (reconnect and SYNC) or
		// loaded again (history); either way each message once.
		bob.eval(`history.back()`, nil)
		bob.waitLive()
		expectMessages(t, bob, []string{"hello bob", "while bob was away"})
		alice.waitFor(wait, "bob back in alice's member list", `document.querySelector('#members li[data-user="bob"]')`)
		var back struct{ Restored, Reconnects int }
		bob.eval(`({restored: window.chatRestored || 0, reconnects: chatClient.stats.reconnects})`, &back)
		t.Logf("bob's page came back from the back/forward cache: %v", back.Restored > 0)
		if back.Restored > 0 && back.Reconnects != 1 {
			t.Fatalf("bob's page came back from the cache with %d reconnections, want 1 (SYNC on pageshow)", back.Reconnects)
		}
	})

	t.Run("late joiner: history then live, no gap, no duplicate", func(t *testing.T) {
		alice.t, bob.t = t, t
		shotsOnFailure(t, alice, bob)
		room := roomName("late")
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		defer cancel()
		for n := 1; n <= 40; n++ {
			if err := pub.publish(ctx, room, n); err != nil {
				t.Fatal(err)
			}
		}
		// 41..90 go on while the page loads; 91..200 once it showed its
		// history (so that the history holds every earlier one).
		gate := make(chan struct{})
		_, done := pub.run(room, 41, 200, 10*time.Millisecond, 91, gate)
		bob.navigate(chatB.url("/?user=bob&room=" + room))
		bob.waitFor(wait, "the history", `document.querySelectorAll("#messages li").length > 0`)
		close(gate)
		waitDone(t, done)
		expectMessages(t, bob, numbers(200))
	})

	for _, crash := range []bool{false, true} {
		name := "restart (SIGTERM) of alice's instance during 200 publications"
		if crash {
			name = "crash (SIGKILL) of alice's instance during 200 publications"
		}
		t.Run(name, func(t *testing.T) {
			alice.t, bob.t = t, t
			shotsOnFailure(t, alice, bob)
			room := roomName("r")
			alice.open(chatA.url(""), "alice", room)
			bob.open(chatB.url(""), "bob", room)
			progress, done := pub.run(room, 1, 200, 15*time.Millisecond, 0, nil)
			waitProgress(t, progress, done, 50)
			if crash {
				chatA.killAndStart()
			} else {
				chatA.restart()
			}
			waitDone(t, done)
			expectMessages(t, alice, numbers(200))
			expectMessages(t, bob, numbers(200))
			alice.waitLive()
			var recovered int
			alice.eval(`chatClient.stats.recovered`, &recovered)
			t.Logf("alice's client recovered %d publications by SYNC", recovered)
			if recovered == 0 {
				t.Fatalf("alice's client recovered nothing: the instance went down without her missing a publication")
			}
			states := alice.states()
			if !subsequence(states, []string{"live", "reconnecting", "live"}) || slices.Contains(states, "not-recoverable") {
				t.Fatalf("alice's page showed %v, want live, reconnecting, live (and never not-recoverable)", states)
			}
			if st := bob.states(); slices.Contains(st, "reconnecting") {
				t.Fatalf("bob's page, on the other instance, showed %v", st)
			}
		})
	}
}

// TestChatNewEpoch restarts the chat on its in-memory scaler: the history
// is lost (a new epoch), and the page says "not recoverable", reloads the
// room and goes on.
func TestChatNewEpoch(t *testing.T) {
	testutil.CheckLeaks(t)
	bin := buildChat(t)
	owner := newProcOwner(t)
	chat := startChat(t, owner, bin, "chat", nil)
	br := startBrowser(t)
	dave := br.newPage(t, "dave")
	dave.open(chat.url(""), "dave", "epoch")
	dave.post("before the restart")
	dave.waitFor(wait, "the first message", `document.querySelectorAll("#messages li").length === 1`)

	// While the chat is down the page says so, Send is disabled, and a
	// message submitted anyway is kept with an error, not dropped.
	if err := chat.stop(); err != nil {
		t.Fatal(err)
	}
	dave.waitFor(wait, "the reconnecting state", `document.querySelector("#state").dataset.state === "reconnecting"`)
	var offline struct {
		Disabled bool   `json:"disabled"`
		Kept     string `json:"kept"`
		Notice   string `json:"notice"`
		Label    string `json:"label"`
	}
	dave.eval(`(() => {
		const f = document.querySelector("#post");
		f.text.value = "typed while offline";
		f.requestSubmit();
		return {
			disabled: f.querySelector("button").disabled,
			kept: f.text.value,
			notice: document.querySelector("#notice").textContent,
			label: document.querySelector("#state").textContent,
		};
	})()`, &offline)
	if !offline.Disabled || offline.Kept != "typed while offline" || !strings.Contains(offline.Notice, "not connected") {
		t.Fatalf("while the chat is down: %+v, want Send disabled, the text kept and a not-connected notice", offline)
	}
	t.Logf("while the chat is down the page shows %q", offline.Label)
	dave.eval(`document.querySelector("#post").text.value = ""`, nil)
	chat.start()
	dave.waitFor(wait, "live again after the restart", `window.chatStates.length >= 4 && document.querySelector("#state").dataset.state === "live"`)
	if states := dave.states(); !subsequence(states, []string{"live", "reconnecting", "not-recoverable", "live"}) {
		t.Fatalf("dave's page showed %v, want live, reconnecting, not-recoverable, live", states)
	}
	// Reloaded from the new (empty) history: the old message is gone.
	if got := dave.messages(); len(got) != 0 {
		t.Fatalf("after the reload the page shows %v, want the new epoch's (empty) history", got)
	}
	dave.post("after the restart")
	dave.waitFor(wait, "the later message", `document.querySelectorAll("#messages li").length === 1`)
	if got := dave.messages(); !slices.Equal(got, []string{"after the restart"}) {
		t.Fatalf("messages %v", got)
	}

	// The classic-script variant works in a page too.
	var kind string
	dave.eval(`new Promise((resolve) => {
		const s = document.createElement("script");
		s.src = "/sss.js?global";
		s.onload = () => resolve(typeof window.sss.connect);
		s.onerror = () => resolve("load error");
		document.head.append(s);
	})`, &kind)
	if kind != "function" {
		t.Fatalf("/sss.js?global in a page: window.sss.connect is %s", kind)
	}
}
