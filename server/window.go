package server

import (
	"github.com/sss-go/sss/protocol"
)

// window keeps the newest publications of a live channel for recovery.
type window struct {
	buf   []*pubFrame
	start int
	n     int
}

func (w *window) init(size int) {
	if size > 0 {
		w.buf = make([]*pubFrame, size)
	}
}

func (w *window) reset() {
	clear(w.buf)
	w.start, w.n = 0, 0
}

func (w *window) push(pf *pubFrame) {
	if len(w.buf) == 0 {
		return
	}
	if w.n < len(w.buf) {
		w.buf[(w.start+w.n)%len(w.buf)] = pf
		w.n++
		return
	}
	w.buf[w.start] = pf
	w.start = (w.start + 1) % len(w.buf)
}

// since returns the kept publications after `after`, up to the newest, and
// whether the window covers every one of them.
func (w *window) since(after protocol.UID) ([]*pubFrame, bool) {
	if w.n == 0 {
		return nil, false
	}
	first := w.buf[w.start]
	if first.uid.Epoch != after.Epoch || after.Seq+1 < first.uid.Seq {
		return nil, false
	}
	var out []*pubFrame
	for i := 0; i < w.n; i++ {
		pf := w.buf[(w.start+i)%len(w.buf)]
		if pf.uid.Seq > after.Seq {
			out = append(out, pf)
		}
	}
	return out, true
}
