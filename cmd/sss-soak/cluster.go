package main

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/sss-go/sss/internal/services"
)

// numInstances is the number of server instances of the soak.
const numInstances = 3

// cluster is the soak's backends and server instances: redis-server and
// the test MongoDB (or the external ones of REDIS_URL and MONGO_URI), and
// three instances as processes, each reached by its clients through a
// proxy of its own and reaching Redis through another.
type cluster struct {
	cfg      config
	dir      string // temporary directory: logs, service data
	exe      string // this program, started with -instance
	redis    *services.Redis
	redisURL string // direct, for the publisher
	redisExt bool   // REDIS_URL: not ours to restart
	mongo    *services.Mongo
	mongoURI string
	mongoExt bool
	database string
	prefix   string
	insts    []*instance
}

// instance is one server instance process and its two proxies.
type instance struct {
	idx         int
	cfg         instanceConfig
	addr        string          // where the process listens
	clientProxy *services.Proxy // clients -> addr
	redisProxy  *services.Proxy // process -> Redis
	logPath     string

	mu   sync.Mutex
	proc *services.Process
}

// wsURL is the URL clients dial: through the client proxy.
func (in *instance) wsURL() string { return "ws://" + in.clientProxy.Addr + "/ws" }

func (in *instance) process() *services.Process {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.proc
}

// startCluster starts the services (unless external), the proxies and the
// three instances. On error, what was started is stopped.
func startCluster(ctx context.Context, cfg config, logf func(string, ...any)) (cl *cluster, err error) {
	cl = &cluster{cfg: cfg}
	defer func() {
		if err != nil {
			cl.close()
			cl = nil
		}
	}()
	if cl.exe, err = os.Executable(); err != nil {
		return cl, fmt.Errorf("find this program: %w", err)
	}
	if cl.dir, err = os.MkdirTemp("", "sss-soak-"); err != nil {
		return cl, err
	}
	run := strconv.FormatInt(time.Now().UnixNano()%1e10, 36)
	cl.database, cl.prefix = "sss_soak_"+run, "soak"
	if err := cl.startServices(logf); err != nil {
		return cl, err
	}
	if err := cl.startInstances(ctx); err != nil {
		return cl, err
	}
	return cl, nil
}

func (cl *cluster) startServices(logf func(string, ...any)) error {
	if u := os.Getenv("REDIS_URL"); u != "" {
		cl.redisURL, cl.redisExt = u, true
		logf("using the Redis of REDIS_URL: redis restarts are not injected")
	} else {
		rd, err := services.StartRedis(filepath.Join(cl.dir))
		if err != nil {
			return fmt.Errorf("redis-server: %w", err)
		}
		cl.redis, cl.redisURL = rd, rd.URL
	}
	if u := os.Getenv("MONGO_URI"); u != "" {
		cl.mongoURI, cl.mongoExt = u, true
		logf("using the MongoDB of MONGO_URI, database %s", cl.database)
		return nil
	}
	bin, err := services.FerretBin(os.Stderr)
	if err != nil {
		return err
	}
	mg, err := services.StartMongo(bin, filepath.Join(cl.dir, "mongo"))
	if err != nil {
		return fmt.Errorf("test MongoDB: %w", err)
	}
	cl.mongo, cl.mongoURI = mg, mg.URI
	return nil
}

// redisHostPort returns host:port of the Redis URL.
func redisHostPort(u string) (string, error) {
	rest, ok := strings.CutPrefix(u, "redis://")
	if !ok {
		return "", fmt.Errorf("REDIS_URL %q: want redis://[user:pass@]host:port[/db]", u)
	}
	if i := strings.LastIndexByte(rest, '@'); i >= 0 {
		rest = rest[i+1:]
	}
	if i := strings.IndexByte(rest, '/'); i >= 0 {
		rest = rest[:i]
	}
	return rest, nil
}

// viaProxy rewrites the Redis URL to go through addr.
func viaProxy(u, target, addr string) string {
	return strings.Replace(u, target, addr, 1)
}

