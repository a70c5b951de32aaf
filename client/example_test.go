package client_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http/httptest"
	"strings"
	"time"

	"github.com/sss-go/sss/client"
	"github.com/sss-go/sss/server"
)

// exampleServer starts an in-memory sss server for the examples and
// returns its WebSocket URL and a function that stops it.
func exampleServer() (*server.Server, string, func()) {
	srv, err := server.New(context.Background(), nil, server.Options{ShutdownSpread: -1, Logger: quiet()})
	if err != nil {
		panic(err)
	}
	srv.HandleAsk("upper", func(ctx context.Context, sock *server.Socket, msg json.RawMessage) (any, error) {
		var s string
		if err := json.Unmarshal(msg, &s); err != nil {
			return nil, err
		}
		return strings.ToUpper(s), nil
	})
	ts := httptest.NewServer(srv)
	stop := func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		ts.Close()
	}
	return srv, "ws" + strings.TrimPrefix(ts.URL, "http"), stop
}

func ExampleDial() {
	_, url, stop := exampleServer()
	defer stop()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, url, client.Options{
		// Further URLs are tried in turn when one fails.
		URLs:          []string{url},
		ReconnectBase: 100 * time.Millisecond,
		Logger:        quiet(),
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()
	fmt.Println(c.Status())
	// Output: ready
}

func ExampleClient_Ask() {
	_, url, stop := exampleServer()
	defer stop()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, url, client.Options{Logger: quiet()})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()

	var reply string
	if err := c.Ask(ctx, "upper", "hello", &reply); err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(reply)

	// A server error comes back typed.
	err = c.Ask(ctx, "nosuchtopic", nil, nil)
	var serr *client.ServerError
	if errors.As(err, &serr) {
		fmt.Println(serr.Code())
	}
	// Output:
	// HELLO
	// unknown_topic
}

func ExampleClient_Subscribe() {
	srv, url, stop := exampleServer()
	defer stop()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, url, client.Options{Logger: quiet()})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()

	sub, err := c.Subscribe(ctx, "scores", map[string]string{"team": "blue"})
	if err != nil {
		fmt.Println(err)
		return
	}
	got := make(chan string, 1)
	sub.On("goal", func(msg json.RawMessage, uid string) { got <- string(msg) })
	sub.OnStatusChange(func(s, old client.SubStatus, err error) {
		if s == client.SubNotRecoverable {
			// Missed publications are gone: reload the channel's state.
			fmt.Println("reload scores:", err)
		}
	})

	// Anything in the deployment may publish; here the server itself.
	if _, err := srv.Publish(ctx, "scores", "goal", map[string]int{"blue": 1}, server.PublishOptions{}); err != nil {
		fmt.Println(err)
		return
	}
	select {
	case msg := <-got:
		fmt.Println(msg)
	case <-ctx.Done():
		fmt.Println(ctx.Err())
	}
	// Output: {"blue":1}
}
