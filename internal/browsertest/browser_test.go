package browsertest

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
)

// browser is one headless Chromium for a test; its pages are tabs.
type browser struct {
	ctx context.Context
}

// startBrowser starts Chromium (/usr/bin/chromium, or $SSS_CHROMIUM)
// with a fresh profile; it is closed when the test ends.
func startBrowser(t *testing.T) *browser {
	t.Helper()
	exe := os.Getenv("SSS_CHROMIUM")
	if exe == "" {
		exe = lookPath(t, "chromium")
	}
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(exe),
		chromedp.Flag("headless", true),
		chromedp.NoSandbox, // the tests run as root
		chromedp.DisableGPU,
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-quic", true),
		chromedp.NoFirstRun,
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1200, 800),
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(func() {
		cancel()
		cancelAlloc()
	})
	// The first Do starts the browser, on the context that keeps it: a
	// context derived from it would close the browser when it ends.
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start Chromium %s: %v", exe, err)
	}
	return &browser{ctx: ctx}
}

// page is one tab.
type page struct {
	t    *testing.T
	name string
	ctx  context.Context

	mu      sync.Mutex
	console []string // console messages and uncaught exceptions
}

// newPage opens a tab; when the test fails, its screenshot is saved and
// the log says where.
func (b *browser) newPage(t *testing.T, name string) *page {
	t.Helper()
	ctx, cancel := chromedp.NewContext(b.ctx)
	p := &page{t: t, name: name, ctx: ctx}
	if err := chromedp.Do(ctx); err != nil { // opens the tab (see startBrowser)
		t.Fatalf("open page %s: %v", name, err)
	}
	if err := chromedp.Listen(ctx, p.record); err != nil {
		t.Fatalf("page %s: listen: %v", name, err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			p.t = t
			p.screenshot()
		}
		cancel()
	})
	return p
}

// record keeps the page's console output and uncaught exceptions, for
// failure messages. It runs on chromedp's reading goroutine: quick.
func (p *page) record(ev any) {
	var line string
	switch ev := ev.(type) {
	case *runtime.EventConsoleAPICalled:
		var parts []string
		for _, a := range ev.Args {
			if len(a.Value) > 0 {
				parts = append(parts, string(a.Value))
			} else {
				parts = append(parts, a.Description)
			}
		}
		line = string(ev.Type) + ": " + strings.Join(parts, " ")
	case *runtime.EventExceptionThrown:
		d := ev.ExceptionDetails
		line = "exception: " + d.Text
		if d.Exception != nil {
			line += " " + d.Exception.Description
		}
	default:
		return
	}
	p.mu.Lock()
	p.console = append(p.console, time.Now().Format("15:04:05.000")+" "+line)
	if len(p.console) > 50 {
		p.console = p.console[len(p.console)-50:]
	}
	p.mu.Unlock()
}

// actionTimeout bounds one action on a page.
const actionTimeout = 20 * time.Second

// do runs actions on the page, bounded by actionTimeout.
func (p *page) do(actions ...chromedp.Action[chromedp.Void]) error {
	ctx, cancel := context.WithTimeout(p.ctx, actionTimeout)
	defer cancel()
	return chromedp.Do(ctx, actions...)
}

// run runs one action with a result on the page, bounded by actionTimeout.
func run[T any](p *page, a chromedp.Action[T]) (T, error) {
	ctx, cancel := context.WithTimeout(p.ctx, actionTimeout)
	defer cancel()
	return chromedp.Run(ctx, a)
}

var unsafeName = regexp.MustCompile(`[^A-Za-z0-9_.-]+`)

// screenshot saves the page as PNG under $SSS_SCREENSHOTS (default
// <repository>/.bin/screenshots) and logs the path.
func (p *page) screenshot() {
	dir := os.Getenv("SSS_SCREENSHOTS")
	if dir == "" {
		dir = filepath.Join("..", "..", ".bin", "screenshots")
	}
	if abs, err := filepath.Abs(dir); err == nil {
		dir = abs
	}
	p.mu.Lock()
	console := strings.Join(p.console, "\n  ")
	p.mu.Unlock()
	if console != "" {
		p.t.Logf("console of page %s:\n  %s", p.name, console)
	}
	buf, err := run(p, chromedp.CaptureScreenshot())
	if err != nil {
		p.t.Logf("screenshot of page %s: %v", p.name, err)
		return
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		p.t.Logf("screenshot of page %s: %v", p.name, err)
		return
	}
	name := unsafeName.ReplaceAllString(p.t.Name()+"-"+p.name, "_") + ".png"
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, buf, 0o644); err != nil {
		p.t.Logf("screenshot of page %s: %v", p.name, err)
		return
	}
	p.t.Logf("screenshot of page %s saved: %s", p.name, path)
}

