//go:build race

package clustertest

// raceEnabled: the test binary runs with the race detector, so the chat
// processes are built with it too (reusing the race-built packages) and a
// data race in them fails the test through their exit status.
const raceEnabled = true
