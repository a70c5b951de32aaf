package mongoredis

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	"go.mongodb.org/mongo-driver/v2/bson"

	"github.com/sss-go/sss/internal/backoff"
	"github.com/sss-go/sss/protocol"
	"github.com/sss-go/sss/scaler"
)

// Relay: every publication, once stored, is PUBLISHed on the Redis channel
// <prefix>:c:<channel> carrying the whole publication, so no instance reads
// MongoDB per delivered message. One pub/sub connection per instance holds
// the channels it serves plus <prefix>:ctl (control plane) and
// <prefix>:probe:<id> (its own probe). SUBSCRIBE and UNSUBSCRIBE are
// batched by one goroutine.

const relayTimeout = time.Second

func (s *Scaler) relayName(ch string) string { return s.relayPrefix + ch }

// encodeRelay encodes a publication for the relay: a version byte (2),
// the document's 12-byte _id (which tells two publications that claim
// the same uid apart: see stream.go), then uvarint-length-prefixed epoch,
// uvarint seq, varint unix milliseconds, uvarint-length-prefixed topic,
// and the JSON message as the rest. Version 1 is the same without the
// _id.
func encodeRelay(d *pubDoc) []byte {
	b := make([]byte, 0, 36+len(d.Epoch)+len(d.Topic)+len(d.Msg))
	b = append(b, 2)
	b = append(b, d.ID[:]...)
	b = binary.AppendUvarint(b, uint64(len(d.Epoch)))
	b = append(b, d.Epoch...)
	b = binary.AppendUvarint(b, uint64(d.Seq))
	b = binary.AppendVarint(b, d.Time.UnixMilli())
	b = binary.AppendUvarint(b, uint64(len(d.Topic)))
	b = append(b, d.Topic...)
	return append(b, d.Msg...)
}

// decodeRelay is the inverse of encodeRelay; it never panics. The _id is
// zero in a version 1 message.
func decodeRelay(ch string, b []byte) (scaler.Publication, bson.ObjectID, error) {
	var id bson.ObjectID
	bad := func(what string) (scaler.Publication, bson.ObjectID, error) {
		return scaler.Publication{}, id, fmt.Errorf("%w: relay message on %q: %s", ErrMalformed, ch, what)
	}
	switch {
	case len(b) >= 1 && b[0] == 1:
		b = b[1:]
	case len(b) >= 1+len(id) && b[0] == 2:
		copy(id[:], b[1:])
		b = b[1+len(id):]
	default:
		return bad("unknown version")
	}
	str := func() (string, bool) {
		n, k := binary.Uvarint(b)
		if k <= 0 || n > uint64(len(b)-k) {
			return "", false
		}
		v := string(b[k : k+int(n)])
		b = b[k+int(n):]
		return v, true
	}
	ep, ok := str()
	if !ok || !protocol.ValidEpoch(ep) {
		return bad("epoch")
	}
	seq, k := binary.Uvarint(b)
	if k <= 0 || seq == 0 {
		return bad("seq")
	}
	b = b[k:]
	ms, k := binary.Varint(b)
	if k <= 0 {
		return bad("time")
	}
	b = b[k:]
	topic, ok := str()
	if !ok {
		return bad("topic")
	}
	msg := json.RawMessage(b)
	if len(msg) == 0 {
		msg = json.RawMessage("null")
	}
	return scaler.Publication{
		Channel: ch,
		UID:     protocol.UID{Epoch: ep, Seq: seq},
		Topic:   topic,
		Msg:     msg,
		Time:    time.UnixMilli(ms),
	}, id, nil
}

// relayPubs publishes stored publications of ch, in order, and raises
// the channel's seq hint (writer_lock.go) to the last of them. A
// failure is reported, not returned: the publications are durable and
// every subscriber fills them from the log.
func (s *Scaler) relayPubs(ch string, docs []*pubDoc) {
	ctx, cancel := context.WithTimeout(s.ctx, relayTimeout)
	defer cancel()
	name := s.relayName(ch)
	pipe := s.rdb.Pipeline()
	top := docs[0]
	for _, d := range docs {
		pipe.Publish(ctx, name, encodeRelay(d))
		if d.Epoch == top.Epoch && d.Seq > top.Seq {
			top = d
		}
	}
	raiseHint.Eval(ctx, pipe, []string{s.hintKey(ch)}, top.Epoch, top.Seq, hintTTL.Milliseconds())
	_, err := pipe.Exec(ctx)
	if err != nil && s.ctx.Err() == nil {
		s.event(scaler.EventBackendError, ch, len(docs), fmt.Errorf("sss/mongoredis: relay %q: %w", ch, err))
	}
}

