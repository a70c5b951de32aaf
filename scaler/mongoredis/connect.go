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
	redisAddr, err := s.redisClient()
	if err != nil {
		return err
	}
	mongoAddr := "MongoDB"
	if s.mc == nil {
		co := mopts.Client().ApplyURI(o.MongoURI)
		if len(co.Hosts) > 0 {
			mongoAddr = "MongoDB at " + strings.Join(co.Hosts, ",")
		}
		mc, err := mongo.Connect(co)
		if err != nil {
			return fmt.Errorf("%w: MongoURI: %w", ErrOptions, err)
		}
		s.mc, s.ownMC = mc, true
	}
	s.mlog = newLog(s.mc.Database(o.Database), o.CollectionPrefix, o.WriteConcern, o.ReadConcern)
	if err := s.mc.Ping(ctx, readpref.Primary()); err != nil {
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
		return fmt.Errorf("sss/mongoredis: connect: %s did not answer in time: %w: %w", addr, scaler.ErrUnavailable, err)
	}
	return fmt.Errorf("sss/mongoredis: connect: %s: %w: %w", addr, scaler.ErrUnavailable, err)
}

// redisClient sets s.rdb (creating it unless the caller gave one) and
// returns a description of its address for errors. A client the scaler
// creates honours context deadlines, so that every Redis call is bounded
// by the caller's deadline (ConnectTimeout included).
func (s *Scaler) redisClient() (string, error) {
	o := &s.opts
	switch {
	case s.rdb != nil:
		switch c := s.rdb.(type) {
		case *redis.Client:
			return "Redis at " + c.Options().Addr, nil
		case *redis.ClusterClient:
			return "Redis Cluster at " + strings.Join(c.Options().Addrs, ","), nil
		}
		return "Redis", nil
	case o.Redis != nil:
		ro := *o.Redis
		ro.ContextTimeoutEnabled = true
		s.rdb, s.ownRD = redis.NewUniversalClient(&ro), true
		return "Redis at " + strings.Join(ro.Addrs, ","), nil
	}
	po, err := redis.ParseURL(o.RedisURL)
	if err != nil {
		// The error may quote the URL: keep only what it says is wrong.
		return "", fmt.Errorf("%w: RedisURL: cannot parse it", ErrOptions)
	}
	po.ContextTimeoutEnabled = true
	s.rdb, s.ownRD = redis.NewClient(po), true
	return "Redis at " + po.Addr, nil
}
