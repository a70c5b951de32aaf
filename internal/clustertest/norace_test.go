//go:build !race

package clustertest

// raceEnabled: see race_test.go.
const raceEnabled = false
