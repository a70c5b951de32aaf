// Command sss-ferretdb runs FerretDB v1 with its SQLite handler as a
// stand-alone MongoDB-compatible server for the sss tests.
//
// It lives in its own module so that FerretDB and its dependencies never
// reach the library's go.mod. internal/testutil builds it once into
// <module root>/.bin/sss-ferretdb and runs it as a separate process, so a
// test can stop it and start it again on the same data directory.
//
// Usage:
//
//	sss-ferretdb -listen 127.0.0.1:27017 -dir /tmp/data [-parent-pid N]
//
// Once it listens it prints one line to stdout:
//
//	sss-ferretdb ready mongodb://127.0.0.1:27017/
//
// It logs to stderr at warn level, stops on SIGTERM or SIGINT (letting open
// connections finish for at most -shutdown-grace, default 500ms), and
// exits on its own when the process given by -parent-pid goes away, so it
// never outlives a crashed test binary for long.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/FerretDB/FerretDB/ferretdb"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "sss-ferretdb:", err)
		os.Exit(1)
	}
}

func run() error {
	listen := flag.String("listen", "127.0.0.1:27017", "TCP address to listen on")
	dir := flag.String("dir", "", "SQLite data directory (created if missing)")
	parent := flag.Int("parent-pid", 0, "exit when this process is gone (0: do not watch)")
	grace := flag.Duration("shutdown-grace", 500*time.Millisecond, "on SIGTERM, how long to let open connections finish before exiting")
	flag.Parse()

	if *dir == "" {
		return errors.New("-dir is required")
	}
	abs, err := filepath.Abs(*dir)
	if err != nil {
		return fmt.Errorf("data dir: %w", err)
	}
	if err := os.MkdirAll(abs, 0o755); err != nil {
		return fmt.Errorf("data dir: %w", err)
	}

	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	if *parent > 0 {
		ctx = watchParent(ctx, *parent)
	}

	f, err := ferretdb.New(&ferretdb.Config{
		Listener:  ferretdb.ListenerConfig{TCP: *listen},
		Logger:    logger,
		Handler:   "sqlite",
		SQLiteURL: "file:" + abs + "/",
	})
	if err != nil {
		return err
	}

	// ferretdb.New has bound the listener already; Run starts accepting.
	// Connections arriving in between wait in the kernel's backlog.
	done := make(chan error, 1)
	go func() { done <- f.Run(ctx) }()

	fmt.Printf("sss-ferretdb ready %s\n", f.MongoDBURI())

	select {
	case err := <-done:
		return err
	case <-ctx.Done():
	}
	// FerretDB lets open connections run for seconds after cancellation.
	// Tests stop this server often and need it gone quickly; SQLite's WAL
	// keeps every committed write across an abrupt exit.
	select {
	case err := <-done:
		return err
	case <-time.After(*grace):
		return nil
	}
}

// watchParent returns a context cancelled when the process pid is no
// longer our parent (it died and we were re-parented), or when ctx ends.
func watchParent(ctx context.Context, pid int) context.Context {
	ctx, cancel := context.WithCancel(ctx)
	go func() {
		defer cancel()
		t := time.NewTicker(500 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				if os.Getppid() != pid {
					return
				}
			}
		}
	}()
	return ctx
}