func (p *page) navigate(url string) {
	p.t.Helper()
	if err := p.do(chromedp.Navigate(url)); err != nil {
		p.t.Fatalf("page %s: navigate %s: %v", p.name, url, err)
	}
}

// eval evaluates a JavaScript expression (awaiting a promise) into v.
func (p *page) eval(expr string, v any) {
	p.t.Helper()
	raw, err := run(p, chromedp.Evaluate[[]byte](expr, chromedp.EvalAwaitPromise))
	if err != nil {
		p.t.Fatalf("page %s: evaluate %s: %v", p.name, expr, err)
	}
	if v != nil && len(raw) > 0 {
		if err := json.Unmarshal(raw, v); err != nil {
			p.t.Fatalf("page %s: evaluate %s: result %s: %v", p.name, expr, raw, err)
		}
	}
}

// waitFor polls a boolean JavaScript expression until it is true (the
// page changes on its own: the server pushes to it), failing the test
// with what describe returns after d.
func (p *page) waitFor(d time.Duration, what, expr string) {
	p.t.Helper()
	deadline := time.Now().Add(d)
	for {
		var ok bool
		raw, err := run(p, chromedp.Evaluate[[]byte]("!!("+expr+")"))
		if err == nil {
			_ = json.Unmarshal(raw, &ok)
		}
		if ok {
			return
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("page %s: timed out after %v waiting for %s (%s); page state: %s", p.name, d, what, expr, p.describe())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// describe summarises the page's state for failure messages.
func (p *page) describe() string {
	var s struct {
		URL      string   `json:"url"`
		State    string   `json:"state"`
		States   []string `json:"states"`
		Messages int      `json:"messages"`
		Members  []string `json:"members"`
		Notice   string   `json:"notice"`
	}
	raw, err := run(p, chromedp.Evaluate[[]byte](`({
		url: location.href,
		state: document.querySelector("#state") ? document.querySelector("#state").textContent : "",
		states: window.chatStates || [],
		messages: document.querySelectorAll("#messages li").length,
		members: [...document.querySelectorAll("#members li")].map(li => li.textContent),
		notice: document.querySelector("#notice") ? document.querySelector("#notice").textContent : "",
	})`))
	if err != nil {
		return "(" + err.Error() + ")"
	}
	_ = json.Unmarshal(raw, &s)
	return fmt.Sprintf("%+v", s)
}

// open loads the chat page as user in room and waits until it is live.
func (p *page) open(base, user, room string) {
	p.t.Helper()
	p.navigate(base + "/?user=" + user + "&room=" + room)
	p.waitLive()
}

func (p *page) waitLive() {
	p.t.Helper()
	p.waitFor(wait, "the live state", `document.querySelector("#state").dataset.state === "live"`)
}

// messages returns the texts of the room's messages shown, in order.
func (p *page) messages() []string {
	p.t.Helper()
	var out []string
	p.eval(`[...document.querySelectorAll("#messages li .text")].map(e => e.textContent)`, &out)
	return out
}

// states returns the connection states the page showed, in order.
func (p *page) states() []string {
	p.t.Helper()
	var out []string
	p.eval(`window.chatStates`, &out)
	return out
}

// members returns the member list's entries.
func (p *page) members() []string {
	p.t.Helper()
	var out []string
	p.eval(`[...document.querySelectorAll("#members li")].map(e => e.dataset.user || e.textContent)`, &out)
	return out
}

// post types text into the message box and clicks Send.
func (p *page) post(text string) {
	p.t.Helper()
	if err := p.do(
		chromedp.SendKeys(chromedp.CSS("#post input"), text),
		chromedp.Click(chromedp.CSS("#post button")),
	); err != nil {
		p.t.Fatalf("page %s: post %q: %v", p.name, text, err)
	}
}

// sendDM fills the DM form and clicks Send DM.
func (p *page) sendDM(to, text string) {
	p.t.Helper()
	if err := p.do(
		chromedp.SendKeys(chromedp.CSS("#dm input[name=to]"), to),
		chromedp.SendKeys(chromedp.CSS("#dm input[name=text]"), text),
		chromedp.Click(chromedp.CSS("#dm button")),
	); err != nil {
		p.t.Fatalf("page %s: DM to %s: %v", p.name, to, err)
	}
}

// jsString quotes s as a JavaScript string literal.
func jsString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// subsequence reports whether want appears in got in order (not
// necessarily adjacent).
func subsequence(got, want []string) bool {
	i := 0
	for _, g := range got {
		if i < len(want) && g == want[i] {
			i++
		}
	}
	return i == len(want)
}