func (cl *cluster) startInstances(ctx context.Context) error {
	target, err := redisHostPort(cl.redisURL)
	if err != nil {
		return err
	}
	for i := range numInstances {
		port, err := instancePort()
		if err != nil {
			return err
		}
		in := &instance{idx: i, addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)),
			logPath: filepath.Join(cl.dir, fmt.Sprintf("instance%d.log", i))}
		cl.insts = append(cl.insts, in)
		if in.clientProxy, err = services.NewProxy(in.addr); err != nil {
			return err
		}
		if in.redisProxy, err = services.NewProxy(target); err != nil {
			return err
		}
		in.cfg = instanceConfig{
			name: fmt.Sprint("instance", i), listen: in.addr,
			mongoURI: cl.mongoURI, redisURL: viaProxy(cl.redisURL, target, in.redisProxy.Addr),
			database: cl.database, prefix: cl.prefix,
			leaseTTL: cl.cfg.leaseTTL, probeTimeout: cl.cfg.probeTimeout, heartbeat: cl.cfg.heartbeat,
			retention: cl.cfg.retentionCount(), mongoPool: cl.cfg.mongoPool,
		}
	}
	errs := make(chan error, numInstances)
	for _, in := range cl.insts {
		go func() { errs <- cl.start(ctx, in) }()
	}
	var first error
	for range cl.insts {
		if err := <-errs; err != nil && first == nil {
			first = err
		}
	}
	return first
}

// instancePort returns a free loopback port below the kernel's ephemeral
// range, so that no outgoing connection takes it while its instance is
// down between a kill and the restart.
func instancePort() (int, error) {
	lo := 32768
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if n, err := strconv.Atoi(f[0]); err == nil {
				lo = n
			}
		}
	}
	if lo > 12000 {
		for range 100 {
			p := 10000 + rand.IntN(lo-11000)
			l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
			if err == nil {
				l.Close()
				return p, nil
			}
		}
	}
	return services.FreePort()
}

// start starts in's process and waits until it is ready; it retries a
// process that exits at once (its port was taken for a moment).
func (cl *cluster) start(ctx context.Context, in *instance) error {
	var err error
	for attempt := 0; attempt < 5; attempt++ {
		if attempt > 0 && !sleepCtx(ctx, time.Second) {
			return ctx.Err()
		}
		var p *services.Process
		p, err = services.StartProcess(in.cfg.name, cl.exe, in.cfg.args(), nil, in.logPath)
		if err != nil {
			return err
		}
		in.mu.Lock()
		in.proc = p
		in.mu.Unlock()
		if err = waitReady(ctx, p, in.addr); err == nil {
			return nil
		}
		p.Kill()
		if !errors.Is(err, services.ErrExited) {
			break
		}
	}
	return fmt.Errorf("%s: %w", in.cfg.name, err)
}

// waitReady polls GET /ready until it answers 200.
func waitReady(ctx context.Context, p *services.Process, addr string) error {
	hc := &http.Client{Timeout: 2 * time.Second}
	defer hc.CloseIdleConnections()
	var last error
	ok := services.Poll(time.Minute, func() bool {
		if !p.Alive() || ctx.Err() != nil {
			return true
		}
		resp, err := hc.Get("http://" + addr + "/ready")
		if err != nil {
			last = err
			return false
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			last = errors.New(resp.Status)
			return false
		}
		return true
	})
	switch {
	case ctx.Err() != nil:
		return ctx.Err()
	case !p.Alive():
		return fmt.Errorf("%w: %s", services.ErrExited, p.LogTail())
	case !ok:
		return fmt.Errorf("not ready within a minute: %v: %s", last, p.LogTail())
	}
	return nil
}

// urls returns the client URLs of the instances, starting with i's.
func (cl *cluster) urls(i int) []string {
	out := make([]string, numInstances)
	for k := range numInstances {
		out[k] = cl.insts[(i+k)%numInstances].wsURL()
	}
	return out
}

// conns returns the client connections open to each instance, e.g.
// "70/66/64".
func (cl *cluster) conns() string {
	parts := make([]string, len(cl.insts))
	for i, in := range cl.insts {
		parts[i] = strconv.Itoa(in.clientProxy.Conns())
	}
	return strings.Join(parts, "/")
}

// close stops the instances, the proxies and the services, and removes
// the temporary directory unless -keep.
func (cl *cluster) close() {
	var wg sync.WaitGroup
	for _, in := range cl.insts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if p := in.process(); p != nil {
				p.Stop()
			}
			if in.clientProxy != nil {
				in.clientProxy.Close()
			}
			if in.redisProxy != nil {
				in.redisProxy.Close()
			}
		}()
	}
	wg.Wait()
	if cl.redis != nil {
		cl.redis.Stop()
	}
	if cl.mongo != nil {
		cl.mongo.Stop()
	}
	if cl.dir != "" && !cl.cfg.keep {
		os.RemoveAll(cl.dir)
	}
}

// sleepCtx sleeps d or until ctx ends; it reports whether it slept fully.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
