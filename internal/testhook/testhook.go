// Package testhook lets the tests of this module reach test-only entry
// points of its library packages without exporting them to users: no
// other module can import it, and production code never sets it.
//
// Today it hands over the fault injector of every mongoredis scaler, so
// that tests outside package mongoredis (internal/clustertest) can drop
// and delay relayed publications of a running cluster.
//
// # Concurrency
//
// SetFaults and Faults are safe for concurrent use; set the hook before
// creating the scalers it should see (in TestMain, say).
package testhook

import (
	"sync/atomic"

	"github.com/sss-go/sss/scaler"
)

// FaultsFunc receives a scaler just created and its fault injector.
type FaultsFunc func(sc scaler.Scaler, fi scaler.FaultInjector)

var faults atomic.Pointer[FaultsFunc]

// SetFaults makes every scaler created from now on hand its fault
// injector to f (nil: to nobody).
func SetFaults(f FaultsFunc) {
	if f == nil {
		faults.Store(nil)
		return
	}
	faults.Store(&f)
}

// Faults returns the hook set by SetFaults, or nil.
func Faults() FaultsFunc {
	if f := faults.Load(); f != nil {
		return *f
	}
	return nil
}
