// Package scaler defines the Scaler contract, the only thing an sss server
// knows of the other instances of its deployment, and provides the
// in-memory scaler, the embedded default.
//
// A server calls Start once with a Handler, Subscribe for each channel it
// serves, and Publish for every publication; it delivers to sockets only
// from Handler.Publication, never from its own Publish call, so that every
// instance sends one channel's publications in the same order.
//
//	sc := scaler.NewMemory(scaler.MemoryOptions{})
//	err := sc.Start(ctx, scaler.Handler{
//		Publication: func(p scaler.Publication) { hub.Deliver(p) },
//		Reset:       func(ch string, pos protocol.UID, err error) { hub.Reset(ch, pos) },
//	})
//	pos, err := sc.Subscribe(ctx, "room")    // stream starts after pos
//	uid, err := sc.Publish(ctx, "room", "msg", json.RawMessage(`{"t":"hi"}`), scaler.PublishOptions{})
//	pubs, err := sc.Since(ctx, "room", lastSeen, 0) // recovery
//
// # In-memory scaler
//
// NewMemory returns a single instance; NewMemoryBackend(opts).Instance()
// returns as many instances sharing one backend as a test needs. The
// backend behaves like a distributed one so that servers are tested
// honestly: Publish appends to the channel's log under the backend's lock,
// then relays asynchronously through a queue per instance; each instance's
// delivery goroutine tracks the last seq it delivered per channel, drops
// duplicates, fills gaps from the log before delivering later
// publications, and runs a periodic position check
// (MemoryOptions.CheckInterval) that finds a lost last publication. Presence and user
// registrations live under a lease per instance (MemoryOptions.LeaseTTL)
// and vanish for other instances when it ends. Memory implements
// FaultInjector, which package scalertest uses.
//
// When a stream cannot continue without a hole (the missing publications
// were trimmed, or the channel's history was reset), Handler.Reset is
// called with the position the stream goes on after and an error wrapping
// ErrTrimmed or ErrEpochChanged, and an EventGapLost event follows. After
// a history reset the position is "<new epoch>.0" and the new epoch's
// publications follow from seq 1.
//
// Operational events of the memory scaler (Handler.Event): EventGapFilled
// when publications missed by the relay were read from the log,
// EventGapLost with every Reset, EventLeaseLost when a resumed instance
// re-registered its presence and users, and EventTrimmed once per channel
// and check period with the number of publications retention removed.
//
// # Concurrency
//
// Every method of Memory is safe for concurrent use and never blocks on
// other instances. Handler functions are called from the instance's one
// delivery goroutine, never with a lock held, so they may call the scaler;
// they must not block, and must not call Close with a context that never
// ends (Close waits for that goroutine). A Publication's Msg is shared
// with the log and every instance: handlers must not modify it.
//
// # Guarantees
//
// Per channel and instance: every publication after the position returned
// by Subscribe, in seq order, each exactly once, or a Reset saying where a
// hole is. Control messages reach every started instance at most once.
package scaler
