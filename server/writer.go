package server

import (
	"encoding/binary"
	"sync"
	"time"

	"github.com/gorilla/websocket"
	"github.com/sss-go/sss/protocol"
)

// Writing.
//
// Every frame a socket sends goes through its send queue (sendqueue.go).
// A socket holds no goroutine and no buffer while its queue is empty: the
// first enqueue hands the socket to the writer pool, whose goroutine
// drains everything queued, then looks for more, then returns the socket.
// Pool goroutines are shared by all sockets and end after writerIdle
// without work, so a busy server reuses them without allocating and an
// idle one has none.
//
// Without compression (the default: docs/protocol.md, "1. Transport"),
// frames are built by hand into the pool goroutine's buffer (a server
// frame is unmasked: a 2–10 byte header, then the payload) and written
// with one net.Conn.Write per batch under one write deadline, so a burst
// costs one syscall, not one per frame. Gorilla has no public API for
// that. This is safe only because every frame of such a socket, close and
// pong frames included, goes through this path: the server never calls
// gorilla's write methods on it and replaces its ping and close handlers
// (which would write). The one exception is gorilla's own close frame on
// a protocol error of the peer (e.g. a bad opcode), which it writes with a
// single Write just before the connection fails; net.Conn writes do not
// interleave, and the socket is closed right after.
//
// With Options.EnableCompression, writes go through gorilla (one
// PreparedMessage per publication, shared by every subscriber).

const (
	writerIdle    = 5 * time.Second
	flushAt       = 32 << 10  // write when the batch buffer holds this much
	maxKeptBuffer = 256 << 10 // drop larger batch buffers after use
	opText        = 0x1
	opClose       = 0x8
	opPong        = 0xA
)

// outItem is one queued frame.
type outItem struct {
	data []byte    // payload
	pf   *pubFrame // shared publication frame, or nil
	op   byte      // opText or opClose
}

// writerPool runs the writing of sockets with queued frames.
type writerPool struct {
	work     chan *Socket
	quit     chan struct{}
	quitOnce sync.Once
	wg       sync.WaitGroup
}

func newWriterPool() *writerPool {
	return &writerPool{work: make(chan *Socket), quit: make(chan struct{})}
}

// stop makes idle pool goroutines end and returns a channel closed when
// all have.
func (p *writerPool) stop() <-chan struct{} {
	p.quitOnce.Do(func() { close(p.quit) })
	done := make(chan struct{})
	go func() {
		p.wg.Wait()
		close(done)
	}()
	return done
}

// start hands s to an idle pool goroutine or starts one. The caller holds
// s.mu and has set s.writing.
func (p *writerPool) start(s *Socket) {
	select {
	case p.work <- s:
	default:
		p.wg.Add(1)
		go p.run(s)
	}
}

// run writes s, then any socket handed over, until idle for writerIdle.
func (p *writerPool) run(s *Socket) {
	defer p.wg.Done()
	buf := make([]byte, 0, 4<<10)
	t := time.NewTimer(writerIdle)
	defer t.Stop()
	for {
		buf = s.writeAll(buf)
		if cap(buf) > maxKeptBuffer {
			buf = nil
		}
		t.Reset(writerIdle)
		select {
		case s = <-p.work:
		case <-t.C:
			return
		case <-p.quit:
			return
		}
	}
}

// appendFrameHeader appends an unmasked, final frame header.
func appendFrameHeader(b []byte, op byte, n int) []byte {
	b = append(b, 0x80|op)
	switch {
	case n < 126:
		b = append(b, byte(n))
	case n <= 0xFFFF:
		b = append(b, 126, byte(n>>8), byte(n))
	default:
		b = append(b, 127)
		b = binary.BigEndian.AppendUint64(b, uint64(n))
	}
	return b
}

// closePayload returns a close frame's payload; code 0 (or one that must
// not be sent, such as 1005) yields an empty payload.
func closePayload(code int, reason string) []byte {
	if code == 0 || code == websocket.CloseNoStatusReceived || code == websocket.CloseAbnormalClosure ||
		code == websocket.CloseTLSHandshake {
		return []byte{}
	}
	reason = protocol.TruncateReason(reason)
	b := make([]byte, 2, 2+len(reason))
	binary.BigEndian.PutUint16(b, uint16(code))
	return append(b, reason...)
}

