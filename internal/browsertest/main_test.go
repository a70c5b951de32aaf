package browsertest

import (
	"log/slog"
	"os"
	"testing"

	"github.com/sss-go/sss/internal/testutil"
)

func TestMain(m *testing.M) { testutil.Main(m) }

// quiet logs only errors, so that the expected warnings of the tests
// (closed sockets, failed subscribes) do not flood the output.
func quiet() *slog.Logger {
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))
}
