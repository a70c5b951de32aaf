// Package mongoredis is a scaler.Scaler for running many sss server
// instances on MongoDB and Redis.
//
// MongoDB keeps each channel's ordered log (one document per publication,
// a unique index on (channel, epoch, seq) assigning gap-free sequence
// numbers without transactions) and, for each channel that ever had a
// publication, its epoch. A channel that never had one has no document:
// its epoch is derived from its name and a secret kept once per
// namespace, so subscribing to any number of fresh names stores nothing.
// Redis pub/sub relays every stored publication, payload included, to the
// instances that serve its channel, and carries the control plane; Redis
// keys hold the leases, presence and user registrations, and let writers
// of one channel on several instances take turns.
//
// Besides the core scaler.Scaler, a Scaler offers every optional
// capability: scaler.HistoryReader, scaler.ControlPlane,
// scaler.PresenceStore and scaler.UserRegistry.
//
// # Usage
//
//	sc, err := mongoredis.New(ctx, mongoredis.Options{
//		MongoURI: "mongodb://mongo-1,mongo-2,mongo-3/?replicaSet=rs0",
//		RedisURL: "redis://127.0.0.1:6379",
//		Prefix:   "myapp",
//	})
//	if err != nil {
//		return err
//	}
//	defer sc.Close(context.Background())
//	srv, err := server.New(ctx, sc, server.Options{})
//
// The server starts the scaler (Start) and serves its readiness from
// Health (server.Server.ReadyHandler). A process that only publishes
// (server.Publisher, or Publish directly) need not call Start. The
// package README explains the options, the Redis keys and MongoDB
// collections, and the format versions that let two releases share one
// backend during a rolling deploy.
//
// # Guarantees
//
// Publish returns a uid only once MongoDB acknowledged the publication
// (by default with write concern majority, journaled) in the channel's
// current epoch; reads that decide what is delivered use read concern
// majority on the primary (Options.WriteConcern, Options.ReadConcern).
// When Publish cannot tell whether a publication was stored, its error
// wraps scaler.ErrUncertain: retry with the same idempotency key.
// Every instance delivers a channel's publications in seq order, each once;
// a publication the relay lost is noticed (a later seq, the instance's own
// probe, a reconnect, a periodic check of quiet channels) and read from
// MongoDB before anything after it is delivered. Publications that can no
// longer be read are reported through Handler.Reset, never skipped
// silently. A log that lost publications already delivered (a replica set
// rollback of writes acknowledged with less than a majority) is noticed
// too: the channel moves to a new epoch and every stream is reset, so no
// uid ever names two different publications. Presence and user entries
// count only while their instance's lease lives (Options.LeaseTTL).
//
// Every error a method returns names the operation ("sss/mongoredis:
// publish \"room\": ...") and wraps the sentinels of package scaler
// (ErrUnavailable, ErrUncertain, ErrClosed, ErrNotRecoverable...) or of
// this package (ErrBadOptions, ErrMalformed).
//
// # Concurrency
//
// Every method is safe for concurrent use. The Handler given to Start is
// called from the scaler's goroutines, never under its locks, and must not
// block:
//
//   - Handler.Publication and Handler.Reset: from the channel's delivery
//     goroutine. Each served channel has one, started on demand when
//     something arrives for it and gone when it has nothing left to do,
//     so calls for one channel never overlap and come in seq order;
//     calls for different channels may run in parallel.
//   - Handler.Control: from the relay's receiving goroutine (one per
//     instance), in the order Redis delivered the control messages.
//   - Handler.Event: from the goroutine that noticed the event: the
//     receiving goroutine (relay lost or back), the probe goroutine
//     (probe failed), the lease goroutine (lease lost, Redis errors), the
//     goroutine checking quiet channels, the trimmer (trimmed), a
//     channel's delivery goroutine (gap filled or lost, log errors), a
//     channel's relaying goroutine (relay errors), or the goroutine
//     calling Start (presence that could not be written while the lease
//     was taken).
//
// The scaler runs, from Start: one goroutine receiving from the pub/sub
// connection, one sending its SUBSCRIBE and UNSUBSCRIBE commands, one
// probing the relay, one renewing the lease, and one checking quiet
// channels; from New, the trimmer. On demand it runs one delivery
// goroutine per served channel, one writer goroutine per channel this
// process publishes to (publications of one channel made concurrently are
// written in one insertMany) and one relaying goroutine per such channel,
// and timers for gap waits, retries and checks. Close stops all of them:
// it cancels their context, stops the timers and waits for every one,
// bounded by its own context.
package mongoredis
