package server_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"time"

	"github.com/sss-go/sss/server"
)

func ExampleNew() {
	srv, err := server.New(context.Background(), nil, server.Options{ // nil: the in-memory scaler
		SessionParser: func(r *http.Request) (*server.Session, error) {
			return &server.Session{User: r.URL.Query().Get("user")}, nil
		},
		HeartbeatInterval: 30 * time.Second,
	})
	if err != nil {
		panic(err)
	}
	srv.HandleAsk("echo", func(ctx context.Context, s *server.Socket, msg json.RawMessage) (any, error) {
		return msg, nil
	})
	mux := http.NewServeMux()
	mux.Handle("/ws", srv)
	mux.Handle("/ready", srv.ReadyHandler())

	ctx := context.Background()
	uid, err := srv.Publish(ctx, "news", "article", map[string]string{"title": "hello"}, server.PublishOptions{})
	fmt.Println(uid.Seq, err)

	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	fmt.Println(srv.Shutdown(ctx))
	// Output:
	// 1 <nil>
	// <nil>
}
