package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"

	"github.com/sss-go/sss/scaler"
	"github.com/sss-go/sss/scaler/mongoredis"
)

// holdChannels is how many channels the held members are spread over.
const holdChannels = 10

// runHold is the presence mode: the instance joins members presence
// entries spread over holdChannels channels ("hold-0", ...) and registers
// users users ("hold-user-0", ...), prints "HELD <instance id>" and then
// holds them until stdin ends (or the test kills it).
func runHold(mongoURI, redisURL, db, prefix string, members, users int, lease, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	s, err := mongoredis.New(ctx, mongoredis.Options{
		MongoURI: mongoURI, RedisURL: redisURL, Database: db, Prefix: prefix,
		LeaseTTL: lease, Logger: logger,
	})
	if err != nil {
		return err
	}
	defer s.Close(context.Background())
	if err := s.Start(ctx, scaler.Handler{}); err != nil {
		return err
	}
	for i := range members {
		ch := fmt.Sprintf("hold-%d", i%holdChannels)
		m := scaler.Member{ID: fmt.Sprintf("m%d", i), User: fmt.Sprintf("hold-user-%d", i%max(users, 1))}
		if err := s.Join(ctx, ch, m); err != nil {
			return err
		}
	}
	for i := range users {
		if err := s.AddUser(ctx, fmt.Sprintf("hold-user-%d", i)); err != nil {
			return err
		}
	}
	fmt.Println("HELD", s.ID())
	_, _ = io.Copy(io.Discard, os.Stdin)
	return nil
}
