package protocol

import (
	"encoding/json"
	"strconv"
	"unicode/utf8"
)

// members holds the raw values of a frame's top-level keys; nil = absent.
type members struct {
	sys, id, channel, topic, msg, query, lastUID, subs  []byte
	result, errs, records, uid, err, prot, reason, name []byte
}

// split fills m from the members of the valid JSON object obj. When a key
// repeats, the last one wins (as with JavaScript's JSON.parse). Keys match
// case-sensitively.
func (m *members) split(obj []byte) {
	it, _ := newObjectIter(obj)
	for {
		key, val, ok := it.next()
		if !ok {
			return
		}
		var dst *[]byte
		switch string(key) {
		case "sys":
			dst = &m.sys
		case "id":
			dst = &m.id
		case "channel":
			dst = &m.channel
		case "topic":
			dst = &m.topic
		case "msg":
			dst = &m.msg
		case "query":
			dst = &m.query
		case "lastUid":
			dst = &m.lastUID
		case "subscriptions":
			dst = &m.subs
		case "result":
			dst = &m.result
		case "errors":
			dst = &m.errs
		case "records":
			dst = &m.records
		case "uid":
			dst = &m.uid
		case "err":
			dst = &m.err
		case "prot":
			dst = &m.prot
		case "reason":
			dst = &m.reason
		default:
			if hasByte(key, '\\') {
				dst = m.escapedKey(key)
			}
		}
		if dst != nil {
			*dst = val
		}
	}
}

// escapedKey maps a key spelled with escapes to its member, or nil.
func (m *members) escapedKey(key []byte) *[]byte {
	for _, k := range [...]struct {
		name string
		dst  *[]byte
	}{
		{"sys", &m.sys}, {"id", &m.id}, {"channel", &m.channel}, {"topic", &m.topic},
		{"msg", &m.msg}, {"query", &m.query}, {"lastUid", &m.lastUID},
		{"subscriptions", &m.subs}, {"result", &m.result}, {"errors", &m.errs},
		{"records", &m.records}, {"uid", &m.uid}, {"err", &m.err}, {"prot", &m.prot},
		{"reason", &m.reason},
	} {
		if keyIs(key, k.name) {
			return k.dst
		}
	}
	return nil
}

// frame runs the checks common to both directions: size, depth, JSON
// validity, object. It returns the frame's members.
func frame(data []byte, lim Limits, m *members) *DecodeError {
	lim = lim.WithDefaults()
	if lim.MaxFrameBytes > 0 && len(data) > lim.MaxFrameBytes {
		return &DecodeError{Code: CodeBadFrame, Detail: "frame of " + strconv.Itoa(len(data)) +
			" bytes is over the limit of " + strconv.Itoa(lim.MaxFrameBytes), cause: ErrFrameTooLarge}
	}
	// A text frame must be UTF-8 (RFC 6455); raw values are echoed and
	// relayed verbatim, so invalid bytes would reach other clients.
	if !utf8.Valid(data) {
		return &DecodeError{Code: CodeBadFrame, Detail: "not UTF-8"}
	}
	// One pass checks the grammar and the depth together, so deep input
	// costs no more than its length.
	if valid, tooDeep := validate(data, lim.MaxDepth); !valid {
		if tooDeep {
			return &DecodeError{Code: CodeBadFrame, Detail: "nesting deeper than " + strconv.Itoa(lim.MaxDepth)}
		}
		return &DecodeError{Code: CodeBadFrame, Detail: "not JSON"}
	}
	if i := skipSpace(data, 0); data[i] != '{' {
		return &DecodeError{Code: CodeBadFrame, Detail: "not a JSON object"}
	}
	m.split(data)
	return nil
}

// badRequest returns a bad_request DecodeError for sys, carrying id when
// it is usable.
func badRequest(sys Sys, id []byte, detail string) *DecodeError {
	e := &DecodeError{Code: CodeBadRequest, Sys: sys, Detail: detail}
	if usableID(id) {
		e.ID = id
	}
	return e
}

