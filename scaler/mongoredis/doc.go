// Package mongoredis is a scaler.Scaler for running many sss server
// instances on MongoDB and Redis.
//
// MongoDB keeps each channel's ordered log (one document per publication,
// a unique index on (channel, epoch, seq) assigning gap-free sequence
// numbers without transactions) and each channel's epoch. Redis pub/sub
// relays every stored publication, payload included, to the instances
// that serve its channel, and carries the control plane; Redis keys hold
// the leases, presence and user registrations.
//
//	sc, err := mongoredis.New(ctx, mongoredis.Options{
//		MongoURI: "mongodb://127.0.0.1:27017",
//		RedisURL: "redis://127.0.0.1:6379",
//		Prefix:   "myapp",
//	})
//	if err != nil { ... }
//	srv, err := server.New(sc, server.Options{})
//
// # Guarantees
//
// Publish returns a uid only once MongoDB acknowledged the publication.
// Every instance delivers a channel's publications in seq order, each once;
// a publication the relay lost is noticed (a later seq, the instance's own
// probe, a reconnect, a periodic check of quiet channels) and read from
// MongoDB before anything after it is delivered. Publications that can no
// longer be read are reported through Handler.Reset, never skipped
// silently.
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
