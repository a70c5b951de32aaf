// Command chat is the sss example chat server (its contract: CHAT.md).
//
//	go run ./examples/chat                 # http://localhost:8080
//	go run ./examples/chat -addr :9000 -hb 10s
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
	connect := flag.Duration("connect-timeout", 10*time.Second, "how long to try reaching MongoDB and Redis at startup")
	flag.Parse()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	if err := run(*addr, *hb, *connect, log); err != nil {
		log.Error("chat", "err", err)
		os.Exit(1)
	}
}

func run(addr string, hb, connect time.Duration, log *slog.Logger) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	var sc scaler.Scaler
	if mongoURI, redisURL := os.Getenv("MONGO_URI"), os.Getenv("REDIS_URL"); mongoURI != "" && redisURL != "" {
		log.Info("connecting to", "mongo", redactURI(mongoURI), "redis", redactURI(redisURL), "timeout", connect)
		mr, err := mongoredis.New(ctx, mongoredis.Options{MongoURI: mongoURI, RedisURL: redisURL, ConnectTimeout: connect, Logger: log})
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

	app, err := newApp(sc, config{hb: hb, log: log})
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
	log.Info("shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	// Sockets first (spread closes with 1001), then the HTTP server.
	serr := app.srv.Shutdown(sctx)
	if err := hs.Shutdown(sctx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return serr
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
