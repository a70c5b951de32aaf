package protocol

// Error is the error object of the wire (PROTOCOL.md, "Errors"): name and
// message are what the SSS client shows, code is our stable snake_case code.
// All three are always encoded.
type Error struct {
	Name    string `json:"name"`
	Message string `json:"message"`
	Code    string `json:"code"`
}

// Error implements the error interface.
func (e *Error) Error() string { return "sss: " + e.Code + ": " + e.Message }

// Error codes (PROTOCOL.md, "Errors" and "Bad input").
const (
	CodeBadFrame             = "bad_frame"
	CodeUnknownSys           = "unknown_sys"
	CodeBadRequest           = "bad_request"
	CodeMissingID            = "missing_id"
	CodeUnknownTopic         = "unknown_topic"
	CodeBadChannel           = "bad_channel"
	CodeReservedChannel      = "reserved_channel"
	CodeTooManySubscriptions = "too_many_subscriptions"
	CodeInternal             = "internal"
	CodeRateLimited          = "rate_limited"
	CodeNotRecoverable       = "not_recoverable"
	CodeForbidden            = "forbidden"
	CodeRefused              = "refused"   // a parser refused without a code
	CodeAppError             = "app_error" // a handler's error object had no code
	CodeUnavailable          = "unavailable"
)
