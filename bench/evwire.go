package bench

import (
	"encoding/binary"
	"errors"
	"syscall"

	"github.com/gobwas/ws"
)

// The wire logic of the event-loop engine (evloop_linux.go), kept free of
// system calls so that it is tested on its own and on every platform: frames
// are parsed out of whatever one read returned (a partial frame is carried
// over to the next read), writes that the socket does not take wait in an
// outbox, and the open-loop schedule is pulled one call at a time.

var (
	errMessageTooLarge = errors.New("message too large")
	errControlTooLong  = errors.New("control frame too long")
	errOutboxFull      = errors.New("send buffer full")
)

// frameHeader is one parsed WebSocket frame header.
type frameHeader struct {
	fin    bool
	op     ws.OpCode
	masked bool
	mask   [4]byte
	length int64
	size   int // bytes the header took
}

// parseFrameHeader parses the header at the start of b. ok is false when b
// does not hold the whole header yet.
func parseFrameHeader(b []byte) (h frameHeader, ok bool, err error) {
	if len(b) < 2 {
		return h, false, nil
	}
	h.fin = b[0]&0x80 != 0
	h.op = ws.OpCode(b[0] & 0x0f)
	h.masked = b[1]&0x80 != 0
	n := 2
	switch l := b[1] & 0x7f; l {
	case 126:
		if len(b) < 4 {
			return h, false, nil
		}
		h.length = int64(binary.BigEndian.Uint16(b[2:]))
		n = 4
	case 127:
		if len(b) < 10 {
			return h, false, nil
		}
		u := binary.BigEndian.Uint64(b[2:])
		if u > maxReadMessage {
			return h, false, errMessageTooLarge
		}
		h.length = int64(u)
		n = 10
	default:
		h.length = int64(l)
	}
	if h.masked {
		if len(b) < n+4 {
			return h, false, nil
		}
		copy(h.mask[:], b[n:n+4])
		n += 4
	}
	h.size = n
	return h, true, nil
}

// inboxChunk is how much room a read into a connection's own buffer gets
// beyond the frame in progress.
const inboxChunk = 4096

// inbox turns a connection's byte stream into messages. Reads land in a
// buffer shared by the whole loop when nothing is carried over, so an idle
// connection, or one whose answers arrive whole, holds no read buffer of
// its own; only a partial frame is copied into the connection's buf.
type inbox struct {
	buf []byte    // carried-over bytes: the start of a frame not yet complete
	msg []byte    // fragments of a message being assembled
	op  ws.OpCode // opcode of that message
}

// space returns where the next read should land: shared when nothing is
// carried over, else the spare room of buf, grown to hold at least the
// whole frame in progress.
func (x *inbox) space(shared []byte) []byte {
	if len(x.buf) == 0 {
		return shared
	}
	need := len(x.buf) + inboxChunk
	if h, ok, _ := parseFrameHeader(x.buf); ok {
		need = max(need, h.size+int(h.length))
	}
	if cap(x.buf) < need {
		nb := make([]byte, len(x.buf), need)
		copy(nb, x.buf)
		x.buf = nb
	}
	return x.buf[len(x.buf):cap(x.buf)]
}

// feed handles the n bytes that a read put into the slice space returned:
// every whole frame is parsed and a partial one is carried over. fn gets each
// complete data message (text or binary; the payload is valid during the
// call) and each control frame (ping, pong, close).
func (x *inbox) feed(shared []byte, n int, fn func(op ws.OpCode, p []byte) error) error {
	var b []byte
	carried := len(x.buf) > 0
	if carried {
		b = x.buf[:len(x.buf)+n]
	} else {
		b = shared[:n]
	}
	used, err := x.frames(b, fn)
	if err != nil {
		return err
	}
	rest := b[used:]
	switch {
	case len(rest) == 0:
		x.buf = x.buf[:0]
	case carried:
		x.buf = x.buf[:copy(x.buf[:cap(x.buf)], rest)]
	default:
		x.buf = append(x.buf[:0], rest...)
	}
	return nil
}

// frames consumes the whole frames at the start of b and returns how many
// bytes they took. The checks are those of wsConn.readMessage.
func (x *inbox) frames(b []byte, fn func(op ws.OpCode, p []byte) error) (int, error) {
	used := 0
	for {
		h, ok, err := parseFrameHeader(b[used:])
		if err != nil {
			return used, err
		}
		if !ok {
			return used, nil
		}
		if h.length > maxReadMessage || int64(len(x.msg))+h.length > maxReadMessage {
			return used, errMessageTooLarge
		}
		if h.op.IsControl() && h.length > 125 {
			return used, errControlTooLong
		}
		end := used + h.size + int(h.length)
		if end > len(b) {
			return used, nil
		}
		p := b[used+h.size : end]
		used = end
		if h.masked {
			ws.Cipher(p, h.mask, 0)
		}
		switch {
		case h.op.IsControl():
			err = fn(h.op, p)
		case h.fin && len(x.msg) == 0 && h.op != ws.OpContinuation:
			err = fn(h.op, p) // the common case: a whole message in one frame, not copied
		default:
			if h.op != ws.OpContinuation {
				x.op = h.op
			}
			x.msg = append(x.msg, p...)
			if h.fin {
				err = fn(x.op, x.msg)
				x.msg = x.msg[:0]
			}
		}
		if err != nil {
			return used, err
		}
	}
}