var heartbeatFrame = []byte(protocol.Heartbeat)

// writeAll drains s's queue until it is empty, using buf as the batch
// buffer, and returns buf for reuse.
func (s *Socket) writeAll(buf []byte) []byte {
	for {
		s.mu.Lock()
		if s.dead || (len(s.q) == 0 && !s.hbDue && s.pong == nil) {
			s.writing = false
			// An idle socket keeps only small queue slices; large ones go
			// back to the server's free list.
			if cap(s.spare) > keptQueue {
				s.srv.qfree.put(s.spare)
				s.spare = nil
			}
			if len(s.q) == 0 && cap(s.q) > keptQueue {
				s.srv.qfree.put(s.q)
				s.q = nil
			}
			s.mu.Unlock()
			return buf
		}
		items := s.q
		s.q = s.spare[:0]
		s.spare = nil
		s.qBytes = 0
		hb := s.hbDue
		s.hbDue = false
		pong := s.pong
		s.pong = nil
		s.mu.Unlock()

		var closed bool
		var err error
		buf, closed, err = s.writeBatch(buf[:0], hb, pong, items)
		s.mu.Lock()
		if s.spare == nil && cap(items) <= keptQueue {
			clear(items)
			s.spare = items[:0]
		} else {
			s.srv.qfree.put(items)
		}
		s.mu.Unlock()
		if err != nil || closed {
			if err != nil {
				s.srv.log.Debug("sss: write failed", "socket", s.id, "err", err)
			}
			s.mu.Lock()
			s.dead = true
			s.closing = true
			s.q = nil
			s.spare = nil
			s.qBytes = 0
			s.writing = false
			s.mu.Unlock()
			s.closeConn()
			return buf
		}
	}
}

// writeBatch writes a heartbeat (first), a pong and the items. It reports
// whether a close frame was written.
func (s *Socket) writeBatch(buf []byte, hb bool, pong []byte, items []outItem) ([]byte, bool, error) {
	deadline := time.Now().Add(s.srv.opts.WriteTimeout)
	if s.compress {
		closed, err := s.writeGorilla(deadline, hb, pong, items)
		return buf, closed, err
	}
	nc := s.nc
	if err := nc.SetWriteDeadline(deadline); err != nil {
		return buf, false, err
	}
	if hb {
		buf = appendFrameHeader(buf, opText, len(heartbeatFrame))
		buf = append(buf, heartbeatFrame...)
	}
	if pong != nil {
		buf = appendFrameHeader(buf, opPong, len(pong))
		buf = append(buf, pong...)
	}
	closed := false
	for i := range items {
		it := &items[i]
		data := it.data
		if it.pf != nil {
			data = it.pf.data
		}
		buf = appendFrameHeader(buf, it.op, len(data))
		buf = append(buf, data...)
		if it.op == opClose {
			closed = true
			break
		}
		if len(buf) >= flushAt {
			if _, err := nc.Write(buf); err != nil {
				return buf, false, err
			}
			buf = buf[:0]
		}
	}
	if len(buf) > 0 {
		if _, err := nc.Write(buf); err != nil {
			return buf, false, err
		}
	}
	return buf, closed, nil
}

// writeGorilla writes through gorilla's API (compression on).
func (s *Socket) writeGorilla(deadline time.Time, hb bool, pong []byte, items []outItem) (bool, error) {
	ws := s.ws
	if err := ws.SetWriteDeadline(deadline); err != nil {
		return false, err
	}
	if hb {
		if err := ws.WriteMessage(websocket.TextMessage, heartbeatFrame); err != nil {
			return false, err
		}
	}
	if pong != nil {
		if err := ws.WriteControl(websocket.PongMessage, pong, deadline); err != nil {
			return false, err
		}
	}
	for i := range items {
		it := &items[i]
		var err error
		switch {
		case it.op == opClose:
			err = ws.WriteControl(websocket.CloseMessage, it.data, deadline)
			return true, err
		case it.pf != nil:
			err = ws.WritePreparedMessage(it.pf.prepared())
		default:
			err = ws.WriteMessage(websocket.TextMessage, it.data)
		}
		if err != nil {
			return false, err
		}
	}
	return false, nil
}
