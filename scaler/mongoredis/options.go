package mongoredis

import (
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/readconcern"
	"go.mongodb.org/mongo-driver/v2/mongo/writeconcern"

	"github.com/sss-go/sss/scaler"
)

// Options configures a Scaler. The zero value of every field means the
// documented default; New copies the struct.
type Options struct {
	// MongoURI is the MongoDB connection string, used when MongoClient is
	// nil. The Scaler creates the client and disconnects it on Close.
	MongoURI string
	// MongoClient is an existing MongoDB client (driver v2). The Scaler
	// never disconnects it.
	MongoClient *mongo.Client
	// Database holds the scaler's collections. Default "sss".
	Database string
	// CollectionPrefix prefixes the collection names: <prefix>_pubs holds
	// the channel logs and <prefix>_channels the channel epochs and trim
	// floors. Default: Prefix.
	CollectionPrefix string

	// RedisClient is an existing go-redis client (standalone, Sentinel or
	// Cluster). The Scaler never closes it.
	RedisClient redis.UniversalClient
	// Redis configures a client the Scaler creates (and closes), used when
	// RedisClient is nil.
	Redis *redis.UniversalOptions
	// RedisURL ("redis://host:port/db") is used when RedisClient and Redis
	// are both unset.
	RedisURL string

	// Prefix namespaces every Redis key and pub/sub channel (and, unless
	// CollectionPrefix is set, the collections), so several applications
	// share one Redis and one database. Default "sss".
	Prefix string

	// Retention returns the retention of a channel; nil, or a zero field
	// in what it returns, means DefaultRetention's field.
	Retention func(channel string) scaler.Retention
	// DefaultRetention applies where Retention does not say. Zero fields
	// mean MaxCount 1000 and MaxAge 24h.
	DefaultRetention scaler.Retention
	// TrimInterval is how often the trimmer (one instance at a time,
	// chosen by a Redis lock) applies retention. Default 10s.
	TrimInterval time.Duration

	// InstanceID names this instance; default a random id.
	InstanceID string
	// LeaseTTL is the life of the instance's lease; presence and user
	// entries of an instance whose lease ended are ignored, and expire
	// from Redis within LeaseTTL of its last renewal. It is renewed every
	// LeaseTTL/3; each renewal also writes again any presence or user
	// change whose Redis write had failed. Default 10s.
	LeaseTTL time.Duration
	// ProbeInterval is how often the instance sends itself a probe over
	// the relay. Default 1s.
	ProbeInterval time.Duration
	// ProbeTimeout is how long a probe may take before the relay
	// connection is considered broken and replaced. Default 3s.
	ProbeTimeout time.Duration
	// CheckInterval is how often channels that received nothing for that
	// long are checked against the log (catches a lost last message).
	// Default 2s.
	CheckInterval time.Duration
	// GapWait is how long a publication that arrived ahead of a missing
	// one waits for it on the relay before the log is read. Default 50ms.
	GapWait time.Duration
	// WriteTimeout bounds one write to MongoDB. Default 5s.
	WriteTimeout time.Duration
	// ConnectTimeout bounds New: reaching MongoDB (its primary) and
	// Redis and creating the indexes. New fails after it with an error
	// that names the address it could not reach (never a password) and
	// wraps scaler.ErrUnavailable. The Redis clients the Scaler creates
	// honour context deadlines (go-redis ContextTimeoutEnabled); a
	// RedisClient you give is bounded only if it does too. Default 10s.
	ConnectTimeout time.Duration

	// WriteConcern is the write concern of every write (publications,
	// channel documents, trimming). Default: majority, journaled
	// ({w: "majority", j: true}): an acknowledged publication survives
	// the loss of the primary and a crash, at the price of waiting for a
	// majority of the replica set. Production MongoDB is a replica set;
	// with w:1 a publish returns sooner but a failover can roll back an
	// acknowledged publication: the scaler then notices that the log is
	// behind what it delivered, starts a new epoch and resets the
	// channel's streams (subscribers are told "not recoverable"). Lower
	// it together with ReadConcern (see there).
	WriteConcern *writeconcern.WriteConcern
	// ReadConcern is the read concern of every read that decides what is
	// delivered (gap fills, position and quiet-channel checks, Since,
	// History, reading back after an unclear write). Default majority:
	// only what a majority holds, which can never be rolled back, so an
	// instance never delivers a publication that later vanishes. Reads
	// always go to the primary (a secondary may lag behind what a writer
	// was told is stored). "local" reads sooner but may see a write that
	// is later rolled back; keep "majority" when WriteConcern is
	// majority, and use "local" when you lower WriteConcern to w:1, else
	// a freshly acknowledged publication may be invisible to a gap fill
	// and reported as lost.
	ReadConcern *readconcern.ReadConcern
	// MaxBatch is the most publications of one channel written in one
	// insertMany. Default 256.
	MaxBatch int

	// Logger receives the scaler's logs; nil means slog.Default().
	Logger *slog.Logger
}

