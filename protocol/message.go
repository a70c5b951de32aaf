package protocol

import "encoding/json"

// Limits bounds what the decoders accept (docs/protocol.md, "10. Bad
// input"). A zero field means its default; a negative one means no limit.
type Limits struct {
	// MaxFrameBytes is the longest frame, in bytes. Default 64 KiB.
	MaxFrameBytes int
	// MaxDepth is the deepest JSON nesting; the frame's own object is
	// level 1. Default 32.
	MaxDepth int
	// MaxChannelLen is the longest channel name, in bytes. Default 200. The
	// decoders do not check it: the server answers bad_channel itself, with
	// ValidChannel(name, MaxChannelLen).
	MaxChannelLen int
}

// Default limits (docs/protocol.md, "11. Limits and defaults").
const (
	DefaultMaxFrameBytes = 64 << 10
	DefaultMaxDepth      = 32
	DefaultMaxChannelLen = 200
)

// DefaultLimits returns the defaults of docs/protocol.md ("11. Limits and
// defaults").
func DefaultLimits() Limits {
	return Limits{MaxFrameBytes: DefaultMaxFrameBytes, MaxDepth: DefaultMaxDepth, MaxChannelLen: DefaultMaxChannelLen}
}

// WithDefaults returns l with every zero field set to its default.
func (l Limits) WithDefaults() Limits {
	if l.MaxFrameBytes == 0 {
		l.MaxFrameBytes = DefaultMaxFrameBytes
	}
	if l.MaxDepth == 0 {
		l.MaxDepth = DefaultMaxDepth
	}
	if l.MaxChannelLen == 0 {
		l.MaxChannelLen = DefaultMaxChannelLen
	}
	return l
}

// Prot is BEGIN's "prot" object. It always encodes as an object: {"v":1}
// when HB is false, else with hb, hbInterval and hbThreshold (the last two
// left out when zero; the SSS client then uses a threshold of 1000 ms).
type Prot struct {
	V           int  `json:"v"`                     // protocol version; 0 encodes as 1
	HB          bool `json:"hb,omitempty"`          // heartbeats on
	HBInterval  int  `json:"hbInterval,omitempty"`  // ms between heartbeats
	HBThreshold int  `json:"hbThreshold,omitempty"` // ms of grace the client adds
}

// SyncEntry is one entry of a SYNC request.
type SyncEntry struct {
	Channel string
	LastUID string          // raw lastUid string; "" when null or missing
	HasUID  bool            // lastUid was a string
	Query   json.RawMessage // nil when missing or null
}

// Message is any decoded frame, either direction. Which fields are set
// depends on Sys (see DecodeClient and DecodeServer). Raw JSON fields keep
// the bytes as received (ids byte-exact) and alias the decoded buffer: the
// caller must not modify that buffer while it uses the Message.
type Message struct {
	// Sys is the message code; 0 for an error frame {"err":{...}}.
	Sys     Sys
	ID      json.RawMessage // nil when missing or null
	Channel string
	Topic   string
	Msg     json.RawMessage // nil when missing; "null" when null
	Query   json.RawMessage // nil when missing or null
	// Result is the SUBSCRIBE reply's result.
	Result bool
	// SyncResult is the SYNC reply's result by channel.
	SyncResult map[string]bool
	// SyncErrors is the SYNC reply's errors by channel.
	SyncErrors    map[string]*Error
	Records       []Message   // SYNC reply records (FEED messages)
	UID           string      // FEED / UPDATESUB uid
	LastUID       string      // SUBSCRIBE / BEGIN reply lastUid
	Err           *Error      // reply error, or the error frame's error
	Prot          *Prot       // BEGIN reply
	Reason        string      // BOOT
	Subscriptions []SyncEntry // SYNC request
}

// SyncResult is one channel's outcome in a SYNC reply.
type SyncResult struct {
	Channel string
	OK      bool
	Err     *Error // set when !OK; nil encodes as a not_recoverable error
}
