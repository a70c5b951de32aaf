// Package server is the sss WebSocket server: an http.Handler speaking the
// SSS wire protocol (PROTOCOL.md), wire-compatible with the JavaScript
// Super Scaled Sockets client, running as one of many instances connected
// through a scaler.Scaler.
//
// Usage:
//
//	srv, err := server.New(context.Background(), nil, server.Options{ // nil: in-memory scaler
//		SessionParser: func(r *http.Request) (*server.Session, error) {
//			return &server.Session{User: r.URL.Query().Get("user")}, nil
//		},
//	})
//	if err != nil { ... }
//	srv.HandleAsk("time", func(ctx context.Context, s *server.Socket, msg json.RawMessage) (any, error) {
//		return time.Now().Unix(), nil
//	})
//	http.Handle("/ws", srv)
//	...
//	uid, err := srv.Publish(ctx, "news", "article", article, server.PublishOptions{})
//	...
//	srv.Shutdown(ctx) // closes sockets with 1001, spread over 10 s
//
// # Delivery
//
// A socket receives the publications of its channels from its instance's
// ordered stream (never straight from a Publish call), in uid order, at
// most once live; across a reconnect the client recovers by SYNC exactly
// the publications it missed, or is told "not recoverable". A publication
// is encoded once and shared by every subscriber; the hub holds channels in
// 64 locked shards with copy-on-write subscriber lists.
//
// # Concurrency
//
// Every method of Server and Socket is safe for concurrent use. Each
// socket has one reader goroutine (not the HTTP handler's, which returns
// after the upgrade), which answers heartbeats and hands the other frames
// to a handler goroutine that runs only while frames wait and handles
// them one at a time in order; and a writer that runs only while frames
// are queued (a shared pool of goroutines that end when idle). Its send
// queue is bounded in frames and bytes and a socket that overflows it is
// closed with 4002. Heartbeats come from one timer wheel. Ask handlers
// run on goroutines of their own, bounded per socket; tell handlers and
// parsers run on the socket's handler goroutine; scaler callbacks never
// block. The hooks of Options say which goroutine calls them; none may
// block long, none is called under a lock of the server, and a panic in
// one is recovered and logged.
//
// # Failures
//
// Every scaler call made for a socket is bounded by
// Options.BackendTimeout and cancelled when the socket closes: with the
// backend down a SUBSCRIBE is answered "unavailable", and a SYNC or a
// BEGIN that needs it is closed with 1013 (the client retries later).
// Messages, topics and reasons must be valid UTF-8 (ErrInvalidPayload);
// a Publish whose outcome is unknown returns an error wrapping
// scaler.ErrUncertain, retried with the same idempotency key.
//
// # Writes
//
// Without compression the server writes WebSocket frames itself, several
// per write syscall, straight to the connection gorilla/websocket
// upgraded (see writer.go); every frame of such a socket goes that way.
// With Options.EnableCompression it writes through gorilla instead.
package server
