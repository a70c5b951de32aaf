package server_test

import (
	"testing"

	"github.com/sss-go/sss/internal/testutil"
)

// TestMain checks, after every test passed, that no goroutine is left.
func TestMain(m *testing.M) { testutil.Main(m) }
