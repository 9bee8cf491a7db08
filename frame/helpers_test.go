package frame

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"

	"github.com/gobwas/ws"
)

// cf describes a client frame with every header bit under the test's control.
// The zero value of each field means the legal, usual choice.
type cf struct {
	op      ws.OpCode
	notFin  bool
	rsv     byte
	unmask  bool  // send it unmasked (illegal from a client)
	lenBits int   // 0: minimal; 7, 16 or 64: that encoding
	declare int64 // if non-zero, the declared length instead of len(payload)
	mask    [4]byte
	payload []byte
}

// testMask is used when a frame does not choose its own; non-zero so that a
// missing unmask shows.
var testMask = [4]byte{0xa1, 0x5b, 0x07, 0xee}

// bytes encodes the frame as a client would, masking a copy of the payload.
func (f cf) bytes() []byte {
	length := int64(len(f.payload))
	if f.declare != 0 {
		length = f.declare
	}
	b0 := f.rsv<<4 | byte(f.op)&0x0f
	if !f.notFin {
		b0 |= 0x80
	}
	var m byte
	if !f.unmask {
		m = 0x80
	}
	bits := f.lenBits
	if bits == 0 {
		switch {
		case length <= 125:
			bits = 7
		case length <= 0xffff:
			bits = 16
		default:
			bits = 64
		}
	}
	out := []byte{b0}
	switch bits {
	case 7:
		out = append(out, m|byte(length))
	case 16:
		out = append(out, m|126)
		out = binary.BigEndian.AppendUint16(out, uint16(length))
	case 64:
		out = append(out, m|127)
		out = binary.BigEndian.AppendUint64(out, uint64(length))
	}
	if !f.unmask {
		mask := f.mask
		if mask == ([4]byte{}) {
			mask = testMask
		}
		out = append(out, mask[:]...)
		start := len(out)
		out = append(out, f.payload...)
		ws.Cipher(out[start:], mask, 0)
		return out
	}
	return append(out, f.payload...)
}

func text(s string) cf { return cf{op: ws.OpText, payload: []byte(s)} }
func closeBody(code ws.StatusCode, reason string) []byte {
	return append(binary.BigEndian.AppendUint16(nil, uint16(code)), reason...)
}

// cat joins frames into one stream.
func cat(frames ...cf) []byte {
	var b []byte
	for _, f := range frames {
		b = append(b, f.bytes()...)
	}
	return b
}

// result is what a whole stream amounts to: the events (payloads copied out of
// the buffers they alias), the bytes consumed, and the error that ended it.
type result struct {
	events   []Event
	consumed int
	err      *CloseError
}

func copyEvent(ev Event) Event {
	if ev.Payload != nil {
		ev.Payload = bytes.Clone(ev.Payload)
	}
	if ev.CloseReason != nil {
		ev.CloseReason = bytes.Clone(ev.CloseReason)
	}
	return ev
}

// check is called after every Next with the reader; tests use it to assert
// invariants such as the buffer bound.
type check func(r *Reader, in []byte, ev Event, n int, err error)

// feed delivers stream to a fresh Reader in chunks of the given sizes (cycled;
// nil means all at once), the way the reactor does: it appends each chunk to
// what is still buffered, calls Next until it needs more, and drops what was
// consumed. The stream is copied first, since Next unmasks in place.
func feed(t testing.TB, stream []byte, chunks []int, limit int64, each check) result {
	t.Helper()
	var (
		rd    Reader
		res   result
		buf   []byte // buf[start:] is still buffered
		start int
		pos   int
	)
	for i := 0; pos < len(stream); i++ {
		size := len(stream) - pos
		if len(chunks) > 0 {
			size = min(max(chunks[i%len(chunks)], 1), size)
		}
		buf = append(buf, stream[pos:pos+size]...)
		pos += size
		in := buf[start:]
		for {
			ev, n, err := rd.Next(in, limit)
			if each != nil {
				each(&rd, in, ev, n, err)
			}
			if err != nil {
				var ce *CloseError
				if !errors.As(err, &ce) {
					t.Fatalf("Next error %T %v, want *CloseError", err, err)
				}
				if n != 0 {
					t.Fatalf("Next returned n=%d with an error", n)
				}
				res.err = ce
				return res
			}
			if n == 0 {
				break
			}
			if n > len(in) {
				t.Fatalf("n=%d > len(in)=%d", n, len(in))
			}
			res.events = append(res.events, copyEvent(ev))
			res.consumed += n
			start += n
			in = in[n:]
		}
		// Compact only when most of buf is consumed, so that tiny chunks do
		// not make a long frame quadratic.
		if start > len(buf)/2 {
			buf = append(buf[:0], buf[start:]...)
			start = 0
		}
	}
	return res
}

func sameEvent(a, b Event) bool {
	return a.Kind == b.Kind && bytes.Equal(a.Payload, b.Payload) &&
		a.CloseCode == b.CloseCode && bytes.Equal(a.CloseReason, b.CloseReason)
}

// sameResult compares two feeds of one stream: the same messages and control
// frames in the same order, the same bytes consumed, the same error. Kind
// None events (a fragment, or a streamed frame's progress) depend on how the
// bytes arrived and are not compared.
func sameResult(a, b result) bool {
	ae, be := outcome(a.events), outcome(b.events)
	// After an error the connection is over: how much of a streamed frame
	// was consumed before its bad bytes showed is no outcome either.
	if len(ae) != len(be) || a.consumed != b.consumed && (a.err == nil || b.err == nil) {
		return false
	}
	for i := range ae {
		if !sameEvent(ae[i], be[i]) {
			return false
		}
	}
	if (a.err == nil) != (b.err == nil) {
		return false
	}
	return a.err == nil || *a.err == *b.err
}

// outcome is events without the Kind None ones.
func outcome(events []Event) []Event {
	var out []Event
	for _, e := range events {
		if e.Kind != None {
			out = append(out, e)
		}
	}
	return out
}
