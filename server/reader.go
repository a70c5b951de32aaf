package server

import (
	"io"
	"time"

	"github.com/gorilla/websocket"
	"github.com/sss-go/sss/protocol"
)

// Reading and handling.
//
// A socket's reader goroutine only reads: it answers heartbeats ("h")
// itself and hands every other frame to the socket's inbox, whose handler
// goroutine handles the frames one at a time, in the order they came. So
// a frame that is slow to handle (a SYNC reading history, a subscription
// parser, a backend that does not answer) never keeps the reader from
// seeing heartbeat answers (the socket is not closed with 4003 for our own
// slowness) or the client's close frame or a broken connection (which
// cancel the socket's backend calls at once). The handler goroutine runs
// only while frames wait, so an idle socket holds none. The inbox is
// bounded; when it is full the reader waits, and the heartbeat check gives
// the client one more interval for answers that wait unread behind it.
// Closes that the reader decides (binary or oversize frames, the client's
// close frame) go through the inbox too, so replies to earlier frames
// still go out before the close frame.

// Inbox bounds: a client may pipeline this many frames (or bytes) behind
// a slow one before the reader waits.
const (
	maxInbox      = 64
	maxInboxBytes = 256 << 10
)

// inItem is one frame to handle, or a close to make in frame order.
type inItem struct {
	data   []byte
	code   int // != 0: close the socket with code and reason
	reason string
}

// readLoop is the socket's reader goroutine.
func (s *Socket) readLoop() {
	defer s.srv.work.done()
	for {
		mt, r, err := s.ws.NextReader()
		if err != nil {
			break
		}
		if mt == websocket.BinaryMessage {
			_, _ = io.Copy(io.Discard, io.LimitReader(r, int64(s.srv.opts.MaxFrameBytes)))
			s.push(inItem{code: protocol.CloseUnsupportedData, reason: "binary frames are not supported"})
			continue
		}
		data, tooBig, err := readLimited(r, s.srv.opts.MaxFrameBytes)
		if err != nil {
			break
		}
		if tooBig {
			s.push(inItem{code: protocol.CloseTooLarge, reason: "frame too large"})
			continue
		}
		if len(data) == 1 && data[0] == 'h' {
			s.hbOutstanding.Store(false)
			continue
		}
		s.push(inItem{data: data})
	}
	// The connection is gone or closing: what the handler still does for
	// it needs no backend answer.
	s.bcancel()
	s.imu.Lock()
	for s.handling {
		s.icond.Wait()
	}
	s.imu.Unlock()
	s.finish()
}

// push adds an item to the inbox and makes sure a handler goroutine runs.
// A frame waits for room; a close never does.
func (s *Socket) push(it inItem) {
	s.imu.Lock()
	if it.code == 0 {
		for len(s.inbox) > 0 && (len(s.inbox) >= maxInbox || s.inBytes+len(it.data) > maxInboxBytes) {
			s.readWait.Store(true)
			s.hbGrace.Store(true)
			s.icond.Wait()
		}
		s.readWait.Store(false)
	}
	s.inbox = append(s.inbox, it)
	s.inBytes += len(it.data)
	if !s.handling {
		s.handling = true
		s.srv.work.add(true)
		go s.handleLoop()
	}
	s.imu.Unlock()
}

// handleLoop handles the inbox until it is empty (handler goroutine).
func (s *Socket) handleLoop() {
	defer s.srv.work.done()
	for {
		s.imu.Lock()
		if len(s.inbox) == 0 {
			s.inbox = nil
			s.handling = false
			s.icond.Broadcast()
			s.imu.Unlock()
			return
		}
		it := s.inbox[0]
		s.inbox[0] = inItem{}
		s.inbox = s.inbox[1:]
		s.inBytes -= len(it.data)
		s.icond.Broadcast()
		s.imu.Unlock()
		switch {
		case it.code != 0:
			s.Close(it.code, it.reason)
		case s.isClosing():
			// The server is closing the socket: later frames are not
			// handled.
		default:
			s.handle(it.data)
		}
	}
}

// readLimited reads a whole message of at most max bytes.
func readLimited(r io.Reader, max int) (data []byte, tooBig bool, err error) {
	data = make([]byte, 0, 256)
	for {
		if len(data) == cap(data) {
			if len(data) > max {
				return nil, true, nil
			}
			data = append(data, 0)[:len(data)]
		}
		n, err := r.Read(data[len(data):cap(data)])
		data = data[:len(data)+n]
		if len(data) > max {
			return nil, true, nil
		}
		if err == io.EOF {
			return data, false, nil
		}
		if err != nil {
			return nil, false, err
		}
	}
}

// finish runs once the reader and the handler are done: the socket leaves
// everything.
func (s *Socket) finish() {
	s.mu.Lock()
	wasClosing := s.closing
	if !s.closing {
		// The connection broke without a close frame.
		s.closing = true
		s.closeCode = websocket.CloseAbnormalClosure
		s.closeReason = ""
	}
	sentCode, sentReason := s.closeCode, s.closeReason
	if s.bootTimer != nil {
		s.bootTimer.Stop()
	}
	s.mu.Unlock()
	if wasClosing {
		// Let the writer send the close frame; it closes the connection.
		t := time.NewTimer(s.srv.opts.WriteTimeout)
		select {
		case <-s.connGone:
		case <-t.C:
		}
		t.Stop()
	}
	s.closeConn()
	s.cancel()
	s.srv.removeSocket(s)
	if s.srv.opts.OnClose != nil {
		s.srv.hook("OnClose", s, func() { s.srv.opts.OnClose(s, sentCode, sentReason) })
	}
}
