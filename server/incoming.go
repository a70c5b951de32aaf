package server

import (
	"context"
	"encoding/json"
	"time"

	"github.com/sss-go/sss/protocol"
	"github.com/sss-go/sss/scaler"
)

// What the scaler hands the server besides publications: control
// messages (broadcasts, tells, boots, presence events) for this
// instance's sockets, and streams it could not continue.

// onControl handles the control plane (scaler goroutine; must not block).
func (s *Server) onControl(c scaler.Control) {
	switch c.Kind {
	case scaler.ControlBroadcast:
		s.sendAll(s.socketsOf(nil, ""), protocol.AppendBroadcast(nil, c.Topic, orNull(c.Msg)))
	case scaler.ControlTellSocket:
		s.sendAll(s.socketByID(c.Target), protocol.AppendTell(nil, c.Topic, orNull(c.Msg)))
	case scaler.ControlTellSession:
		s.sendAll(s.socketsOf(s.bySession, c.Target), protocol.AppendTell(nil, c.Topic, orNull(c.Msg)))
	case scaler.ControlTellUser:
		s.sendAll(s.socketsOf(s.byUser, c.Target), protocol.AppendTell(nil, c.Topic, orNull(c.Msg)))
	case scaler.ControlBootSocket:
		s.bootAll(s.socketByID(c.Target), c.Reason)
	case scaler.ControlBootSession:
		s.bootAll(s.socketsOf(s.bySession, c.Target), c.Reason)
	case scaler.ControlBootUser:
		s.bootAll(s.socketsOf(s.byUser, c.Target), c.Reason)
	case scaler.ControlBootChannel:
		subs := s.hub.subscribers(c.Target)
		if len(subs) == 0 {
			return
		}
		frame := protocol.AppendErrorFrame(nil, protocol.NewChannelBootedError(c.Target))
		// Leaving may call the scaler: not on its goroutine.
		if !s.work.add(false) {
			return
		}
		go func() {
			defer s.work.done()
			ctx, cancel := context.WithTimeout(context.Background(), s.opts.BackendTimeout)
			defer cancel()
			for _, sock := range subs {
				s.unsubscribeSocket(ctx, sock, c.Target)
				sock.sendText(frame)
			}
		}()
	case scaler.ControlJoin, scaler.ControlLeave:
		if c.Member == nil {
			return
		}
		subs := s.hub.subscribers(c.Target)
		if len(subs) == 0 {
			return
		}
		frame := presenceFrame(c)
		for _, sock := range subs {
			if sock.id != c.Member.ID { // a socket is not told of its own join
				sock.sendText(frame)
			}
		}
	}
}

// presenceFrame encodes the _presence TELL of a join or leave
// (docs/protocol.md, "5.8 Presence events").
func presenceFrame(c scaler.Control) []byte {
	ev := protocol.PresenceEvent{Channel: c.Target, Event: protocol.PresenceJoin,
		Member: protocol.PresenceMember{User: c.Member.User, Info: c.Member.Info}}
	if c.Kind == scaler.ControlLeave {
		ev.Event = protocol.PresenceLeave
	}
	return protocol.AppendTell(nil, protocol.PresenceTopic, protocol.AppendPresence(nil, ev))
}

// orNull returns a control message's payload for a frame: null for none,
// valid UTF-8 whatever the sender sent.
func orNull(m json.RawMessage) json.RawMessage {
	if len(m) == 0 {
		return nullJSON
	}
	return validOrReplaced(m)
}

// sendAll queues one shared frame to each socket.
func (s *Server) sendAll(socks []*Socket, frame []byte) {
	for _, sock := range socks {
		sock.sendText(frame)
	}
}

// bootAll sends BOOT to each socket and closes it with 4001 after the
// grace period unless the client closed first.
func (s *Server) bootAll(socks []*Socket, reason string) {
	reason = protocol.TruncateReason(reason)
	frame := protocol.AppendBoot(nil, reason)
	for _, sock := range socks {
		sock.mu.Lock()
		if sock.enqueueLocked(outItem{data: frame, op: opText}) && sock.bootTimer == nil {
			sk := sock
			sock.bootTimer = time.AfterFunc(s.opts.BootGrace, func() {
				sk.Close(protocol.CloseBooted, reason)
			})
		}
		sock.mu.Unlock()
	}
}

// onReset handles a stream the scaler could not continue without a hole.
func (s *Server) onReset(channel string, pos protocol.UID, err error) {
	s.log.Warn("sss: channel stream reset", "channel", channel, "uid", pos.String(), "err", err)
	s.hub.reset(channel, pos)
}
