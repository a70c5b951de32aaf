package testutil

import (
	"testing"

	"github.com/sss-go/sss/internal/services"
)

// Proxy is a fault-injecting TCP proxy on 127.0.0.1 in front of one target
// address (services.Proxy), closed when the test ends. Clients dial Addr
// instead of the target; its methods cut, stall or slow their connections.
type Proxy = services.Proxy

// NewProxy starts a proxy to target (host:port) on a free loopback port and
// closes it when the test ends.
func NewProxy(t testing.TB, target string) *Proxy {
	t.Helper()
	p, err := services.NewProxy(target)
	if err != nil {
		t.Fatalf("testutil: %v", err)
	}
	t.Cleanup(p.Close)
	return p
}