// newPubSub replaces the pub/sub connection: the new one subscribes to
// everything the instance serves.
func (s *Scaler) newPubSub() {
	ps := s.rdb.Subscribe(s.ctx)
	s.psMu.Lock()
	old := s.ps
	s.ps = ps
	s.psMu.Unlock()
	if old != nil {
		_ = old.Close()
	}
	s.relayMu.Lock()
	names := []string{s.ctlName, s.probeName}
	for name := range s.sent {
		names = append(names, name)
	}
	clear(s.live)
	s.relayMu.Unlock()
	ctx, cancel := context.WithTimeout(s.ctx, relayTimeout)
	defer cancel()
	// On failure the channels stay registered: go-redis subscribes them
	// when the receive loop reconnects.
	_ = ps.Subscribe(ctx, names...)
}

func (s *Scaler) currentPS() *redis.PubSub {
	s.psMu.Lock()
	defer s.psMu.Unlock()
	return s.ps
}

// relaySubscribe makes the instance live on ch's relay channel: it returns
// once Redis confirmed the subscription.
func (s *Scaler) relaySubscribe(ctx context.Context, ch string) error {
	return s.waitLive(ctx, s.relayName(ch))
}

func (s *Scaler) waitLive(ctx context.Context, name string) error {
	s.relayMu.Lock()
	s.want[name] = true
	if s.sent[name] && s.live[name] {
		s.relayMu.Unlock()
		return nil
	}
	w := make(chan struct{})
	s.waiters[name] = append(s.waiters[name], w)
	s.relayMu.Unlock()
	s.signalSubs()
	select {
	case <-w:
		return nil
	case <-ctx.Done():
		s.dropWaiter(name, w)
		return unavailable("subscribe relay", ctx.Err())
	case <-s.ctx.Done():
		s.dropWaiter(name, w)
		return scaler.ErrClosed
	}
}

func (s *Scaler) dropWaiter(name string, w chan struct{}) {
	s.relayMu.Lock()
	defer s.relayMu.Unlock()
	ws := s.waiters[name]
	for i, x := range ws {
		if x == w {
			s.waiters[name] = append(ws[:i:i], ws[i+1:]...)
			break
		}
	}
	if len(s.waiters[name]) == 0 {
		delete(s.waiters, name)
	}
}

func (s *Scaler) relayUnsubscribe(ch string) {
	s.relayMu.Lock()
	delete(s.want, s.relayName(ch))
	s.relayMu.Unlock()
	s.signalSubs()
}

func (s *Scaler) signalSubs() {
	select {
	case s.subSignal <- struct{}{}:
	default:
	}
}

// confirm records Redis' confirmation of a subscription.
func (s *Scaler) confirm(name string) {
	s.relayMu.Lock()
	defer s.relayMu.Unlock()
	if !s.sent[name] {
		return
	}
	s.live[name] = true
	for _, w := range s.waiters[name] {
		close(w)
	}
	delete(s.waiters, name)
}

// subLoop sends batched SUBSCRIBE/UNSUBSCRIBE commands.
func (s *Scaler) subLoop() {
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-s.subSignal:
		}
		s.relayMu.Lock()
		var subs, unsubs []string
		for name := range s.want {
			if !s.sent[name] {
				s.sent[name] = true
				s.live[name] = false
				subs = append(subs, name)
			}
		}
		for name := range s.sent {
			if !s.want[name] {
				delete(s.sent, name)
				delete(s.live, name)
				unsubs = append(unsubs, name)
			}
		}
		s.relayMu.Unlock()
		ps := s.currentPS()
		ctx, cancel := context.WithTimeout(s.ctx, relayTimeout)
		if len(subs) > 0 {
			_ = ps.Subscribe(ctx, subs...) // retried by go-redis on reconnect
		}
		if len(unsubs) > 0 {
			_ = ps.Unsubscribe(ctx, unsubs...)
		}
		cancel()
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// receiveLoop reads the pub/sub connection. go-redis reconnects and
// resubscribes silently; a receive error tells this loop that it happened,
// and the first message after it makes every served channel be checked
// against the log.
func (s *Scaler) receiveLoop() {
	disconnected, fails := false, 0
	for s.ctx.Err() == nil {
		ps := s.currentPS()
		msg, err := ps.ReceiveTimeout(s.ctx, time.Second)
		if err != nil {
			if s.ctx.Err() != nil {
				return
			}
			if ps != s.currentPS() {
				continue // replaced after a failed probe
			}
			if isTimeout(err) && !disconnected {
				continue
			}
			if !disconnected {
				disconnected = true
				s.connected.Store(false)
				s.relayMu.Lock()
				clear(s.live)
				s.relayMu.Unlock()
				s.log.Warn("sss/mongoredis: relay disconnected", "err", err)
				s.event(scaler.EventRelayDisconnected, "", 0, err)
			}
			fails++
			backoff.Sleep(s.ctx, retryWait(fails))
			continue
		}
		fails = 0
		if recheck := s.needCheck.Swap(false); disconnected || recheck {
			disconnected = false
			s.connected.Store(true)
			s.log.Info("sss/mongoredis: relay reconnected")
			s.event(scaler.EventRelayReconnected, "", 0, nil)
			s.checkAll()
		} else if !s.connected.Load() {
			s.connected.Store(true)
		}
		switch m := msg.(type) {
		case *redis.Subscription:
			if m.Kind == "subscribe" {
				s.confirm(m.Channel)
			}
		case *redis.Message:
			s.dispatch(m.Channel, m.Payload)
		}
	}
}

