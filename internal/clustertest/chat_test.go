package clustertest

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/sss-go/sss/internal/testutil"
	"github.com/sss-go/sss/protocol"
)

// chatFeed is one FEED of the lobby a raw client received.
type chatFeed struct {
	uid  protocol.UID
	text string
	user *string
}

// lobbyFeeds returns the FEEDs of room on topic "message" among frames.
func lobbyFeeds(t *testing.T, frames []*protocol.Message, room string) []chatFeed {
	t.Helper()
	var out []chatFeed
	for _, m := range frames {
		if m.Sys != protocol.SysFeed || m.Channel != room {
			continue
		}
		if m.Topic != "message" {
			t.Fatalf("FEED of %s on topic %q, want message", room, m.Topic)
		}
		var body struct {
			Text string  `json:"text"`
			User *string `json:"user"`
		}
		if err := json.Unmarshal(m.Msg, &body); err != nil {
			t.Fatalf("FEED msg %s: %v", m.Msg, err)
		}
		uid, err := protocol.ParseUID(m.UID)
		if err != nil {
			t.Fatalf("FEED uid %q: %v", m.UID, err)
		}
		out = append(out, chatFeed{uid: uid, text: body.Text, user: body.User})
	}
	return out
}

// TestChatProcesses runs examples/chat as three OS processes sharing the
// mongoredis scaler (MONGO_URI, REDIS_URL), with raw WebSocket clients on
// each: posts made concurrently from clients on different processes reach
// every client once, in one uid order; the members ask on one process
// counts the subscribers of all three; an admin's announce reaches every
// client on every process as BROADCAST. Then one process crashes
// (SIGKILL): its members vanish from the count when its lease ends, and
// the others go on posting and receiving.
func TestChatProcesses(t *testing.T) {
	testutil.CheckLeaks(t)
	const (
		procs     = 3
		perProc   = 2 // clients
		posts     = 50
		room      = "lobby"
		announced = "maintenance at noon"
	)
	bin := buildChat(t)
	cl := newCluster(t)
	owner := newProcOwner(t)
	env := []string{"MONGO_URI=" + cl.mongoURI, "REDIS_URL=" + cl.redisURL}
	var ps []*chatProc
	for i := range procs {
		ps = append(ps, startChat(t, owner, bin, fmt.Sprint("chat", i), env, "-hb", "0"))
	}

	type member struct {
		c       *rawClient
		user    string
		proc    int
		start   protocol.UID // lobby position at SUBSCRIBE
		userPos string       // user channel position at BEGIN
	}
	var ms []member
	for i, p := range ps {
		for j := range perProc {
			user := fmt.Sprintf("u%d%d", i, j)
			if i == 1 && j == 0 {
				user = "admin"
			}
			c, begin := dialRaw(t, fmt.Sprintf("chat%d/%s", i, user), p.wsURL(), user)
			if begin.Channel != protocol.UserChannel(user) {
				t.Fatalf("%s: BEGIN reply channel %q, want the user channel of %s", c.name, begin.Channel, user)
			}
			if begin.Prot == nil {
				t.Fatalf("%s: BEGIN reply without prot", c.name)
			}
			ms = append(ms, member{c: c, user: user, proc: i, start: c.subscribe(t, room), userPos: begin.LastUID})
		}
	}
	total := len(ms)
	for _, m := range ms[1:] {
		if m.start.Epoch != ms[0].start.Epoch {
			t.Fatalf("%s subscribed at %v, %s at %v: two epochs of one room", ms[0].c.name, ms[0].start, m.c.name, m.start)
		}
	}

	// members, asked on one process, counts the sockets of all three.
	asker := ms[0].c
	var count int
	testutil.WaitFor(t, wait, func() bool {
		r := asker.ask(t, "members", map[string]string{"room": room})
		if r.Err != nil {
			t.Fatalf("members: %+v", r.Err)
		}
		if err := json.Unmarshal(r.Msg, &count); err != nil {
			t.Fatalf("members answered %s: %v", r.Msg, err)
		}
		return count == total
	}, fmt.Sprintf("members of %s on %s to count all %d subscribers", room, asker.name, total))

	// Presence: the first subscriber hears every later one join, on
	// whichever process it is.
	first := ms[0]
	first.c.waitUntil(t, "join events of every later subscriber", func(fs []*protocol.Message) bool {
		joined := presenceUsers(t, fs, room, "join")
		for _, m := range ms[1:] {
			if !joined[m.user] {
				return false
			}
		}
		return true
	})

	// One poster per process, all at once, on sockets of their own
	// subscribed clients.
	release := make(chan struct{})
	errc := make(chan error, procs)
	var wg sync.WaitGroup
	for i := range procs {
		poster := ms[i*perProc]
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-release
			for n := 1; n <= posts; n++ {
				frame := fmt.Sprintf(`{"sys":6,"topic":"post","msg":{"room":%q,"text":"p%d-%d"}}`, room, i, n)
				if err := poster.c.Write(frame); err != nil {
					errc <- fmt.Errorf("%s: post %d: %w", poster.c.name, n, err)
					return
				}
			}
		}()
	}
	close(release)
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Fatal(err)
	}
	// Each poster's tells are published in the order sent (one reader per
	// socket): once every client has every poster's last post, a last
	// post shows any FEED received twice.
	want := procs * posts
	for _, m := range ms {
		m.c.waitUntil(t, fmt.Sprintf("the %d posts", want), func(fs []*protocol.Message) bool {
			return len(lobbyFeeds(t, fs, room)) >= want
		})
	}
	ms[0].c.Send(fmt.Sprintf(`{"sys":6,"topic":"post","msg":{"room":%q,"text":"end"}}`, room))

	var ref []chatFeed
	for _, m := range ms {
		m.c.waitUntil(t, "the end post", func(fs []*protocol.Message) bool {
			f := lobbyFeeds(t, fs, room)
			return len(f) > 0 && f[len(f)-1].text == "end"
		})
		feeds := lobbyFeeds(t, m.c.snapshot(t), room)
		if len(feeds) != want+1 {
			t.Errorf("%s: %d FEEDs, want %d", m.c.name, len(feeds), want+1)
		}
		next := make([]int, procs)
		for i := range next {
			next[i] = 1
		}
		for k, f := range feeds {
			if f.uid.Epoch != m.start.Epoch || f.uid.Seq != m.start.Seq+uint64(k)+1 {
				t.Errorf("%s: FEED %d has uid %v, want %s.%d (gap-free after the SUBSCRIBE position %v)", m.c.name, k, f.uid, m.start.Epoch, m.start.Seq+uint64(k)+1, m.start)
				break
			}
			if f.text == "end" {
				continue
			}
			p, n, ok := parsePost(f.text)
			if !ok || p >= procs || n != next[p] {
				t.Errorf("%s: FEED %d %q at %v out of its poster's order", m.c.name, k, f.text, f.uid)
				break
			}
			next[p]++
			if wantUser := ms[p*perProc].user; f.user == nil || *f.user != wantUser {
				t.Errorf("%s: FEED %q has user %v, want %q", m.c.name, f.text, f.user, wantUser)
			}
		}
		// One order on every process: the same uid for each text.
		if ref == nil {
			ref = feeds
			continue
		}
		for k := range min(len(ref), len(feeds)) {
			if ref[k].text != feeds[k].text || ref[k].uid != feeds[k].uid {
				t.Errorf("%s: FEED %d is %q at %v; %s got %q at %v", m.c.name, k, feeds[k].text, feeds[k].uid, ms[0].c.name, ref[k].text, ref[k].uid)
				break
			}
		}
	}
	for _, m := range ms {
		for _, f := range m.c.snapshot(t) {
			if f.Sys == protocol.SysTell && f.Topic == "error" || f.Sys == 0 {
				t.Errorf("%s: error from the chat: %s %+v", m.c.name, f.Msg, f.Err)
			}
		}
	}

	// announce: refused for others, a BROADCAST everywhere for admin.
	if r := ms[0].c.ask(t, "announce", map[string]string{"text": "not me"}); r.Err == nil || r.Err.Code != protocol.CodeForbidden {
		t.Errorf("announce by %s answered %s %+v, want code forbidden", ms[0].user, r.Msg, r.Err)
	}
	admin := ms[perProc].c
	if r := admin.ask(t, "announce", map[string]string{"text": announced}); r.Err != nil || strings.TrimSpace(string(r.Msg)) != "true" {
		t.Fatalf("announce by admin answered %s %+v, want true", r.Msg, r.Err)
	}
	for _, m := range ms {
		b := m.c.waitFrame(t, "the announcement", func(f *protocol.Message) bool { return f.Sys == protocol.SysBroadcast })
		var body struct {
			Text string `json:"text"`
		}
		if err := json.Unmarshal(b.Msg, &body); b.Topic != "announcement" || err != nil || body.Text != announced {
			t.Errorf("%s: BROADCAST %q %s, want announcement {\"text\":%q}", m.c.name, b.Topic, b.Msg, announced)
		}
	}

	// dm from a user on one process to a user on another: a FEED on the
	// receiver's user channel, right after its BEGIN position.
	from, to := ms[0], ms[perProc+1]
	from.c.Send(fmt.Sprintf(`{"sys":6,"topic":"dm","msg":{"to":%q,"text":"psst"}}`, to.user))
	dm := to.c.waitFrame(t, "the dm", func(f *protocol.Message) bool { return f.Sys == protocol.SysFeed && f.Topic == "dm" })
	var dmBody struct {
		Text string `json:"text"`
		From string `json:"from"`
	}
	if err := json.Unmarshal(dm.Msg, &dmBody); err != nil || dmBody.Text != "psst" || dmBody.From != from.user ||
		dm.Channel != protocol.UserChannel(to.user) || !uidAfter(dm.UID, to.userPos) {
		t.Errorf("%s: dm FEED %s on %s at %s (user channel at %s), want {psst from %s} on %s right after", to.c.name, dm.Msg, dm.Channel, dm.UID, to.userPos, from.user, protocol.UserChannel(to.user))
	}

	// kick by admin on one process boots the user's socket on another:
	// BOOT with the reason, then close 4001.
	kicked := ms[total-1]
	if r := admin.ask(t, "kick", map[string]string{"user": kicked.user, "reason": "bye"}); r.Err != nil || strings.TrimSpace(string(r.Msg)) != "true" {
		t.Fatalf("kick by admin answered %s %+v, want true", r.Msg, r.Err)
	}
	boot := kicked.c.waitFrame(t, "BOOT", func(f *protocol.Message) bool { return f.Sys == protocol.SysBoot })
	if boot.Reason != "bye" {
		t.Errorf("%s: BOOT reason %q, want bye", kicked.c.name, boot.Reason)
	}
	var ce *websocket.CloseError
	if err := kicked.c.closeErr(t); !errors.As(err, &ce) || ce.Code != protocol.CloseBooted || ce.Text != "bye" {
		t.Errorf("%s: connection ended with %v, want close %d bye", kicked.c.name, err, protocol.CloseBooted)
	}

	// ... and its leaving the lobby reaches the others as a presence
	// leave.
	first.c.waitUntil(t, "the kicked user's leave event", func(fs []*protocol.Message) bool {
		return presenceUsers(t, fs, room, "leave")[kicked.user]
	})

	// Crash: the last process dies without a word. Its sockets' presence
	// lives under its lease; the count on the others drops once the lease
	// ends (the chat uses the scaler's default lease, 10 s).
	ps[procs-1].kill()
	alive := ms[:total-perProc] // the kicked socket was on the crashed process too
	testutil.WaitFor(t, wait, func() bool {
		r := asker.ask(t, "members", map[string]string{"room": room})
		if r.Err != nil {
			t.Fatalf("members: %+v", r.Err)
		}
		if err := json.Unmarshal(r.Msg, &count); err != nil {
			t.Fatalf("members answered %s: %v", r.Msg, err)
		}
		return count == len(alive)
	}, fmt.Sprintf("members of %s to drop to the %d sockets of the live processes", room, len(alive)))
	ms[perProc].c.Send(fmt.Sprintf(`{"sys":6,"topic":"post","msg":{"room":%q,"text":"after the crash"}}`, room))
	for _, m := range alive {
		m.c.waitUntil(t, "the post after the crash", func(fs []*protocol.Message) bool {
			f := lobbyFeeds(t, fs, room)
			return len(f) > 0 && f[len(f)-1].text == "after the crash"
		})
		f := lobbyFeeds(t, m.c.snapshot(t), room)
		if last := f[len(f)-1].uid; len(f) != want+2 || last.Seq != m.start.Seq+uint64(want)+2 {
			t.Errorf("%s: after the crash, %d FEEDs ending at %v; want %d ending at seq %d", m.c.name, len(f), last, want+2, m.start.Seq+uint64(want)+2)
		}
	}

	// A client of the crashed process reconnects to another one and
	// recovers by SYNC (no BEGIN): its user channel is granted again and
	// the post it missed comes in records.
	gone := ms[total-perProc]
	gf := lobbyFeeds(t, gone.c.snapshot(t), room)
	lastSeen := gf[len(gf)-1].uid
	rc := connectRaw(t, "chat0/"+gone.user+"-resync", ps[0].wsURL(), gone.user)
	rc.Send(fmt.Sprintf(`{"sys":4,"subscriptions":[{"channel":%q,"lastUid":%q,"query":null},{"channel":%q,"lastUid":%q,"query":null}]}`,
		protocol.UserChannel(gone.user), gone.userPos, room, lastSeen.String()))
	sr := rc.waitFrame(t, "SYNC reply", func(f *protocol.Message) bool { return f.Sys == protocol.SysSync })
	if !sr.SyncResult[room] || !sr.SyncResult[protocol.UserChannel(gone.user)] || len(sr.SyncResult) != 2 {
		t.Errorf("%s: SYNC result %v errors %v, want both channels true", rc.name, sr.SyncResult, sr.SyncErrors)
	}
	if len(sr.Records) != 1 || sr.Records[0].Channel != room || sr.Records[0].UID != lastSeen.Next().String() {
		t.Errorf("%s: SYNC records %+v, want the one post after %v", rc.name, sr.Records, lastSeen)
	} else if !strings.Contains(string(sr.Records[0].Msg), "after the crash") {
		t.Errorf("%s: SYNC record %s, want the post made after the crash", rc.name, sr.Records[0].Msg)
	}
	ms[0].c.Send(fmt.Sprintf(`{"sys":6,"topic":"post","msg":{"room":%q,"text":"after the resync"}}`, room))
	live := rc.waitFrame(t, "a live FEED after the SYNC", func(f *protocol.Message) bool { return f.Sys == protocol.SysFeed && f.Channel == room })
	if live.UID != lastSeen.Next().Next().String() || !strings.Contains(string(live.Msg), "after the resync") {
		t.Errorf("%s: first live FEED %s at %s, want the next post at %v", rc.name, live.Msg, live.UID, lastSeen.Next().Next())
	}

	// SIGTERM: a graceful shutdown closes the sockets with 1001 or 1012
	// (so clients reconnect elsewhere), then the process exits 0.
	termAt := time.Now()
	if err := ps[1].stop(); err != nil {
		t.Errorf("%v\n--- log ---\n%s", err, ps[1].logTail())
	}
	t.Logf("%s exited %v after SIGTERM with %d sockets", ps[1].name, time.Since(termAt).Round(time.Millisecond), perProc)
	for _, m := range ms[perProc : 2*perProc] {
		err := m.c.closeErr(t)
		if !errors.As(err, &ce) || (ce.Code != websocket.CloseGoingAway && ce.Code != websocket.CloseServiceRestart) {
			t.Errorf("%s: connection ended with %v on SIGTERM, want close 1001 or 1012", m.c.name, err)
		}
	}
}

