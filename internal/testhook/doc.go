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
