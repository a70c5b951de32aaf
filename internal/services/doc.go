// Package services starts and stops the real services the sss tests, the
// soak and the cluster example run against, with no dependency on package
// testing: redis-server (standalone and a three-node Cluster), the test
// MongoDB (the FerretDB program of internal/ferretdb, built on first use)
// and a fault-injecting TCP proxy. Package testutil wraps it for tests.
//
// Every process is started in its own process group with a parent-death
// signal (SIGKILL), forked from one goroutine locked to its OS thread for
// the life of the process, so children die with the program that started
// them even when it crashes. Stop sends SIGTERM to the group, then SIGKILL
// after 10 s.
//
// # Concurrency
//
// Every function and method is safe for concurrent use.
package services
