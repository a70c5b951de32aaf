package mongoredis

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/sss-go/sss/internal/testutil"
	"github.com/sss-go/sss/protocol"
	"github.com/sss-go/sss/scaler"
)

// checkOpError fails unless err wraps target and reads
// "sss/mongoredis: <op>: ..." with the package prefix once.
func checkOpError(t *testing.T, op string, err, target error) {
	t.Helper()
	switch {
	case !errors.Is(err, target):
		t.Errorf("%s: %v, want an error wrapping %v", op, err, target)
	case !strings.HasPrefix(err.Error(), "sss/mongoredis: "+op+": "):
		t.Errorf("%s: %q does not start with the operation", op, err)
	case strings.Count(err.Error(), "sss/mongoredis: ") != 1:
		t.Errorf("%s: %q names the package more than once", op, err)
	}
}

// TestErrorsNameTheOperation: every error the exported methods return
// says "sss/mongoredis: <operation>: ..." once and wraps the sentinel
// callers test for.
func TestErrorsNameTheOperation(t *testing.T) {
	rd := testutil.StartRedis(t)
	mg := testutil.SharedMongo(t)
	env := newEnv(t, rd.URL, mg.URI)
	ctx := tctx(t)

	t.Run("running", func(t *testing.T) {
		s := env.newScaler(t, nil)
		closeAtEnd(t, s)
		_, err := s.Subscribe(ctx, "c")
		checkOpError(t, `subscribe "c"`, err, err) // not started
		if err == nil || !strings.Contains(err.Error(), "Start") {
			t.Errorf("Subscribe before Start: %v", err)
		}
		checkOpError(t, "health", s.Health(ctx), scaler.ErrUnavailable)
		if err := s.Start(ctx, scaler.Handler{}); err != nil {
			t.Fatal(err)
		}
		checkOpError(t, "start", s.Start(ctx, scaler.Handler{}), scaler.ErrStarted)
		_, err = s.Publish(ctx, "c", "t", json.RawMessage(`{bad`), scaler.PublishOptions{})
		checkOpError(t, `publish "c"`, err, scaler.ErrBadPayload)
		_, err = s.Since(ctx, "c", protocol.UID{Epoch: "other", Seq: 1}, 0)
		checkOpError(t, `since "c" other.1`, err, scaler.ErrEpochChanged)
		done, cancel := context.WithCancel(ctx)
		cancel()
		_, err = s.Publish(done, "c", "t", json.RawMessage(`1`), scaler.PublishOptions{})
		checkOpError(t, `publish "c"`, err, scaler.ErrUnavailable)
		_, err = s.Position(done, "c")
		checkOpError(t, `position "c"`, err, scaler.ErrUnavailable)
		_, err = s.Presence(done, "c")
		checkOpError(t, `presence "c"`, err, scaler.ErrUnavailable)
		checkOpError(t, `join "c"`, s.Join(done, "c", scaler.Member{ID: "m"}), scaler.ErrUnavailable)
	})

	t.Run("closed", func(t *testing.T) {
		s := env.newScaler(t, nil)
		if err := s.Close(ctx); err != nil {
			t.Fatal(err)
		}
		_, err := s.Subscribe(ctx, "c")
		checkOpError(t, `subscribe "c"`, err, scaler.ErrClosed)
		checkOpError(t, `unsubscribe "c"`, s.Unsubscribe(ctx, "c"), scaler.ErrClosed)
		_, err = s.Publish(ctx, "c", "t", json.RawMessage(`1`), scaler.PublishOptions{})
		checkOpError(t, `publish "c"`, err, scaler.ErrClosed)
		_, err = s.Position(ctx, "c")
		checkOpError(t, `position "c"`, err, scaler.ErrClosed)
		_, err = s.Since(ctx, "c", protocol.UID{Epoch: "e"}, 0)
		checkOpError(t, `since "c" e.0`, err, scaler.ErrClosed)
		_, err = s.History(ctx, "c", 0)
		checkOpError(t, `history "c"`, err, scaler.ErrClosed)
		checkOpError(t, "control", s.Control(ctx, scaler.Control{Kind: scaler.ControlBroadcast}), scaler.ErrClosed)
		checkOpError(t, `join "c"`, s.Join(ctx, "c", scaler.Member{ID: "m"}), scaler.ErrClosed)
		checkOpError(t, `leave "c"`, s.Leave(ctx, "c", "m"), scaler.ErrClosed)
		_, err = s.Presence(ctx, "c")
		checkOpError(t, `presence "c"`, err, scaler.ErrClosed)
		_, err = s.Count(ctx, "c")
		checkOpError(t, `count "c"`, err, scaler.ErrClosed)
		checkOpError(t, `add user "u"`, s.AddUser(ctx, "u"), scaler.ErrClosed)
		checkOpError(t, `remove user "u"`, s.RemoveUser(ctx, "u"), scaler.ErrClosed)
		_, err = s.UserInstances(ctx, "u")
		checkOpError(t, `user instances "u"`, err, scaler.ErrClosed)
		checkOpError(t, "health", s.Health(ctx), scaler.ErrClosed)
		checkOpError(t, "start", s.Start(ctx, scaler.Handler{}), scaler.ErrClosed)
	})
}