// dispatch routes one pub/sub message.
func (s *Scaler) dispatch(name, payload string) {
	switch {
	case name == s.probeName:
		if n, err := strconv.ParseInt(payload, 10, 64); err == nil {
			s.probeSeen.Store(n)
		}
	case name == s.ctlName:
		s.onControl(payload)
	case strings.HasPrefix(name, s.relayPrefix):
		ch := name[len(s.relayPrefix):]
		p, id, err := decodeRelay(ch, []byte(payload))
		if err != nil {
			s.log.Warn("sss/mongoredis: bad relay message", "channel", ch, "err", err)
			return
		}
		if s.faultRelay(ch, p, id) {
			return
		}
		s.onRelay(p, id)
	}
}

// onRelay hands a relayed publication (stored as document id) to the
// channel's stream.
func (s *Scaler) onRelay(p scaler.Publication, id bson.ObjectID) {
	s.writersMu.Lock()
	w := s.writers[p.Channel]
	s.writersMu.Unlock()
	if w != nil {
		w.observe(p.UID.Epoch, p.UID.Seq)
	}
	if st := s.stream(p.Channel); st != nil {
		st.push(item{kind: itemPub, pub: p, id: id})
	}
}

// probeLoop sends the instance a probe over the relay every ProbeInterval;
// one that does not come back within ProbeTimeout replaces the pub/sub
// connection (catches a connection stuck open but silent).
func (s *Scaler) probeLoop() {
	t := time.NewTicker(s.opts.ProbeInterval)
	defer t.Stop()
	var pending int64
	var pendingAt time.Time
	for {
		if pending != 0 && s.probeSeen.Load() >= pending {
			pending = 0
			s.probeOK.Store(time.Now().UnixNano())
		}
		switch {
		case pending == 0:
			pending = s.probeSent.Add(1)
			pendingAt = time.Now()
			ctx, cancel := context.WithTimeout(s.ctx, relayTimeout)
			_ = s.rdb.Publish(ctx, s.probeName, strconv.FormatInt(pending, 10)).Err()
			cancel()
		case time.Since(pendingAt) > s.opts.ProbeTimeout:
			pending = 0
			err := fmt.Errorf("sss/mongoredis: relay probe not back after %v", s.opts.ProbeTimeout)
			s.log.Warn("sss/mongoredis: relay probe failed", "err", err)
			s.event(scaler.EventProbeFailed, "", 0, err)
			if s.connected.Load() {
				s.needCheck.Store(true)
				s.newPubSub()
			}
		}
		select {
		case <-s.ctx.Done():
			return
		case <-t.C:
		}
	}
}

// envelope is a message of the control channel.
type envelope struct {
	Ctl *scaler.Control `json:"c,omitempty"`
	// Reset names a channel whose history was reset to Epoch.
	Reset string `json:"reset,omitempty"`
	Epoch string `json:"ep,omitempty"`
}

func (s *Scaler) sendEnvelope(ctx context.Context, e envelope) error {
	b, err := json.Marshal(e)
	if err != nil {
		return fmt.Errorf("sss/mongoredis: control: %w", err)
	}
	if err := s.rdb.Publish(ctx, s.ctlName, b).Err(); err != nil {
		return unavailable("control", err)
	}
	return nil
}

func (s *Scaler) onControl(payload string) {
	var e envelope
	if err := json.Unmarshal([]byte(payload), &e); err != nil {
		s.log.Warn("sss/mongoredis: bad control message", "err", err)
		return
	}
	if e.Reset != "" {
		s.writersMu.Lock()
		w := s.writers[e.Reset]
		s.writersMu.Unlock()
		if w != nil {
			w.invalidate()
		}
		if st := s.stream(e.Reset); st != nil {
			st.push(item{kind: itemCheck})
		}
	}
	if e.Ctl != nil && s.handler().Control != nil {
		s.handler().Control(*e.Ctl)
	}
}
