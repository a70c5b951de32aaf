// Command chat is the sss example chat server (its contract:
// examples/chat/README.md).
//
//	go run ./examples/chat                 # http://localhost:8080
//	go run ./examples/chat -addr :9000 -hb 10s -shutdown-spread 0
//
// SIGINT or SIGTERM stops it: the listener closes first (the port is free
// for a restart at once), then the open sockets are closed with 1001 over
// -shutdown-spread (default 1s) so their clients reconnect at different
// times; a second signal exits at once.
//
// Rooms are channels with presence events; users post with the "post"
// tell and send direct messages with "dm". With MONGO_URI and REDIS_URL in
// the environment it uses the mongoredis scaler, so several copies share
// rooms; otherwise the embedded in-memory scaler. It logs where it
// connects (passwords hidden) and, when MongoDB or Redis cannot be
// reached within -connect-timeout, exits with status 1 and an error naming
// the address.
//
// The example trusts the user id the client gives (the "user" query
// parameter or the "sss_user" cookie), "admin" included: a real app
// authenticates in its session parser.
package main

import (
	"context"
	_ "embed"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/sss-go/sss/scaler"
	"github.com/sss-go/sss/scaler/mongoredis"
)

//go:embed index.html
var indexHTML []byte

func main() {
	addr := flag.String("addr", ":8080", "listen address HOST:PORT")
	hb := flag.Duration("hb", 30*time.Second, "heartbeat interval (0 turns heartbeats off)")
	spread := flag.Duration("shutdown-spread", time.Second, "on SIGINT/SIGTERM, close the open sockets over this period (0: all at once)")
	connect := flag.Duration("connect-timeout", 10*time.Second, "how long to try reaching MongoDB and Redis at startup")
	flag.Parse()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	if err := run(*addr, config{hb: *hb, spread: spreadOption(*spread), connect: *connect, log: log}); err != nil {
		log.Error("chat", "err", err)
		os.Exit(1)
	}
}

// spreadOption maps the -shutdown-spread flag to server.Options'
// ShutdownSpread, where 0 means the default and negative all at once.
func spreadOption(d time.Duration) time.Duration {
	if d <= 0 {
		return -1
	}
	return d
}

// onSignals returns a context cancelled by the first SIGINT or SIGTERM; a
// second one exits the process at once.
func onSignals(log *slog.Logger) context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	go func() {
		s := <-sigs
		log.Info("shutting down: a second signal exits at once", "signal", s.String())
		cancel()
		s = <-sigs
		log.Warn("second signal: exiting now", "signal", s.String())
		os.Exit(1)
	}()
	return ctx
}

func run(addr string, cfg config) error {
	log := cfg.log
	ctx := onSignals(log)

	var sc scaler.Scaler
	if mongoURI, redisURL := os.Getenv("MONGO_URI"), os.Getenv("REDIS_URL"); mongoURI != "" && redisURL != "" {
		log.Info("connecting to", "mongo", redactURI(mongoURI), "redis", redactURI(redisURL), "timeout", cfg.connect)
		mr, err := mongoredis.New(ctx, mongoredis.Options{MongoURI: mongoURI, RedisURL: redisURL, ConnectTimeout: cfg.connect, Logger: log})
		if err != nil {
			return fmt.Errorf("mongoredis scaler: %w", err)
		}
		defer func() {
			cctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_ = mr.Close(cctx)
		}()
		sc = mr
		log.Info("using the mongoredis scaler")
	}

	app, err := newApp(sc, cfg)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	hs := &http.Server{Handler: app.mux, ReadHeaderTimeout: 10 * time.Second}
	fmt.Printf("chat: open http://%s/\n", displayAddr(ln.Addr()))
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), max(cfg.spread, 0)+10*time.Second)
	defer cancel()
	// The listener first, so the port is free for a restart at once; then
	// the sockets, closed with 1001 over the spread. hs.Shutdown does not
	// wait for WebSockets (hijacked), but does wait for connections a
	// browser opened ahead and never used: give plain requests still under
	// way a second, then close what is left.
	_ = ln.Close()
	hdone := make(chan error, 1)
	go func() { hdone <- hs.Shutdown(sctx) }()
	serr := app.srv.Shutdown(sctx)
	var herr error
	select {
	case herr = <-hdone:
	case <-time.After(time.Second):
		_ = hs.Close()
		herr = <-hdone
	}
	if serr != nil {
		return fmt.Errorf("shutdown: %w", serr)
	}
	// The listener was closed above: hs.Shutdown's own close of it fails.
	if herr != nil && !errors.Is(herr, http.ErrServerClosed) && !errors.Is(herr, net.ErrClosed) {
		return fmt.Errorf("http shutdown: %w", herr)
	}
	log.Info("stopped")
	return nil
}

// redactURI hides the password of a connection string
// (scheme://user:password@host...), so that it can be logged.
func redactURI(s string) string {
	i := strings.Index(s, "://")
	if i < 0 {
		return s
	}
	rest := s[i+3:]
	end := strings.IndexAny(rest, "/?#")
	if end < 0 {
		end = len(rest)
	}
	at := strings.LastIndex(rest[:end], "@")
	if at < 0 {
		return s
	}
	user, _, hasPass := strings.Cut(rest[:at], ":")
	if !hasPass {
		return s
	}
	return s[:i+3] + user + ":xxxxx" + rest[at:]
}

// displayAddr turns a listen address into one a browser can open.
func displayAddr(a net.Addr) string {
	host, port, err := net.SplitHostPort(a.String())
	if err != nil {
		return a.String()
	}
	if ip := net.ParseIP(host); ip == nil || ip.IsUnspecified() {
		host = "localhost"
	}
	return net.JoinHostPort(host, port)
}
