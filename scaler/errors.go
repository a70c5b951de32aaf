package scaler

import "errors"

// Sentinel errors. Scalers wrap them with the operation and channel, so
// callers test with errors.Is.
var (
	// ErrNotRecoverable is satisfied by every error saying that the
	// publications asked for can no longer be returned.
	ErrNotRecoverable = errors.New("sss/scaler: not recoverable")
	// ErrTrimmed: some publication after the given uid was removed by
	// retention. errors.Is(ErrTrimmed, ErrNotRecoverable) is true.
	ErrTrimmed = &notRecoverable{"sss/scaler: history trimmed"}
	// ErrEpochChanged: the channel's history was lost or reset since the
	// given uid. errors.Is(ErrEpochChanged, ErrNotRecoverable) is true.
	ErrEpochChanged = &notRecoverable{"sss/scaler: history epoch changed"}
	// ErrFuture: the given uid is beyond the channel's position (a client
	// bug or a backend that lost data). errors.Is(ErrFuture,
	// ErrNotRecoverable) is true.
	ErrFuture = &notRecoverable{"sss/scaler: uid beyond the channel's position"}
	// ErrUnavailable: the backend cannot answer now; retry later. From
	// Publish it means the publication was not stored.
	ErrUnavailable = errors.New("sss/scaler: backend unavailable")
	// ErrUncertain: Publish could not learn whether the publication was
	// stored (the write was sent, then the context ended or the
	// connection failed before the answer). It may yet appear in the
	// channel, once. Retry with the same idempotency key: a retry returns
	// the stored uid if the first attempt landed, and stores it once if
	// not. It does not match ErrUnavailable.
	ErrUncertain = errors.New("sss/scaler: publish outcome uncertain")
	// ErrBadPayload: a published message is not valid UTF-8 JSON text
	// (Publish stores nothing). Every scaler rejects such a payload: a
	// text frame must be valid UTF-8, and a stored copy could otherwise
	// come back different from the one delivered live.
	ErrBadPayload = errors.New("sss/scaler: payload is not valid UTF-8 JSON")
	// ErrClosed: the scaler was closed.
	ErrClosed = errors.New("sss/scaler: closed")
	// ErrStarted: Start was called twice.
	ErrStarted = errors.New("sss/scaler: already started")
)

type notRecoverable struct{ msg string }

func (e *notRecoverable) Error() string { return e.msg }

// Is makes every notRecoverable error match ErrNotRecoverable.
func (e *notRecoverable) Is(target error) bool { return target == ErrNotRecoverable }