// optRaw returns an optional raw value: nil when absent or null.
func optRaw(val []byte) json.RawMessage {
	if val == nil || isNull(val) {
		return nil
	}
	return val
}

// DecodeClient decodes and validates a frame a client sent to a server
// (SUBSCRIBE, UNSUBSCRIBE, BEGIN, SYNC, ASK, TELL). It never panics; bad
// input yields a *DecodeError whose Code follows docs/protocol.md's bad-input
// table. Heartbeats ("h") are not frames: check them before calling.
// Channel names are not validated beyond being strings: the server answers
// bad_channel itself (ValidChannel). A frame over lim.MaxFrameBytes yields
// a bad_frame error that wraps ErrFrameTooLarge.
//
// The returned Message's raw fields alias data.
func DecodeClient(data []byte, lim Limits) (*Message, error) {
	var m members
	if e := frame(data, lim, &m); e != nil {
		return nil, e
	}
	if m.sys == nil {
		return nil, &DecodeError{Code: CodeUnknownSys, Detail: "missing sys"}
	}
	sys, ok := parseSys(m.sys)
	if !ok {
		return nil, &DecodeError{Code: CodeUnknownSys, Detail: "sys is not an integer"}
	}
	msg := &Message{Sys: sys}
	switch sys {
	case SysBegin:
		return msg, nil
	case SysSubscribe, SysAsk:
		// Without a usable id the server cannot reply: the id's fault
		// wins over every other fault of the frame. An absent or null id
		// is missing; one of another type (object, array, boolean) is a
		// field of the wrong type.
		if !usableID(m.id) {
			if m.id == nil || isNull(m.id) {
				return nil, &DecodeError{Code: CodeMissingID, Sys: sys, Detail: "request without an id"}
			}
			return nil, &DecodeError{Code: CodeBadRequest, Sys: sys, Detail: "id must be a number or a string"}
		}
		msg.ID = m.id
		if sys == SysSubscribe {
			ch, ok := unquote(m.channel)
			if !ok {
				return nil, badRequest(sys, m.id, "channel must be a string")
			}
			msg.Channel = ch
			msg.Query = optRaw(m.query)
			return msg, nil
		}
		topic, ok := unquote(m.topic)
		if !ok {
			return nil, badRequest(sys, m.id, "topic must be a string")
		}
		msg.Topic = topic
		msg.Msg = m.msg
		return msg, nil
	case SysUnsubscribe:
		ch, ok := unquote(m.channel)
		if !ok {
			return nil, badRequest(sys, nil, "channel must be a string")
		}
		msg.Channel = ch
		return msg, nil
	case SysTell:
		topic, ok := unquote(m.topic)
		if !ok {
			return nil, badRequest(sys, nil, "topic must be a string")
		}
		msg.Topic = topic
		msg.Msg = m.msg
		return msg, nil
	case SysSync:
		if usableID(m.id) {
			msg.ID = m.id
		}
		subs, err := decodeSyncEntries(m.subs)
		if err != "" {
			return nil, badRequest(sys, msg.ID, err)
		}
		msg.Subscriptions = subs
		return msg, nil
	}
	return nil, &DecodeError{Code: CodeUnknownSys, Sys: sys, Detail: "sys " + strconv.Itoa(int(sys)) + " is not a client request"}
}

