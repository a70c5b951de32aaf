package mongoredis

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/redis/go-redis/v9"
	"go.mongodb.org/mongo-driver/v2/mongo"
	mopts "go.mongodb.org/mongo-driver/v2/mongo/options"
	"go.mongodb.org/mongo-driver/v2/mongo/readpref"

	"github.com/sss-go/sss/scaler"
)

// connect creates the clients opts asks for, then reaches MongoDB (the
// primary) and Redis and creates the indexes, all within ConnectTimeout.
// Its errors name the address that could not be reached (never a
// password) and wrap scaler.ErrUnavailable.
func (s *Scaler) connect(ctx context.Context) error {
	o := &s.opts
	ctx, cancel := context.WithTimeout(ctx, o.ConnectTimeout)
	defer cancel()
	rdb, own, redisAddr, err := redisClient(o)
	if err != nil {
		return err
	}
	s.rdb, s.ownRD = rdb, own
	mc, own, mongoAddr, err := mongoClient(o)
	if err != nil {
		return err
	}
	s.mlog = newLog(mc, own, o)
	if err := s.mlog.ping(ctx, readpref.Primary()); err != nil {
		return connectErr(ctx, mongoAddr, err)
	}
	if err := s.rdb.Ping(ctx).Err(); err != nil {
		return connectErr(ctx, redisAddr, err)
	}
	if err := s.mlog.ensureIndexes(ctx); err != nil {
		return connectErr(ctx, mongoAddr, err)
	}
	return nil
}

// connectErr wraps a failure to reach addr during New.
func connectErr(ctx context.Context, addr string, err error) error {
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return opError("connect", fmt.Errorf("%s did not answer in time: %w: %w", addr, scaler.ErrUnavailable, err))
	}
	return opError("connect", fmt.Errorf("%s: %w: %w", addr, scaler.ErrUnavailable, err))
}

// mongoClient returns the MongoDB client to use (creating it unless the
// caller gave one: then own is true) and a description of its address
// for errors.
func mongoClient(o *Options) (mc *mongo.Client, own bool, addr string, err error) {
	if o.MongoClient != nil {
		return o.MongoClient, false, "MongoDB", nil
	}
	co := mopts.Client().ApplyURI(o.MongoURI)
	addr = "MongoDB"
	if len(co.Hosts) > 0 {
		addr = "MongoDB at " + strings.Join(co.Hosts, ",")
	}
	mc, err = mongo.Connect(co)
	if err != nil {
		return nil, false, "", fmt.Errorf("%w: MongoURI: %w", ErrBadOptions, err)
	}
	return mc, true, addr, nil
}

// redisClient returns the Redis client to use (creating it unless the
// caller gave one: then own is true) and a description of its address
// for errors. A client the scaler creates honours context deadlines, so
// that every Redis call is bounded by the caller's deadline
// (ConnectTimeout included).
func redisClient(o *Options) (rdb redis.UniversalClient, own bool, addr string, err error) {
	switch {
	case o.RedisClient != nil:
		switch c := o.RedisClient.(type) {
		case *redis.Client:
			return c, false, "Redis at " + c.Options().Addr, nil
		case *redis.ClusterClient:
			return c, false, "Redis Cluster at " + strings.Join(c.Options().Addrs, ","), nil
		}
		return o.RedisClient, false, "Redis", nil
	case o.Redis != nil:
		ro := *o.Redis
		ro.ContextTimeoutEnabled = true
		return redis.NewUniversalClient(&ro), true, "Redis at " + strings.Join(ro.Addrs, ","), nil
	}
	po, err := redis.ParseURL(o.RedisURL)
	if err != nil {
		// The error may quote the URL: keep only what it says is wrong.
		return nil, false, "", fmt.Errorf("%w: RedisURL: cannot parse it", ErrBadOptions)
	}
	po.ContextTimeoutEnabled = true
	return redis.NewClient(po), true, "Redis at " + po.Addr, nil
}
