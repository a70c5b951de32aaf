// Package clustertest holds cross-package integration tests of sss: several
// server instances (in this process, or copies of examples/chat as separate
// OS processes) sharing one cluster through the mongoredis scaler on a real
// redis-server and the FerretDB test MongoDB, checked end to end through
// WebSocket clients (the Go client package, and raw frames of
// docs/protocol.md through testutil.WireConn).
//
// It has no non-test code: run it with
//
//	go test -race -count=1 ./internal/clustertest/
//
// The services are started by internal/testutil (redis-server on a free
// port, the shared FerretDB program); see that package for the environment
// variables that point the tests at existing services instead.
package clustertest