// decodeSyncEntries decodes a SYNC request's subscriptions. It returns a
// non-empty detail when they are malformed.
func decodeSyncEntries(raw []byte) ([]SyncEntry, string) {
	it, ok := newArrayIter(raw)
	if !ok {
		return nil, "subscriptions must be an array"
	}
	subs := make([]SyncEntry, 0, 4)
	for {
		el, ok := it.next()
		if !ok {
			return subs, ""
		}
		ob, ok := newObjectIter(el)
		if !ok {
			return nil, "subscriptions must hold objects"
		}
		var e SyncEntry
		var ch, last, query []byte
		for {
			k, v, ok := ob.next()
			if !ok {
				break
			}
			switch {
			case keyIs(k, "channel"):
				ch = v
			case keyIs(k, "lastUid"):
				last = v
			case keyIs(k, "query"):
				query = v
			}
		}
		if e.Channel, ok = unquote(ch); !ok {
			return nil, "subscription channel must be a string"
		}
		if last != nil && !isNull(last) {
			if e.LastUID, ok = unquote(last); !ok {
				return nil, "lastUid must be a string or null"
			}
			e.HasUID = true
		}
		e.Query = optRaw(query)
		subs = append(subs, e)
	}
}

// DecodeServer decodes a frame a server sent to a client: the replies to
// SUBSCRIBE, BEGIN and SYNC, TELL, RESPONSE, FEED, BOOT, BROADCAST,
// UPDATESUB, and the error frame {"err":{...}} (Sys 0). It never panics; bad
// input yields a *DecodeError. SYNC records are decoded as FEED messages.
//
// The returned Message's raw fields alias data.
func DecodeServer(data []byte, lim Limits) (*Message, error) {
	var m members
	if e := frame(data, lim, &m); e != nil {
		return nil, e
	}
	return decodeServer(&m)
}

// decodeServer validates the members of a server frame.
func decodeServer(m *members) (*Message, error) {
	if m.sys == nil {
		if m.err == nil {
			return nil, &DecodeError{Code: CodeUnknownSys, Detail: "missing sys"}
		}
		e, ok := decodeError(m.err)
		if !ok {
			return nil, &DecodeError{Code: CodeBadRequest, Detail: "err must be an error object"}
		}
		return &Message{Err: e}, nil
	}
	sys, ok := parseSys(m.sys)
	if !ok {
		return nil, &DecodeError{Code: CodeUnknownSys, Detail: "sys is not an integer"}
	}
	msg := &Message{Sys: sys}
	bad := func(detail string) (*Message, error) { return nil, badRequest(sys, nil, detail) }
	// str decodes an optional string member into dst; false when present
	// but not a string.
	str := func(val []byte, dst *string, required bool) bool {
		if val == nil || (!required && isNull(val)) {
			return !required
		}
		s, ok := unquote(val)
		*dst = s
		return ok
	}
	if m.err != nil && !isNull(m.err) {
		e, ok := decodeError(m.err)
		if !ok {
			return bad("err must be an error object")
		}
		msg.Err = e
	}
	switch sys {
	case SysSubscribe:
		switch string(m.result) {
		case "true":
			msg.Result = true
		case "false":
		default:
			return bad("result must be a boolean")
		}
		if !usableID(m.id) {
			return nil, &DecodeError{Code: CodeMissingID, Sys: sys, Detail: "reply without a usable id"}
		}
		msg.ID = m.id
		if !str(m.channel, &msg.Channel, false) || !str(m.lastUID, &msg.LastUID, false) {
			return bad("channel and lastUid must be strings")
		}
	case SysBegin:
		p, ok := decodeProt(m.prot)
		if !ok {
			return bad("prot must be an object")
		}
		msg.Prot = p
		if !str(m.channel, &msg.Channel, false) || !str(m.lastUID, &msg.LastUID, false) {
			return bad("channel and lastUid must be strings")
		}
	case SysSync:
		if usableID(m.id) {
			msg.ID = m.id
		}
		if err := decodeSyncReply(m, msg); err != "" {
			return bad(err)
		}
	case SysTell, SysBroadcast:
		if !str(m.topic, &msg.Topic, true) {
			return bad("topic must be a string")
		}
		msg.Msg = m.msg
	case SysResponse:
		if !usableID(m.id) {
			return nil, &DecodeError{Code: CodeMissingID, Sys: sys, Detail: "response without a usable id"}
		}
		msg.ID = m.id
		if msg.Err == nil {
			msg.Msg = m.msg
		}
	case SysFeed:
		if !str(m.topic, &msg.Topic, true) || !str(m.channel, &msg.Channel, true) || !str(m.uid, &msg.UID, true) {
			return bad("FEED needs string topic, channel and uid")
		}
		msg.Msg = m.msg
	case SysUpdateSub:
		if !str(m.channel, &msg.Channel, true) || !str(m.uid, &msg.UID, true) {
			return bad("UPDATESUB needs string channel and uid")
		}
	case SysBoot:
		if !str(m.reason, &msg.Reason, false) {
			return bad("reason must be a string")
		}
	default:
		return nil, &DecodeError{Code: CodeUnknownSys, Sys: sys, Detail: "sys " + strconv.Itoa(int(sys)) + " is not a server frame"}
	}
	return msg, nil
}

