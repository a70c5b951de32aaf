// Command asktell shows the three ways a Go client and an sss server talk
// besides channels: ask (request and response), tell (one-way, client to
// server) and server tells (one-way, server to one socket or one user).
//
//	go run ./examples/asktell -demo          # server and client in one process; exits
//	go run ./examples/asktell -addr :8080    # the server alone, for other clients
//
// In demo mode the client asks "add" for a sum, tells "hello" (the server
// answers with a tell "welcome"), and receives a tell the server sends to
// its user with TellUser.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"time"

	"github.com/sss-go/sss/client"
	"github.com/sss-go/sss/protocol"
	"github.com/sss-go/sss/server"
)

func main() {
	demo := flag.Bool("demo", false, "run a server and a client in this process, then exit")
	addr := flag.String("addr", "127.0.0.1:8080", "address the server listens on (without -demo)")
	flag.Parse()
	if *demo {
		if err := runDemo(); err != nil {
			log.Fatal(err)
		}
		return
	}
	if err := serve(*addr); err != nil {
		log.Fatal(err)
	}
}

// newServer builds the example's server: an in-memory scaler, the user
// taken from the "user" query parameter, one ask and one tell handler.
func newServer() (*server.Server, error) {
	srv, err := server.New(context.Background(), nil, server.Options{
		SessionParser: func(r *http.Request) (*server.Session, error) {
			return &server.Session{User: r.URL.Query().Get("user")}, nil
		},
	})
	if err != nil {
		return nil, err
	}
	// ask "add": {"a":1,"b":2} -> 3. A *protocol.Error reaches the client
	// as is; any other error as "internal".
	srv.HandleAsk("add", func(ctx context.Context, sock *server.Socket, msg json.RawMessage) (any, error) {
		var in struct{ A, B *float64 }
		if err := json.Unmarshal(msg, &in); err != nil || in.A == nil || in.B == nil {
			return nil, protocol.NewError("bad_numbers", `want {"a":<number>,"b":<number>}`)
		}
		return *in.A + *in.B, nil
	})
	// tell "hello": answered by a tell back to the same socket.
	srv.HandleTell("hello", func(ctx context.Context, sock *server.Socket, msg json.RawMessage) {
		var name string
		_ = json.Unmarshal(msg, &name)
		if err := sock.Tell("welcome", "hello "+name+", you are "+sock.User()); err != nil {
			slog.Warn("tell failed", "err", err)
		}
	})
	return srv, nil
}

func serve(addr string) error {
	srv, err := newServer()
	if err != nil {
		return err
	}
	hs := &http.Server{Addr: addr, Handler: srv, ReadHeaderTimeout: 10 * time.Second}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
		_ = hs.Shutdown(sctx)
	}()
	log.Printf("asktell server on ws://%s/?user=<name>", addr)
	if err := hs.ListenAndServe(); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

func runDemo() error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	srv, err := newServer()
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	hs := &http.Server{Handler: srv, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = hs.Serve(ln) }()
	defer func() {
		_ = srv.Shutdown(ctx)
		_ = hs.Shutdown(ctx)
	}()

	welcome := make(chan string, 1)
	notice := make(chan string, 1)
	c, err := client.Dial(ctx, "ws://"+ln.Addr().String()+"/?user=ada", client.Options{
		// Register handlers before the first connection, so nothing is
		// missed.
		Setup: func(c *client.Client) {
			c.OnTell("welcome", func(msg json.RawMessage) {
				var s string
				_ = json.Unmarshal(msg, &s)
				welcome <- s
			})
			c.OnTell("notice", func(msg json.RawMessage) {
				var s string
				_ = json.Unmarshal(msg, &s)
				notice <- s
			})
		},
	})
	if err != nil {
		return err
	}
	defer c.Close()

	// Ask: a request with a typed response.
	var sum float64
	if err := c.Ask(ctx, "add", map[string]float64{"a": 2, "b": 40}, &sum); err != nil {
		return err
	}
	fmt.Println("add(2, 40) =", sum)

	// A server error comes back typed.
	err = c.Ask(ctx, "add", "not numbers", nil)
	var perr *protocol.Error
	if !errors.As(err, &perr) {
		return fmt.Errorf("want a server error, got %v", err)
	}
	fmt.Println("add(\"not numbers\") failed:", perr.Code)

	// Tell: one-way; this server answers with a tell of its own.
	if err := c.Tell(ctx, "hello", "Ada"); err != nil {
		return err
	}
	select {
	case s := <-welcome:
		fmt.Println("server told:", s)
	case <-ctx.Done():
		return ctx.Err()
	}

	// A server tell to a user, from anywhere in the deployment.
	if err := srv.TellUser(ctx, "ada", "notice", "the coffee is ready"); err != nil {
		return err
	}
	select {
	case s := <-notice:
		fmt.Println("server told the user:", s)
	case <-ctx.Done():
		return ctx.Err()
	}
	return nil
}
