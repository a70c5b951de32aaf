// Package testutil starts the real services the sss tests run against,
// speaks the wire to a server, and checks that tests leave nothing behind.
//
// It wraps package internal/services (which starts the same services for
// programs that are not tests) and offers:
//
//   - FreePort and WaitFor (poll with a deadline for state a test does not
//     control);
//   - StartRedis and StartRedisCluster: redis-server processes on free
//     loopback ports in t.TempDir(), stopped by t.Cleanup;
//   - StartMongo and SharedMongo: the FerretDB program of internal/ferretdb
//     (a MongoDB wire-compatible server on SQLite), built on first use into
//     <module root>/.bin/sss-ferretdb, with DBName giving each test its own
//     database. An existing .bin/sss-ferretdb is used as is: ./scripts/test.sh
//     rebuilds it every run; after changing internal/ferretdb without the
//     script, delete it;
//   - NewProxy: a fault-injecting TCP proxy (cut, blackhole, delay, pause);
//   - DialWire: WireConn, the raw WebSocket client of the tests that
//     speak the sss wire frame by frame (exact frames, close codes, every
//     text frame checked for UTF-8);
//   - CheckLeaks, VerifyNoLeaks and Main: goroutine-leak checks.
//
// Usage in a package's tests:
//
//	func TestMain(m *testing.M) { testutil.Main(m) }
//
//	func TestX(t *testing.T) {
//		testutil.CheckLeaks(t) // first, so its check runs after every other cleanup
//		r := testutil.StartRedis(t)
//		m := testutil.SharedMongo(t)
//		db := testutil.DBName(t)
//		// ... connect to r.URL and m.URI, use database db ...
//	}
//
// # Environment
//
//   - SSS_TEST_REDIS_URL: use this Redis instead of starting one. Tests then
//     share it (use a key prefix per test); Stop, Start and Restart fail
//     the test, so tests that restart Redis check CanRestart first and skip.
//   - SSS_TEST_MONGO_URI: the same for MongoDB (StartMongo and SharedMongo).
//   - SSS_FERRETDB_BIN: path of a prebuilt FerretDB program.
//   - SSS_TEST_SKIP_MISSING=1: skip, instead of fail, tests whose service
//     cannot be started because a program is missing. Never set in CI.
//
// # Processes
//
// Every process is started in its own process group with a parent-death
// signal (SIGKILL), from one goroutine locked to its OS thread for the life
// of the test binary, so it dies with the test binary even when that
// crashes; the FerretDB program also polls its parent pid. t.Cleanup stops
// it (SIGTERM to the group, SIGKILL after 10 s).
//
// # Concurrency
//
// All functions are safe for concurrent use by parallel tests. Methods that
// take no testing.TB report failures to the TB given to the constructor, so
// call them from the test's goroutine.
package testutil
