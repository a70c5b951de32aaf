package mongoredis

import (
	"errors"
	"fmt"

	"github.com/sss-go/sss/scaler"
)

// Sentinel errors of this package. Errors of backend calls also wrap
// scaler.ErrUnavailable (or scaler.ErrUncertain, from Publish), recovery
// failures scaler.ErrNotRecoverable, and calls after Close
// scaler.ErrClosed. Every error a method returns names the operation
// ("sss/mongoredis: publish \"room\": ...").
var (
	// ErrBadOptions: New was given options it cannot use.
	ErrBadOptions = errors.New("sss/mongoredis: bad options")
	// ErrMalformed: a relayed message or a stored document could not be
	// decoded; it is skipped and the gap it leaves is filled from the log.
	ErrMalformed = errors.New("sss/mongoredis: malformed data from backend")
)

// opError wraps err with the package and the operation, once: every error
// an exported method returns goes through it.
func opError(op string, err error) error {
	return fmt.Errorf("sss/mongoredis: %s: %w", op, err)
}

// closedError is the error of op on a closed scaler.
func closedError(op string) error { return opError(op, scaler.ErrClosed) }

// unavailable marks a failed backend call (what it did) so that the error
// satisfies errors.Is(err, scaler.ErrUnavailable).
func unavailable(what string, err error) error {
	if errors.Is(err, scaler.ErrUnavailable) {
		return err
	}
	return fmt.Errorf("%s: %w: %w", what, scaler.ErrUnavailable, err)
}

// malformed reports undecodable backend data (what it was, what is wrong).
func malformed(what, why string) error {
	return fmt.Errorf("%w: %s: %s", ErrMalformed, what, why)
}
