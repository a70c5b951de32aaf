// Package protocol is the wire protocol of sss: the messages of
// docs/protocol.md (wire-compatible with the Super Scaled Sockets
// JavaScript client), their codes, decoding with validation, encoding,
// error objects and codes, close codes, channel and user id rules, uids,
// the presence event, and the encoding of application payloads
// (MarshalPayload). It does no I/O.
//
// A server decodes what a client sends and answers with the Append
// encoders, which append one compact JSON object to a buffer without
// allocating:
//
//	m, err := protocol.DecodeClient(frame, protocol.DefaultLimits())
//	var de *protocol.DecodeError
//	switch {
//	case errors.Is(err, protocol.ErrFrameTooLarge):
//		// close with protocol.CloseTooLarge (1009)
//	case errors.As(err, &de) && de.ID != nil && de.Sys == protocol.SysAsk:
//		out = protocol.AppendResponseError(out, de.ID, de.Object())
//	case errors.As(err, &de) && de.ID != nil && de.Sys == protocol.SysSubscribe:
//		out = protocol.AppendSubscribeFail(out, de.ID, "", de.Object())
//	case errors.As(err, &de):
//		out = protocol.AppendErrorFrame(out, de.Object()) // {"err":{...}}
//	case m.Sys == protocol.SysAsk:
//		out = protocol.AppendResponse(out, m.ID, answer(m.Topic, m.Msg))
//	}
//
// A client does the reverse with the client encoders (AppendBegin,
// AppendSubscribe, AppendSync, ...) and DecodeServer.
//
// # Guarantees
//
// The decoders never panic on any input and never modify it; every failure
// is a *DecodeError whose Code is one of the bad-input codes of
// docs/protocol.md ("10. Bad input"). They check the size and nesting
// limits (a cheap byte scan before any parsing), UTF-8, JSON validity, the
// sys code and the type of each field, and keep request ids, msg and query
// as the raw bytes received, so replies echo ids byte for byte. The
// returned Message aliases the input buffer.
//
// The encoders write "sys" first and the keys in the order of the examples
// of docs/protocol.md, never write null where the SSS client iterates
// (SYNC's result and records, BEGIN's prot), do not HTML-escape, replace
// invalid UTF-8 with U+FFFD, and write json.RawMessage values verbatim (nil
// as null); the caller must pass valid JSON as raw values.
// MarshalPayload turns an application value into such a raw value (compact
// JSON in valid UTF-8), or refuses it with an error wrapping
// ErrInvalidPayload; AppendPresence repairs what it is given instead, as
// presence info may come from another instance.
//
// # Concurrency
//
// Every function is pure and safe for concurrent use; a Message or Error is
// a plain value that the caller owns.
package protocol