// Defaults.
const (
	defaultDatabase      = "sss"
	defaultPrefix        = "sss"
	defaultMaxCount      = 1000
	defaultMaxAge        = 24 * time.Hour
	defaultTrimInterval  = 10 * time.Second
	defaultLeaseTTL      = 10 * time.Second
	defaultProbeInterval = time.Second
	defaultProbeTimeout  = 3 * time.Second
	defaultCheckInterval = 2 * time.Second
	defaultGapWait       = 50 * time.Millisecond
	defaultWriteTimeout  = 5 * time.Second
	defaultConnect       = 10 * time.Second
	defaultMaxBatch      = 256
)

func (o Options) withDefaults() (Options, error) {
	if o.Database == "" {
		o.Database = defaultDatabase
	}
	if o.Prefix == "" {
		o.Prefix = defaultPrefix
	}
	if o.CollectionPrefix == "" {
		o.CollectionPrefix = o.Prefix
	}
	if o.DefaultRetention.MaxCount == 0 {
		o.DefaultRetention.MaxCount = defaultMaxCount
	}
	if o.DefaultRetention.MaxAge == 0 {
		o.DefaultRetention.MaxAge = defaultMaxAge
	}
	setDur := func(d *time.Duration, def time.Duration) {
		if *d <= 0 {
			*d = def
		}
	}
	setDur(&o.TrimInterval, defaultTrimInterval)
	setDur(&o.LeaseTTL, defaultLeaseTTL)
	setDur(&o.ProbeInterval, defaultProbeInterval)
	setDur(&o.ProbeTimeout, defaultProbeTimeout)
	setDur(&o.CheckInterval, defaultCheckInterval)
	setDur(&o.GapWait, defaultGapWait)
	setDur(&o.WriteTimeout, defaultWriteTimeout)
	setDur(&o.ConnectTimeout, defaultConnect)
	if o.WriteConcern == nil {
		j := true
		o.WriteConcern = &writeconcern.WriteConcern{W: "majority", Journal: &j}
	}
	if o.ReadConcern == nil {
		o.ReadConcern = readconcern.Majority()
	}
	if o.MaxBatch <= 0 {
		o.MaxBatch = defaultMaxBatch
	}
	if o.InstanceID == "" {
		o.InstanceID = newID()
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	switch {
	case o.MongoClient == nil && o.MongoURI == "":
		return o, fmt.Errorf("%w: MongoURI or MongoClient is required", ErrBadOptions)
	case o.RedisClient == nil && o.Redis == nil && o.RedisURL == "":
		return o, fmt.Errorf("%w: RedisClient, Redis or RedisURL is required", ErrBadOptions)
	case strings.ContainsAny(o.Prefix, " \x00"):
		return o, fmt.Errorf("%w: Prefix %q contains a space or NUL", ErrBadOptions, o.Prefix)
	case strings.ContainsAny(o.InstanceID, " \x00:"):
		return o, fmt.Errorf("%w: InstanceID %q contains a space, NUL or colon", ErrBadOptions, o.InstanceID)
	}
	return o, nil
}

// retention returns the effective retention of channel.
func (o *Options) retention(channel string) scaler.Retention {
	r := o.DefaultRetention
	if o.Retention != nil {
		c := o.Retention(channel)
		if c.MaxCount != 0 {
			r.MaxCount = c.MaxCount
		}
		if c.MaxAge != 0 {
			r.MaxAge = c.MaxAge
		}
	}
	return r
}
