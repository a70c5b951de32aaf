package server

import (
	"sync"

	"github.com/gorilla/websocket"
	"github.com/sss-go/sss/protocol"
	"github.com/sss-go/sss/scaler"
)

// Publication frames: a publication is encoded once per instance, as the
// bytes of its FEED, shared by every subscriber's send queue and by the
// channel's recovery window.

// pubFrame is one publication encoded once: the FEED bytes shared by every
// subscriber of the instance (and kept in the channel's recovery window).
type pubFrame struct {
	channel string
	uid     protocol.UID
	data    []byte
	pmOnce  sync.Once
	pm      *websocket.PreparedMessage
}

// prepared returns the frame as a gorilla PreparedMessage, built once.
func (f *pubFrame) prepared() *websocket.PreparedMessage {
	f.pmOnce.Do(func() {
		f.pm, _ = websocket.NewPreparedMessage(websocket.TextMessage, f.data)
	})
	return f.pm
}

// newPubFrame encodes a publication's FEED.
func newPubFrame(p scaler.Publication) *pubFrame {
	msg := feedMsg(p)
	b := make([]byte, 0, len(msg)+len(p.Channel)+len(p.Topic)+len(p.UID.Epoch)+64)
	return &pubFrame{channel: p.Channel, uid: p.UID, data: protocol.AppendFeed(b, p.Channel, p.Topic, msg, p.UID)}
}

// feedMsg returns the msg of a publication's FEED: null for none, and
// valid UTF-8 whatever the backend returned (validOrReplaced), the same
// for the live and the recovered frame.
func feedMsg(p scaler.Publication) []byte {
	if p.Msg == nil {
		return nullJSON
	}
	return validOrReplaced(p.Msg)
}

// frameSlab carves a channel's publication frames and their bytes out of
// chunks, so the fan-out path allocates a fraction of an object per
// publication instead of two. Chunks start small and double (a quiet
// channel holds little), and a chunk stays alive while any frame cut from
// it is queued or in the recovery window. Used under the channel's lock.
type frameSlab struct {
	frames []pubFrame
	nextN  int
	buf    []byte
	nextB  int
}

const (
	slabMaxFrames = 64
	slabMaxBytes  = 32 << 10
	slabBigFrame  = 4 << 10 // frames larger than this get their own slice
)

func (sl *frameSlab) frame(p scaler.Publication) *pubFrame {
	if len(sl.frames) == 0 {
		sl.nextN = min(max(sl.nextN*2, 4), slabMaxFrames)
		sl.frames = make([]pubFrame, sl.nextN)
	}
	pf := &sl.frames[0]
	sl.frames = sl.frames[1:]
	msg := feedMsg(p)
	need := len(msg) + len(p.Channel) + len(p.Topic) + len(p.UID.Epoch) + 64
	var b []byte
	if need > slabBigFrame {
		b = make([]byte, 0, need)
	} else {
		if cap(sl.buf)-len(sl.buf) < need {
			sl.nextB = min(max(sl.nextB*2, 1<<10), slabMaxBytes)
			sl.buf = make([]byte, 0, max(sl.nextB, need))
		}
		b = sl.buf[len(sl.buf):len(sl.buf)]
	}
	data := protocol.AppendFeed(b, p.Channel, p.Topic, msg, p.UID)
	if need <= slabBigFrame {
		if len(data) <= cap(sl.buf)-len(sl.buf) && len(data) > 0 && &data[0] == &sl.buf[:len(sl.buf)+1][len(sl.buf)] {
			sl.buf = sl.buf[:len(sl.buf)+len(data)]
		}
	}
	pf.channel, pf.uid, pf.data = p.Channel, p.UID, data[:len(data):len(data)]
	return pf
}
