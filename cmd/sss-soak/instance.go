package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/sss-go/sss/protocol"
	"github.com/sss-go/sss/scaler"
	"github.com/sss-go/sss/scaler/mongoredis"
	"github.com/sss-go/sss/server"
)

// instanceConfig is what the soak passes to each instance it starts.
type instanceConfig struct {
	name         string
	listen       string
	mongoURI     string
	redisURL     string
	database     string
	prefix       string
	leaseTTL     time.Duration
	probeTimeout time.Duration
	heartbeat    time.Duration
	retention    int
	mongoPool    int
}

// args returns the command line that runInstance parses back.
func (ic instanceConfig) args() []string {
	return []string{instanceFlag,
		"-name", ic.name,
		"-listen", ic.listen,
		"-mongo", ic.mongoURI,
		"-redis", ic.redisURL,
		"-db", ic.database,
		"-prefix", ic.prefix,
		"-lease-ttl", ic.leaseTTL.String(),
		"-probe-timeout", ic.probeTimeout.String(),
		"-hb", ic.heartbeat.String(),
		"-retention", strconv.Itoa(ic.retention),
		"-mongo-pool", strconv.Itoa(ic.mongoPool),
	}
}

// soakRetention keeps the newest count publications of each channel, with
// no age limit. count is far more than a client misses during a fault, so
// it is never told "not recoverable", and small enough that the test
// MongoDB, which scans the whole collection for every read, stays fast.
func soakRetention(count int) scaler.Retention {
	return scaler.Retention{MaxCount: count, MaxAge: -1}
}

// trimInterval: each round costs a scan of the log per channel on the test
// MongoDB.
const trimInterval = 15 * time.Second

// runInstance runs one chat-like server instance until SIGTERM: rooms are
// channels with presence, users come from the "user" query parameter, a
// "post" tell publishes to a room. It returns the exit status.
func runInstance(args []string) int {
	var ic instanceConfig
	fs := flag.NewFlagSet("sss-soak "+instanceFlag, flag.ContinueOnError)
	fs.StringVar(&ic.name, "name", "instance", "name in logs")
	fs.StringVar(&ic.listen, "listen", "", "listen address host:port")
	fs.StringVar(&ic.mongoURI, "mongo", "", "MongoDB URI")
	fs.StringVar(&ic.redisURL, "redis", "", "Redis URL")
	fs.StringVar(&ic.database, "db", "", "database")
	fs.StringVar(&ic.prefix, "prefix", "", "key and collection prefix")
	fs.DurationVar(&ic.leaseTTL, "lease-ttl", 0, "LeaseTTL")
	fs.DurationVar(&ic.probeTimeout, "probe-timeout", 0, "ProbeTimeout")
	fs.DurationVar(&ic.heartbeat, "hb", 0, "heartbeat interval")
	fs.IntVar(&ic.retention, "retention", 0, "publications kept per channel")
	fs.IntVar(&ic.mongoPool, "mongo-pool", 0, "MongoDB connection pool size")
	if err := fs.Parse(args); err != nil {
		return exitSetup
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})).With("instance", ic.name)
	if err := serveInstance(ic, log); err != nil {
		log.Error("soak instance", "err", err)
		return exitFail
	}
	return exitPass
}

func serveInstance(ic instanceConfig, log *slog.Logger) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	mc, closeMongo, err := mongoClient(ic.mongoURI, ic.mongoPool)
	if err != nil {
		return err
	}
	defer closeMongo()
	nctx, cancel := context.WithTimeout(ctx, time.Minute)
	sc, err := mongoredis.New(nctx, mongoredis.Options{
		MongoClient:      mc,
		RedisURL:         ic.redisURL,
		Database:         ic.database,
		Prefix:           ic.prefix,
		DefaultRetention: soakRetention(ic.retention),
		TrimInterval:     trimInterval,
		LeaseTTL:         ic.leaseTTL,
		ProbeTimeout:     ic.probeTimeout,
		Logger:           log,
	})
	cancel()
	if err != nil {
		return fmt.Errorf("mongoredis.New: %w", err)
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = sc.Close(cctx)
	}()
	nctx, ncancel := context.WithTimeout(context.Background(), 30*time.Second)
	srv, err := newChatServer(nctx, sc, ic.heartbeat, log)
	ncancel()
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.Handle("/ws", srv)
	mux.Handle("GET /ready", srv.ReadyHandler())
	ln, err := net.Listen("tcp", ic.listen)
	if err != nil {
		return err
	}
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 8*time.Second)
	defer cancel()
	serr := srv.Shutdown(sctx)
	if err := hs.Shutdown(sctx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return serr
}

// mongoClient connects a MongoDB client with at most pool connections
// (0: the driver's default, 100). A small pool keeps a burst of reads
// queued here, where a read whose caller gave up is never sent, rather than
// in the server.
func mongoClient(uri string, pool int) (*mongo.Client, func(), error) {
	opts := options.Client().ApplyURI(uri)
	if pool > 0 {
		opts.SetMaxPoolSize(uint64(pool))
	}
	c, err := mongo.Connect(opts)
	if err != nil {
		return nil, nil, fmt.Errorf("MongoDB client: %w", err)
	}
	return c, func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = c.Disconnect(ctx)
	}, nil
}

// newChatServer is the chat-like server of an instance.
func newChatServer(ctx context.Context, sc scaler.Scaler, hb time.Duration, log *slog.Logger) (*server.Server, error) {
	srv, err := server.New(ctx, sc, server.Options{
		SessionParser: func(r *http.Request) (*server.Session, error) {
			return &server.Session{User: r.URL.Query().Get("user")}, nil
		},
		DefaultChannel:    server.ChannelOptions{Presence: true, History: true},
		HeartbeatInterval: hb,
		// A client away for a whole fault must recover all it missed.
		MaxRecovery:    1 << 20,
		ShutdownSpread: 500 * time.Millisecond,
		Logger:         log,
	})
	if err != nil {
		return nil, err
	}
	srv.HandleTell("post", func(ctx context.Context, sock *server.Socket, msg json.RawMessage) {
		var m struct {
			Room string          `json:"room"`
			Msg  json.RawMessage `json:"msg"`
		}
		if err := json.Unmarshal(msg, &m); err != nil || !protocol.ValidChannel(m.Room, protocol.DefaultMaxChannelLen) || protocol.ReservedChannel(m.Room) {
			return
		}
		if _, err := srv.Publish(ctx, m.Room, "message", m.Msg, server.PublishOptions{}); err != nil {
			log.Warn("post failed", "room", m.Room, "err", err)
		}
	})
	return srv, nil
}
