// Package server is the sss WebSocket server: an http.Handler speaking the
// sss wire protocol (docs/protocol.md), which the JavaScript Super Scaled
// Sockets client speaks too, running as one of many instances connected
// through a scaler.Scaler (docs/architecture.md). A Publisher sends from a
// process that serves no sockets, with the same Publish, Broadcast, Boot
// and Tell methods as a Server.
//
// Usage:
//
//	srv, err := server.New(ctx, nil, server.Options{ // nil: in-memory scaler
//		SessionParser: func(r *http.Request) (*server.Session, error) {
//			return &server.Session{User: userOf(r)}, nil
//		},
//	})
//	if err != nil { ... }
//	srv.HandleAsk("time", func(ctx context.Context, s *server.Socket, msg json.RawMessage) (any, error) {
//		return time.Now().Unix(), nil
//	})
//	http.Handle("/ws", srv)
//	uid, err := srv.Publish(ctx, "news", "article", article, server.PublishOptions{})
//	err = srv.Shutdown(ctx) // closes sockets with 1001, spread over 10 s
//
// # Guarantees
//
// A socket receives the publications of its channels from its instance's
// ordered stream (never straight from a Publish call), in uid order, at
// most once live; across a reconnect the client recovers by SYNC exactly
// the publications it missed, or is told "not recoverable" and gets an
// UPDATESUB with the channel's position (docs/protocol.md, "7. Recovery
// (SYNC)"). Every frame sent is compact JSON in valid UTF-8: messages,
// topics and reasons the API is given are checked once (ErrInvalidPayload),
// and what comes from the backend is repaired. A publication is encoded
// once and shared by every subscriber; the hub holds channels in 64 locked
// shards with copy-on-write subscriber lists.
//
// Every scaler call made for a socket is bounded by Options.BackendTimeout
// and cancelled when the socket closes: with the backend down a SUBSCRIBE
// is answered "unavailable", and a SYNC or a BEGIN that needs it is closed
// with 1013 (the client retries later). A Publish whose outcome is unknown
// returns an error wrapping scaler.ErrUncertain, to be retried with the
// same idempotency key. Shutdown is idempotent and, once it returns nil,
// no goroutine of the server is left.
//
// # Concurrency
//
// Every method of Server, Socket and Publisher is safe for concurrent use.
// Each socket has:
//
//   - a reader goroutine (not the HTTP handler's, which returns after the
//     upgrade), which answers heartbeats itself and hands every other frame
//     to
//   - a handler goroutine, which runs only while frames wait and handles
//     them one at a time, in the order they came (reader.go);
//   - a writer: a goroutine of a shared pool that runs only while frames
//     are queued (writer.go). The send queue is bounded in frames and
//     bytes, and a socket that overflows it is closed with 4002
//     (sendqueue.go);
//   - a goroutine per running ask, bounded by Options.MaxConcurrentAsks.
//
// Heartbeats come from one timer wheel goroutine for all sockets.
//
// The hooks, and the goroutine that calls each:
//
//   - SessionParser, Options.CheckOrigin and OnOpen: the HTTP handler's
//     goroutine, during the upgrade (OnOpen after it, before the socket
//     reads its first frame).
//   - SubscriptionParser, TellHandler, OnSubscribe and OnChannelOccupied:
//     the socket's handler goroutine (SUBSCRIBE, SYNC, BEGIN, TELL).
//   - AskHandler: a goroutine of its own per ASK; its ctx ends when the
//     socket closes.
//   - OnClose: the socket's reader goroutine, once, when the socket is gone.
//   - OnUnsubscribe and OnChannelVacated: the socket's handler goroutine
//     (UNSUBSCRIBE), its reader goroutine (the socket is gone), or a
//     goroutine the server starts for Server.BootChannel.
//   - OnEvent: the goroutine where the event happens: the caller of
//     Publish (EventPublish); the scaler's delivery goroutine, or the
//     handler goroutine of the socket that opened the channel
//     (EventDelivery); a socket's handler goroutine (EventBadFrame); the
//     goroutine that made the failed scaler call, any of those above
//     (EventBackendError); the scaler's goroutine (EventScaler); or a
//     goroutine of its own (EventSlowConsumer, found under a lock).
//
// None of them is called under a lock of the server, so each may call any
// method of Server, Socket or Publisher, and a panic in one is recovered
// and logged (SessionParser: HTTP 500; OnOpen: close 1011; AskHandler and
// SubscriptionParser: answered "internal"). What must not block:
// OnEvent and OnOpen at all (they sit on hot or shared paths); a
// TellHandler, SubscriptionParser, OnSubscribe, OnUnsubscribe,
// OnChannelOccupied or OnChannelVacated only briefly, since the socket's
// later frames wait meanwhile (its heartbeats and close frame are still
// read); SessionParser holds only its own request. An AskHandler may take
// as long as it needs, within its ctx. Scaler callbacks into the server
// never block.
//
// # Writes
//
// Without compression the server writes WebSocket frames itself, several
// per write syscall, straight to the connection gorilla/websocket
// upgraded (see writer.go); every frame of such a socket goes that way.
// With Options.EnableCompression it writes through gorilla instead.
package server