// maxOutbox bounds what one connection queues while its socket is full: a
// server that stops reading must not make the generator grow without end.
// Beyond it a call is not sent and counts as "call/send buffer full".
const maxOutbox = 16 << 20

// outbox holds the bytes that a non-blocking socket would not take yet.
// While it is not empty, new frames queue behind it so that frames go out
// whole and in order; the loop then waits for EPOLLOUT and flushes.
type outbox struct {
	buf []byte
	off int
}

func (o *outbox) queued() int { return len(o.buf) - o.off }

// write sends p, or queues it behind what is already waiting. It reports
// whether bytes remain queued (the caller then watches for writability).
// EAGAIN is not an error; any other error from w is returned.
func (o *outbox) write(p []byte, w func([]byte) (int, error)) (pending bool, err error) {
	if o.queued() > 0 {
		if o.queued()+len(p) > maxOutbox {
			return true, errOutboxFull
		}
		o.buf = append(o.buf, p...)
		return o.flush(w)
	}
	n, err := writeSome(p, w)
	if n < len(p) && err == nil {
		o.buf = append(o.buf[:0], p[n:]...)
		o.off = 0
		return true, nil
	}
	return false, err
}

// flush writes what is queued until the socket is full or the queue empty.
func (o *outbox) flush(w func([]byte) (int, error)) (pending bool, err error) {
	n, err := writeSome(o.buf[o.off:], w)
	o.off += n
	if o.off == len(o.buf) {
		o.buf, o.off = o.buf[:0], 0
		if cap(o.buf) > 1<<20 {
			o.buf = nil // a burst is over: give a large queue back
		}
		return false, err
	}
	if o.off > len(o.buf)/2 {
		o.buf = o.buf[:copy(o.buf, o.buf[o.off:])]
		o.off = 0
	}
	return err == nil, err
}

// writeSome writes p until done, EAGAIN (no error) or another error.
func writeSome(p []byte, w func([]byte) (int, error)) (int, error) {
	done := 0
	for done < len(p) {
		n, err := w(p[done:])
		if n > 0 {
			done += n
		}
		switch {
		case err == syscall.EINTR:
		case err == syscall.EAGAIN:
			return done, nil
		case err != nil:
			return done, err
		case n <= 0:
			return done, nil
		}
	}
	return done, nil
}

// pacer yields the calls of schedule one at a time, so that an event loop
// can ask for the next due instant instead of sleeping in a callback.
type pacer struct {
	idx        []int // global indices of the loop's connections, ascending
	conns      int
	rate       float64
	start, end int64
	j          int64 // round
	pos        int   // position in idx
	at         int64 // due time of the current call
	done       bool
}

func newPacer(idx []int, conns int, rate float64, start, end int64) *pacer {
	p := &pacer{idx: idx, conns: conns, rate: rate, start: start, end: end}
	p.done = len(idx) == 0 || rate <= 0
	p.settle()
	return p
}

// settle computes the current call's due time and ends the schedule at end.
func (p *pacer) settle() {
	if p.done {
		return
	}
	p.at = p.start + intendedOffset(int64(p.idx[p.pos])+p.j*int64(p.conns), p.rate)
	p.done = p.at >= p.end
}

// next moves to the following call.
func (p *pacer) next() {
	if p.done {
		return
	}
	if p.pos++; p.pos == len(p.idx) {
		p.pos = 0
		p.j++
	}
	p.settle()
}

// Loop timing. The loop blocks until the next due call, the next sweep or
// maxLoopWait, whichever comes first; the wait is in nanoseconds
// (epoll_pwait2), not epoll_wait's milliseconds, which would add up to a
// millisecond of lateness to every call.
const (
	maxLoopWait = int64(50 * 1e6)  // see a stop or a command soon
	sweepEvery  = int64(100 * 1e6) // per-call timeout resolution, as the goroutine engine's sweep
)

// loopWait is how long the loop may block at now: 0 when a deadline has
// passed, never more than maxLoopWait.
func loopWait(now int64, deadlines ...int64) int64 {
	w := maxLoopWait
	for _, d := range deadlines {
		w = min(w, d-now)
	}
	return max(w, 0)
}

// splitWait turns a wait in ns into epoll_wait's whole milliseconds and the
// remainder to sleep precisely first; the fallback when the kernel has no
// epoll_pwait2 (before 5.11).
func splitWait(ns int64) (ms int, sleep int64) {
	if ns < 1e6 {
		return 0, ns
	}
	return int(ns / 1e6), 0
}
