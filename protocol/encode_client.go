package protocol

import "encoding/json"

// Client -> server encoders, with the key order the SSS client uses.
// AppendTell serves both directions.

// AppendBegin appends a BEGIN request: {"sys":3}.
func AppendBegin(b []byte) []byte { return append(b, `{"sys":3}`...) }

// AppendSync appends a SYNC request:
// {"sys":4,"subscriptions":[{"channel":..,"lastUid":..,"query":..},..]},
// with "id" right after "sys" when id is not nil. An entry with HasUID false
// encodes lastUid null; a nil Query encodes query null. subscriptions is
// always an array.
func AppendSync(b []byte, id json.RawMessage, entries []SyncEntry) []byte {
	b = append(b, `{"sys":4`...)
	if id != nil {
		b = append(b, `,"id":`...)
		b = appendRaw(b, id)
	}
	b = append(b, `,"subscriptions":[`...)
	for i, e := range entries {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"channel":`...)
		b = appendString(b, e.Channel)
		b = append(b, `,"lastUid":`...)
		if e.HasUID {
			b = appendString(b, e.LastUID)
		} else {
			b = append(b, "null"...)
		}
		b = append(b, `,"query":`...)
		b = appendRaw(b, e.Query)
		b = append(b, '}')
	}
	return append(b, ']', '}')
}

// AppendSubscribe appends a SUBSCRIBE request:
// {"sys":1,"channel":..,"query":..,"id":..}. A nil query encodes null.
func AppendSubscribe(b []byte, id json.RawMessage, channel string, query json.RawMessage) []byte {
	b = append(b, `{"sys":1,"channel":`...)
	b = appendString(b, channel)
	b = append(b, `,"query":`...)
	b = appendRaw(b, query)
	b = append(b, `,"id":`...)
	b = appendRaw(b, id)
	return append(b, '}')
}

// AppendUnsubscribe appends an UNSUBSCRIBE: {"sys":2,"channel":..}.
func AppendUnsubscribe(b []byte, channel string) []byte {
	b = append(b, `{"sys":2,"channel":`...)
	b = appendString(b, channel)
	return append(b, '}')
}

// AppendAsk appends an ASK: {"sys":5,"topic":..,"msg":..,"id":..}. A nil
// msg encodes null.
func AppendAsk(b []byte, id json.RawMessage, topic string, msg json.RawMessage) []byte {
	b = append(b, `{"sys":5,"topic":`...)
	b = appendString(b, topic)
	b = append(b, `,"msg":`...)
	b = appendRaw(b, msg)
	b = append(b, `,"id":`...)
	b = appendRaw(b, id)
	return append(b, '}')
}