// presenceUsers returns the users of the "_presence" tells of room for
// event ("join" or "leave") among frames.
func presenceUsers(t *testing.T, frames []*protocol.Message, room, event string) map[string]bool {
	t.Helper()
	out := map[string]bool{}
	for _, f := range frames {
		if f.Sys != protocol.SysTell || f.Topic != protocol.PresenceTopic {
			continue
		}
		var e struct {
			Channel string `json:"channel"`
			Event   string `json:"event"`
			Member  struct {
				User string `json:"user"`
			} `json:"member"`
		}
		if err := json.Unmarshal(f.Msg, &e); err != nil {
			t.Fatalf("presence tell %s: %v", f.Msg, err)
		}
		if e.Channel == room && e.Event == event {
			out[e.Member.User] = true
		}
	}
	return out
}

// uidAfter reports whether uid is the publication right after position
// pos (same epoch, next seq).
func uidAfter(uid, pos string) bool {
	u, err1 := protocol.ParseUID(uid)
	p, err2 := protocol.ParseUID(pos)
	return err1 == nil && err2 == nil && u == p.Next()
}

// parsePost reads "p<poster>-<n>".
func parsePost(s string) (p, n int, ok bool) {
	a, b, found := strings.Cut(strings.TrimPrefix(s, "p"), "-")
	if !found || !strings.HasPrefix(s, "p") {
		return 0, 0, false
	}
	p, err1 := strconv.Atoi(a)
	n, err2 := strconv.Atoi(b)
	return p, n, err1 == nil && err2 == nil && p >= 0
}
