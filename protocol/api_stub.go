package protocol

// THIS FILE IS A STUB WRITTEN BY THE LEAD: it fixes the API other packages
// code against. The protocol helper replaces it with real files (same names
// and signatures; adding is fine, renaming is not) and deletes this file.

import "encoding/json"

// NewError returns an error object with the given code and message and a
// Name derived from the code (e.g. "bad_frame" -> "BadFrame").
func NewError(code, message string) *Error { return &Error{Name: code, Message: message, Code: code} }

// Limits bounds what Decode accepts (PROTOCOL.md, "Bad input").
type Limits struct {
	MaxFrameBytes int // default 64 KiB
	MaxDepth      int // default 32; the frame's own object is level 1
	MaxChannelLen int // default 200
}

// DefaultLimits returns PROTOCOL.md's defaults.
func DefaultLimits() Limits { return Limits{MaxFrameBytes: 64 << 10, MaxDepth: 32, MaxChannelLen: 200} }

// Prot is BEGIN's "prot" object.
type Prot struct {
	V           int  `json:"v"`
	HB          bool `json:"hb,omitempty"`
	HBInterval  int  `json:"hbInterval,omitempty"`  // ms
	HBThreshold int  `json:"hbThreshold,omitempty"` // ms
}

// SyncEntry is one entry of a SYNC request.
type SyncEntry struct {
	Channel string
	LastUID string          // raw lastUid string; "" when null or missing
	HasUID  bool            // lastUid was a string
	Query   json.RawMessage // nil when missing or null
}

// Message is any decoded frame, either direction. Raw JSON fields keep the
// bytes as received (IDs byte-exact).
type Message struct {
	Sys     Sys
	ID      json.RawMessage // nil when missing or null
	Channel string
	Topic   string
	Msg     json.RawMessage // nil when missing; "null" when null
	Query   json.RawMessage // nil when missing or null
	// SUBSCRIBE reply result; SYNC reply results by channel.
	Result        bool
	SyncResult    map[string]bool
	SyncErrors    map[string]*Error
	Records       []Message // SYNC reply records (FEED messages)
	UID           string    // FEED / UPDATESUB uid
	LastUID       string    // SUBSCRIBE / BEGIN reply lastUid
	Err           *Error
	Prot          *Prot
	Reason        string
	Subscriptions []SyncEntry // SYNC request
}

// DecodeError is returned by the decoders: Code is one of the bad-input codes
// (CodeBadFrame, CodeUnknownSys, CodeBadRequest, CodeMissingID); ID is the
// frame's usable id when it had one (so a reply can carry it); Sys the code
// when it was readable.
type DecodeError struct {
	Code   string
	Sys    Sys
	ID     json.RawMessage
	Detail string
}

func (e *DecodeError) Error() string { return "sss/protocol: " + e.Code + ": " + e.Detail }

// DecodeClient decodes and validates a frame a client sent to a server
// (SUBSCRIBE, UNSUBSCRIBE, BEGIN, SYNC, ASK, TELL). It never panics; bad
// input yields a *DecodeError. Heartbeats ("h") are not frames: check them
// before calling. Channel names are NOT validated here beyond being strings
// (the server answers bad_channel itself), but len must be <= MaxChannelLen
// else bad_channel is the server's answer too.
func DecodeClient(data []byte, lim Limits) (*Message, error) { return nil, nil }

// DecodeServer decodes a frame a server sent to a client.
func DecodeServer(data []byte, lim Limits) (*Message, error) { return nil, nil }

// ValidChannel reports whether name matches ^[A-Za-z0-9_-]{1,max}$.
func ValidChannel(name string, max int) bool { return false }

// ReservedChannel reports whether name begins with '_'.
func ReservedChannel(name string) bool { return len(name) > 0 && name[0] == '_' }

// UserChannel returns the user channel of user id u ("_user." + u).
func UserChannel(user string) string { return UserChannelPrefix + user }

// ValidUserID reports whether u is 1-128 bytes of UTF-8 without control characters.
func ValidUserID(u string) bool { return false }

// ---- server -> client encoders: each appends one compact JSON object
// with "sys" first to b and returns it. json.RawMessage values are written
// as given (nil written as null); strings are escaped without HTML escaping.

func AppendFeed(b []byte, channel, topic string, msg json.RawMessage, uid UID) []byte    { return b }
func AppendUpdateSub(b []byte, channel string, uid UID) []byte                           { return b }
func AppendSubscribeOK(b []byte, id json.RawMessage, channel string, lastUID UID) []byte { return b }

// AppendSubscribeFail: channel omitted when channel == "" (bad_request case).
func AppendSubscribeFail(b []byte, id json.RawMessage, channel string, err *Error) []byte { return b }

// AppendBeginReply: userChannel "" means no user (no channel/lastUid keys).
func AppendBeginReply(b []byte, prot Prot, userChannel string, lastUID UID) []byte { return b }

// SyncResult is one channel's outcome in a SYNC reply.
type SyncResult struct {
	Channel string
	OK      bool
	Err     *Error // set when !OK
}

// AppendSyncReply: records are already-encoded FEED objects (from
// AppendFeed), in order; id nil means no id key. result always an object,
// records always an array; "errors" present only when some entry failed.
func AppendSyncReply(b []byte, id json.RawMessage, results []SyncResult, records [][]byte) []byte {
	return b
}
func AppendResponse(b []byte, id json.RawMessage, msg json.RawMessage) []byte { return b }
func AppendResponseError(b []byte, id json.RawMessage, err *Error) []byte     { return b }
func AppendTell(b []byte, topic string, msg json.RawMessage) []byte           { return b }
func AppendBroadcast(b []byte, topic string, msg json.RawMessage) []byte      { return b }
func AppendBoot(b []byte, reason string) []byte                               { return b }
func AppendErrorFrame(b []byte, err *Error) []byte                            { return b }

// ---- client -> server encoders.

func AppendBegin(b []byte) []byte { return b }

// AppendSync: id nil = no id key. Entry with HasUID false encodes lastUid null;
// Query nil encodes query null.
func AppendSync(b []byte, id json.RawMessage, entries []SyncEntry) []byte { return b }
func AppendSubscribe(b []byte, id json.RawMessage, channel string, query json.RawMessage) []byte {
	return b
}
func AppendUnsubscribe(b []byte, channel string) []byte                                { return b }
func AppendAsk(b []byte, id json.RawMessage, topic string, msg json.RawMessage) []byte { return b }
