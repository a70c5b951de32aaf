package main

import (
	"testing"

	"github.com/sss-go/sss/internal/testutil"
)

// TestDemo runs the demo end to end: ask, typed error, tell and its
// answer, a server tell to the user; it fails if any step does.
func TestDemo(t *testing.T) {
	testutil.CheckLeaks(t)
	if err := runDemo(); err != nil {
		t.Fatal(err)
	}
}
