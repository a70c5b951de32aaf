// Package client is the Go client of sss: it speaks the wire protocol of
// Super Scaled Sockets (docs/protocol.md) to an sss server (or any SSS
// compatible one), and reconnects and recovers by itself.
//
// # Usage
//
//	c, err := client.Dial(ctx, "ws://127.0.0.1:8080/ws", client.Options{
//		URLs: []string{"ws://10.0.0.2:8080/ws"}, // fail over without a load balancer
//	})
//	if err != nil { ... }
//	defer c.Close()
//
//	var now string
//	err = c.Ask(ctx, "serverTime", nil, &now)
//
//	sub, err := c.Subscribe(ctx, "sport", map[string]any{"team": "blue"})
//	sub.On("score", func(msg json.RawMessage, uid string) { ... })
//	sub.OnStatusChange(func(s, old client.SubStatus, err error) {
//		if s == client.SubNotRecoverable { /* reload the channel's state */ }
//	})
//
// Dial returns once the server answered BEGIN. When the session has a
// user, UserSubscription is the subscription to its user channel.
//
// # Reconnection and recovery
//
// On any close except 4000 (Close) and 4001 (boot), the client reconnects
// with exponential backoff and full jitter (Options.ReconnectBase,
// ReconnectCap, ReconnectAttempts), trying Options.URLs in turn, and sends
// SYNC with each channel's last uid and query. The publications missed
// meanwhile are delivered in order, before any live one, each once (a
// publication at or before the last uid applied is dropped); then every
// subscription ends SubActive, SubNotRecoverable (the server could not
// return what was missed: reload the channel; live delivery goes on) or
// SubRefused (gone). Asks and subscribes waiting for a reply when the
// connection drops fail with ErrConnectionLost; they are not re-sent.
// Calls made while reconnecting wait for the client to be ready, bounded by
// their context. The heartbeat is answered; when none arrives for the
// server's interval plus threshold, the client closes with 4100 and
// recovers.
//
// # Concurrency
//
// A Client and its Subscriptions are safe for concurrent use. Each client
// runs one goroutine that reads the connection and one that runs the
// application's callbacks (OnTell, OnBroadcast, OnPresence, OnStatusChange,
// OnBoot, OnError, Subscription.On and OnStatusChange), one at a time, in
// the order the frames arrived; callbacks may call any method, Close
// included. A callback that blocks delays the later callbacks but not the
// connection (heartbeats and replies keep flowing), and what is waiting
// queues up in memory. After Close, or a boot, or a final reconnect failure,
// Done is closed once the queued callbacks have run, and no goroutine of
// the client remains.
//
// # Guarantees
//
// Per channel, publications are delivered in uid order, at most once per
// connection, and exactly once across reconnections within the server's
// retention; otherwise the subscription reports SubNotRecoverable with an
// error wrapping ErrNotRecoverable. Tells, broadcasts, presence events and
// boots are at most once and not recovered.
package client
