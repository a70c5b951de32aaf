package protocol

// Sys is a message code (docs/protocol.md, "2. Message codes").
type Sys int

// Message codes.
const (
	SysSubscribe   Sys = 1  // both: request / reply
	SysUnsubscribe Sys = 2  // client -> server
	SysBegin       Sys = 3  // both: request / reply
	SysSync        Sys = 4  // both: request / reply
	SysAsk         Sys = 5  // client -> server
	SysTell        Sys = 6  // both
	SysResponse    Sys = 7  // server -> client
	SysFeed        Sys = 8  // server -> client
	SysBoot        Sys = 9  // server -> client
	SysBootChannel Sys = 10 // reserved, never sent
	SysBroadcast   Sys = 11 // server -> client
	SysUpdateSub   Sys = 12 // server -> client
)

// Close codes (docs/protocol.md, "9.1 Close codes").
const (
	CloseNormal           = 1000
	CloseGoingAway        = 1001 // server shutting down; client reconnects and SYNCs
	CloseUnsupportedData  = 1003 // binary frame received
	ClosePolicyViolation  = 1008 // reused outstanding id, or bad frames past the limit
	CloseTooLarge         = 1009 // frame over the size limit
	CloseInternalError    = 1011 // the server failed on this socket (a panic in OnOpen); client reconnects
	CloseServiceRestart   = 1012 // server restarting; client reconnects and SYNCs
	CloseTryAgainLater    = 1013 // backend unavailable during SYNC, connection limit
	CloseByClient         = 4000 // closed by the client on purpose: no reconnect
	CloseBooted           = 4001 // booted by the server: no reconnect
	CloseSlowConsumer     = 4002 // send queue overflowed; client reconnects and SYNCs
	CloseHeartbeatTimeout = 4003 // heartbeat not answered (server side)
	CloseHeartbeatLost    = 4100 // heartbeat lost (client side)
)

// MaxReasonLen is the longest close or boot reason, in bytes (a close
// frame's payload is at most 125 bytes, 2 of them the code).
const MaxReasonLen = 123

// Heartbeat is the text of a heartbeat frame, in both directions.
const Heartbeat = "h"

// PresenceTopic is the reserved TELL topic of presence events.
const PresenceTopic = "_presence"

// UserChannelPrefix begins every user channel: the user channel of user id
// U is UserChannelPrefix + U.
const UserChannelPrefix = "_user."
