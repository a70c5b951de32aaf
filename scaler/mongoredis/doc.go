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
//	sc, err := mongoredis.New(ctx, mongoredis.Options{
//		MongoURI: "mongodb://127.0.0.1:27017",
//		RedisURL: "redis://127.0.0.1:6379",
//		Prefix:   "myapp",
//	})
//	if err != nil { ... }
//	srv, err := server.New(context.Background(), sc, server.Options{})
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
// uid ever names two different publications.
//
// # Concurrency
//
// Every method is safe for concurrent use. Publications of one channel made
// concurrently in one process are written in one insertMany. Each served
// channel has its own delivery goroutine, started on demand; Handler
// functions are called from those goroutines (publications, resets) and
// from the relay's receive goroutine (control messages), and must not
// block.
package mongoredis
