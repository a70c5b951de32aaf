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