// decodeSyncReply fills msg from a SYNC reply's result, errors and records.
func decodeSyncReply(m *members, msg *Message) string {
	res, ok := newObjectIter(m.result)
	if !ok {
		return "result must be an object"
	}
	msg.SyncResult = make(map[string]bool)
	for {
		k, v, ok := res.next()
		if !ok {
			break
		}
		ch := keyString(k)
		switch string(v) {
		case "true":
			msg.SyncResult[ch] = true
		case "false":
			msg.SyncResult[ch] = false
		default:
			return "result values must be booleans"
		}
	}
	if m.errs != nil && !isNull(m.errs) {
		errs, ok := newObjectIter(m.errs)
		if !ok {
			return "errors must be an object"
		}
		for {
			k, v, ok := errs.next()
			if !ok {
				break
			}
			e, ok := decodeError(v)
			if !ok {
				return "errors values must be error objects"
			}
			if msg.SyncErrors == nil {
				msg.SyncErrors = make(map[string]*Error)
			}
			ch := keyString(k)
			msg.SyncErrors[ch] = e
		}
	}
	recs, ok := newArrayIter(m.records)
	if !ok {
		return "records must be an array"
	}
	msg.Records = make([]Message, 0)
	for {
		el, ok := recs.next()
		if !ok {
			return ""
		}
		if _, ok := newObjectIter(el); !ok {
			return "records must hold FEED objects"
		}
		var rm members
		rm.split(el)
		r, err := decodeServer(&rm)
		if err != nil || r.Sys != SysFeed {
			return "records must hold FEED objects"
		}
		msg.Records = append(msg.Records, *r)
	}
}

// decodeError decodes an error object; missing fields stay "".
func decodeError(val []byte) (*Error, bool) {
	it, ok := newObjectIter(val)
	if !ok {
		return nil, false
	}
	e := &Error{}
	for {
		k, v, ok := it.next()
		if !ok {
			return e, true
		}
		var dst *string
		switch {
		case keyIs(k, "name"):
			dst = &e.Name
		case keyIs(k, "message"):
			dst = &e.Message
		case keyIs(k, "code"):
			dst = &e.Code
		case keyIs(k, "channel"):
			dst = &e.Channel
		default:
			continue
		}
		s, ok := unquote(v)
		if !ok && !isNull(v) {
			return nil, false
		}
		*dst = s
	}
}

// decodeProt decodes BEGIN's prot object.
func decodeProt(val []byte) (*Prot, bool) {
	it, ok := newObjectIter(val)
	if !ok {
		return nil, false
	}
	p := &Prot{}
	for {
		k, v, ok := it.next()
		if !ok {
			return p, true
		}
		var dst *int
		switch {
		case keyIs(k, "hb"):
			p.HB = string(v) == "true"
			continue
		case keyIs(k, "v"):
			dst = &p.V
		case keyIs(k, "hbInterval"):
			dst = &p.HBInterval
		case keyIs(k, "hbThreshold"):
			dst = &p.HBThreshold
		default:
			continue
		}
		f, err := strconv.ParseFloat(string(v), 64)
		if err != nil || f < 0 || f > 1<<31 {
			return nil, false
		}
		*dst = int(f)
	}
}
