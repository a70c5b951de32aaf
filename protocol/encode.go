package protocol

import (
	"encoding/json"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Server -> client encoders. Each appends one compact JSON object with
// "sys" first to b and returns the extended slice, in the key order of the
// examples of docs/protocol.md. json.RawMessage values are written verbatim
// (nil or empty as null) and must be valid JSON; strings are escaped
// without HTML escaping. They never allocate beyond growing b.

// AppendFeed appends a FEED: {"sys":8,"topic":..,"msg":..,"channel":..,"uid":..}.
func AppendFeed(b []byte, channel, topic string, msg json.RawMessage, uid UID) []byte {
	b = append(b, `{"sys":8,"topic":`...)
	b = appendString(b, topic)
	b = append(b, `,"msg":`...)
	b = appendRaw(b, msg)
	b = append(b, `,"channel":`...)
	b = appendString(b, channel)
	b = append(b, `,"uid":`...)
	return appendUID(b, uid)
}

// appendUID appends a uid as a JSON string and closes the object. Epochs
// are alphanumeric, so the uid needs no escaping; an invalid one is escaped
// anyway rather than producing bad JSON.
func appendUID(b []byte, uid UID) []byte {
	if !ValidEpoch(uid.Epoch) {
		b = appendString(b, uid.String())
		return append(b, '}')
	}
	b = append(b, '"')
	b = uid.AppendText(b)
	return append(b, '"', '}')
}

// AppendUpdateSub appends an UPDATESUB: {"sys":12,"channel":..,"uid":..}.
func AppendUpdateSub(b []byte, channel string, uid UID) []byte {
	b = append(b, `{"sys":12,"channel":`...)
	b = appendString(b, channel)
	b = append(b, `,"uid":`...)
	return appendUID(b, uid)
}

// AppendSubscribeOK appends a granted SUBSCRIBE reply:
// {"sys":1,"result":true,"channel":..,"id":..,"lastUid":..}.
func AppendSubscribeOK(b []byte, id json.RawMessage, channel string, lastUID UID) []byte {
	b = append(b, `{"sys":1,"result":true,"channel":`...)
	b = appendString(b, channel)
	b = append(b, `,"id":`...)
	b = appendRaw(b, id)
	b = append(b, `,"lastUid":`...)
	return appendUID(b, lastUID)
}

// AppendSubscribeFail appends a refused SUBSCRIBE reply:
// {"sys":1,"result":false,"channel":..,"id":..,"err":{..}}. The channel key
// is left out when channel is "" (the bad_request case of docs/protocol.md,
// "10. Bad input").
func AppendSubscribeFail(b []byte, id json.RawMessage, channel string, err *Error) []byte {
	b = append(b, `{"sys":1,"result":false`...)
	if channel != "" {
		b = append(b, `,"channel":`...)
		b = appendString(b, channel)
	}
	b = append(b, `,"id":`...)
	b = appendRaw(b, id)
	b = append(b, `,"err":`...)
	b = appendError(b, err)
	return append(b, '}')
}

// AppendBeginReply appends a BEGIN reply: {"sys":3,"prot":{..}} plus
// "channel" and "lastUid" when userChannel is not "" (a session with a user).
func AppendBeginReply(b []byte, prot Prot, userChannel string, lastUID UID) []byte {
	b = append(b, `{"sys":3,"prot":`...)
	b = appendProt(b, prot)
	if userChannel == "" {
		return append(b, '}')
	}
	b = append(b, `,"channel":`...)
	b = appendString(b, userChannel)
	b = append(b, `,"lastUid":`...)
	return appendUID(b, lastUID)
}

// appendProt appends BEGIN's prot object: {"v":1} with heartbeats off, else
// {"v":1,"hb":true,"hbInterval":..,"hbThreshold":..} (zero values left out).
func appendProt(b []byte, p Prot) []byte {
	if p.V == 0 {
		p.V = 1
	}
	b = append(b, `{"v":`...)
	b = strconv.AppendInt(b, int64(p.V), 10)
	if p.HB {
		b = append(b, `,"hb":true`...)
		if p.HBInterval != 0 {
			b = append(b, `,"hbInterval":`...)
			b = strconv.AppendInt(b, int64(p.HBInterval), 10)
		}
		if p.HBThreshold != 0 {
			b = append(b, `,"hbThreshold":`...)
			b = strconv.AppendInt(b, int64(p.HBThreshold), 10)
		}
	}
	return append(b, '}')
}

// AppendSyncReply appends a SYNC reply:
// {"sys":4,"result":{..},"errors":{..},"records":[..]}, with "id" right after
// "sys" when id is not nil, and "errors" only when some entry failed (a
// failed entry with a nil Err gets a not_recoverable error). records are
// already-encoded FEED objects (from AppendFeed), in order, written
// verbatim. result is always an object and records always an array.
func AppendSyncReply(b []byte, id json.RawMessage, results []SyncResult, records [][]byte) []byte {
	b = append(b, `{"sys":4`...)
	if id != nil {
		b = append(b, `,"id":`...)
		b = appendRaw(b, id)
	}
	b = append(b, `,"result":{`...)
	failed := false
	for i, r := range results {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendString(b, r.Channel)
		if r.OK {
			b = append(b, ":true"...)
		} else {
			b = append(b, ":false"...)
			failed = true
		}
	}
	b = append(b, '}')
	if failed {
		b = append(b, `,"errors":{`...)
		first := true
		for _, r := range results {
			if r.OK {
				continue
			}
			if !first {
				b = append(b, ',')
			}
			first = false
			b = appendString(b, r.Channel)
			b = append(b, ':')
			e := r.Err
			if e == nil {
				e = &notRecoverableError
			}
			b = appendError(b, e)
		}
		b = append(b, '}')
	}
	b = append(b, `,"records":[`...)
	for i, r := range records {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendRaw(b, r)
	}
	return append(b, ']', '}')
}

// notRecoverableError stands in for a failed SYNC entry without an error.
var notRecoverableError = Error{Name: "NotRecoverable", Message: "channel not recoverable", Code: CodeNotRecoverable}

// AppendResponse appends a RESPONSE: {"sys":7,"msg":..,"id":..}.
func AppendResponse(b []byte, id json.RawMessage, msg json.RawMessage) []byte {
	b = append(b, `{"sys":7,"msg":`...)
	b = appendRaw(b, msg)
	b = append(b, `,"id":`...)
	b = appendRaw(b, id)
	return append(b, '}')
}

// AppendResponseError appends a failed RESPONSE: {"sys":7,"err":{..},"id":..}.
func AppendResponseError(b []byte, id json.RawMessage, err *Error) []byte {
	b = append(b, `{"sys":7,"err":`...)
	b = appendError(b, err)
	b = append(b, `,"id":`...)
	b = appendRaw(b, id)
	return append(b, '}')
}

// AppendTell appends a TELL: {"sys":6,"topic":..,"msg":..}. The same shape
// goes both ways.
func AppendTell(b []byte, topic string, msg json.RawMessage) []byte {
	return appendTopicMsg(b, SysTell, topic, msg)
}

// AppendBroadcast appends a BROADCAST: {"sys":11,"topic":..,"msg":..}.
func AppendBroadcast(b []byte, topic string, msg json.RawMessage) []byte {
	return appendTopicMsg(b, SysBroadcast, topic, msg)
}

// appendTopicMsg appends {"sys":N,"topic":..,"msg":..}.
func appendTopicMsg(b []byte, sys Sys, topic string, msg json.RawMessage) []byte {
	b = appendSys(b, sys)
	b = append(b, `,"topic":`...)
	b = appendString(b, topic)
	b = append(b, `,"msg":`...)
	b = appendRaw(b, msg)
	return append(b, '}')
}

// AppendBoot appends a BOOT: {"sys":9,"reason":..}. A reason longer than
// MaxReasonLen bytes is cut at a rune boundary (it must fit a close frame).
func AppendBoot(b []byte, reason string) []byte {
	b = append(b, `{"sys":9,"reason":`...)
	b = appendString(b, TruncateReason(reason))
	return append(b, '}')
}

// AppendErrorFrame appends an error frame tied to no request:
// {"err":{..}}. It has no sys (docs/protocol.md, "3.2 Error objects"); a
// nil err writes the internal error.
func AppendErrorFrame(b []byte, err *Error) []byte {
	b = append(b, `{"err":`...)
	b = appendError(b, err)
	return append(b, '}')
}

// TruncateReason returns a close or boot reason as valid UTF-8 (each
// invalid byte replaced by U+FFFD) of at most MaxReasonLen bytes, cut on a
// rune boundary: a close frame's reason must be UTF-8 (RFC 6455 §5.5.1).
func TruncateReason(reason string) string {
	if !utf8.ValidString(reason) {
		reason = strings.ToValidUTF8(reason, "\uFFFD")
	}
	if len(reason) <= MaxReasonLen {
		return reason
	}
	cut := MaxReasonLen
	for cut > 0 && !utf8.RuneStart(reason[cut]) {
		cut--
	}
	return reason[:cut]
}
