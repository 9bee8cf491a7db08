package frame

import (
	"encoding/binary"
	"strconv"
	"unicode/utf8"

	"github.com/gobwas/ws"
)

// Kind says what an Event carries.
type Kind uint8

// Kinds of Event. None means Next absorbed a non-final fragment: there is
// nothing to handle yet.
const (
	None Kind = iota
	Text
	Binary
	Ping
	Pong
	Close
)

var kindNames = [...]string{"None", "Text", "Binary", "Ping", "Pong", "Close"}

func (k Kind) String() string {
	if int(k) < len(kindNames) {
		return kindNames[k]
	}
	return "Kind(" + strconv.Itoa(int(k)) + ")"
}

// Event is what one consumed frame amounts to.
//
// For an unfragmented message and for control frames, Payload and CloseReason
// alias the bytes given to Next (already unmasked): they are valid until the
// reactor discards those bytes. For a fragmented message, Payload is the
// Reader's buffer: valid until the next call to Next or Release.
type Event struct {
	Kind    Kind
	Payload []byte
	// CloseCode and CloseReason are set for Close only. A close frame without
	// a payload has CloseCode ws.StatusNoStatusRcvd (1005): none given.
	CloseCode   ws.StatusCode
	CloseReason []byte
}

// CloseError is a violation that ends the connection: the reactor sends a
// close frame with Code and Reason, then closes.
type CloseError struct {
	Code   ws.StatusCode
	Reason string
}

func (e *CloseError) Error() string {
	return "frame: close " + strconv.Itoa(int(e.Code)) + ": " + e.Reason
}

// Reasons sent in close frames. Short: a close payload holds 123 bytes of
// reason, and the peer only needs the gist.
const (
	reasonTooBig      = "Message too big"
	reasonInvalidUTF8 = "Invalid UTF-8"
	reasonBudget      = "Try again later"
)

// StatusTryAgainLater (1013, RFC 6455 7.4.2 via the IANA registry) is not
// among gobwas/ws's constants.
const StatusTryAgainLater ws.StatusCode = 1013

// Errors are built on the failure path only (once per connection at most), so
// the happy path stays free of allocations, and each caller gets its own value.
func tooBig() error      { return &CloseError{ws.StatusMessageTooBig, reasonTooBig} }
func invalidUTF8() error { return &CloseError{ws.StatusInvalidFramePayloadData, reasonInvalidUTF8} }
func overBudget() error  { return &CloseError{StatusTryAgainLater, reasonBudget} }
func protocolError(reason string) error {
	return &CloseError{ws.StatusProtocolError, "Protocol error: " + reason}
}

// headerError turns a ws.CheckHeader error into the 1002 to send.
func headerError(err error) error {
	switch err {
	case ws.ErrProtocolOpCodeReserved:
		return protocolError("reserved opcode")
	case ws.ErrProtocolControlPayloadOverflow:
		return protocolError("control frame over 125 bytes")
	case ws.ErrProtocolControlNotFinal:
		return protocolError("fragmented control frame")
	case ws.ErrProtocolNonZeroRsv:
		return protocolError("reserved bits set")
	case ws.ErrProtocolMaskRequired:
		return protocolError("unmasked client frame")
	case ws.ErrProtocolContinuationExpected:
		return protocolError("new message inside a fragmented one")
	case ws.ErrProtocolContinuationUnexpected:
		return protocolError("continuation without a start")
	}
	return protocolError(err.Error())
}

// Reader reads the frames of one connection. Its zero value is ready to use.
// It is not safe for concurrent use: it belongs to the connection's event loop.
//
// It keeps only what spans frames: whether a message is open (fragmented,
// or one frame whose payload has not all arrived), its opcode, and its bytes
// so far. The running total of that message is len(buf), since every data
// payload that is not returned in place is copied there.
//
// A data frame whose payload is not all buffered is streamed: Next consumes
// its header and whatever payload has arrived into buf, sized from the
// header, and so on as more arrives. So the reactor's inbound buffer never
// holds more than a partial header or control frame, and a partially
// received message costs its declared size once, not the 3-4x of a doubling
// byte buffer and its copies (SPEC 10).
type Reader struct {
	// Budget, when set, is reserved for buf's capacity before it is
	// allocated and released when buf is dropped (Release, Free).
	Budget *Budget

	// buf holds the bytes of the open message. It is nil until it carries
	// bytes, is sized from the frame header (exactly, for a message of one
	// frame), grows by a quarter at least otherwise, never beyond the limit,
	// and is kept for reuse until Release.
	buf []byte
	// mapBase is where buf's mapping outside the Go heap starts, 0 if buf
	// is on the heap (offheap.go); mapCap its capacity. Unmapped when
	// dropped.
	mapBase uintptr
	mapCap  int
	// checked is how much of buf is known to be complete, valid UTF-8 (text
	// only), so that each byte is validated once and bad text fails on the
	// bytes that make it bad.
	checked    int
	op         ws.OpCode // of the open message
	fragmented bool

	// The frame being streamed: payload bytes still to come, its mask and
	// how far into the payload the mask has been applied, its FIN bit.
	remain  int64
	mask    [4]byte
	maskOff int
	fin     bool
}

// Open reports whether a message is open: a fragmented message whose final
// fragment was not read yet, or a frame whose payload has not all arrived.
func (r *Reader) Open() bool { return r.fragmented || r.remain > 0 }

// InFrame reports whether the next bytes Next reads are the rest of a
// frame's payload, not a header: the frame was counted when it began.
func (r *Reader) InFrame() bool { return r.remain > 0 }

// Release drops the message buffer, so an idle connection holds none. Call it
// once the Text or Binary event that returned the buffer has been handled. It
// does nothing while a message is open: the buffer holds its bytes.
func (r *Reader) Release() {
	if !r.Open() {
		r.drop()
	}
}

// Free drops the message buffer and its reservation even if a message is
// open: the connection is over.
func (r *Reader) Free() {
	r.drop()
	r.fragmented = false
	r.remain = 0
}

func (r *Reader) drop() {
	r.Budget.release(int64(cap(r.buf)))
	r.unmap()
	r.buf = nil
	r.checked = 0
}

// Next reads one frame from in, which holds every buffered inbound byte, and
// enforces limit, the maximum size of a message in bytes (limit >= 0).
//
// It returns n > 0 when it consumed n bytes: a whole frame, or (a data frame
// not all buffered) its header and the payload bytes that have arrived, or
// more of them. The event says what completed: Kind None for a non-final
// fragment or a frame still streaming. It returns n == 0 and no error when
// in does not hold enough to go on (part of a header, of a control frame):
// keep the bytes and call again with more. A too-big message is refused as
// soon as its header is present.
//
// Any error is a *CloseError, returned with n == 0; the connection is over and
// in may have been modified.
func (r *Reader) Next(in []byte, limit int64) (ev Event, n int, err error) {
	if r.remain > 0 {
		return r.stream(in, 0)
	}
	h, hn, err := ParseHeader(in)
	if err != nil || hn == 0 {
		return Event{}, 0, err
	}

	state := ws.StateServerSide
	if r.fragmented {
		state = state.Set(ws.StateFragmented)
	}
	if err := ws.CheckHeader(h, state); err != nil {
		return Event{}, 0, headerError(err)
	}

	// Decide the size from the header, before waiting for the payload: a
	// hostile length is refused while it is only a number. len(r.buf) <=
	// limit holds for an open message, so the subtraction cannot overflow;
	// it is negative only if the limit shrank, which refuses any data frame.
	if h.OpCode.IsData() && h.Length > limit-int64(len(r.buf)) {
		return Event{}, 0, tooBig()
	}
	if h.Length > int64(len(in)-hn) {
		if !h.OpCode.IsData() {
			return Event{}, 0, nil // a control frame: 125 bytes at most, wait
		}
		// Stream it: the payload goes to buf as it arrives.
		if err := r.begin(h, limit); err != nil {
			return Event{}, 0, err
		}
		r.remain, r.mask, r.maskOff, r.fin = h.Length, h.Mask, 0, h.Fin
		return r.stream(in[hn:], hn)
	}

	end := hn + int(h.Length)
	// The full slice expression keeps an append to the payload from
	// overwriting the frames that follow it in the buffer.
	p := in[hn:end:end]
	ws.Cipher(p, h.Mask, 0)

	switch h.OpCode {
	case ws.OpPing:
		return Event{Kind: Ping, Payload: p}, end, nil
	case ws.OpPong:
		return Event{Kind: Pong, Payload: p}, end, nil
	case ws.OpClose:
		code, reason, err := parseClose(p)
		if err != nil {
			return Event{}, 0, err
		}
		return Event{Kind: Close, CloseCode: code, CloseReason: reason}, end, nil
	}

	if !r.fragmented && h.Fin {
		// The common case: a whole message in one frame, returned in place.
		if h.OpCode == ws.OpText {
			if !utf8.Valid(p) {
				return Event{}, 0, invalidUTF8()
			}
			return Event{Kind: Text, Payload: p}, end, nil
		}
		return Event{Kind: Binary, Payload: p}, end, nil
	}

	if err := r.begin(h, limit); err != nil {
		return Event{}, 0, err
	}
	r.buf = append(r.buf, p...) // begin made room
	if r.op == ws.OpText && !r.validUTF8(h.Fin) {
		return Event{}, 0, invalidUTF8()
	}
	if !h.Fin {
		return Event{}, end, nil
	}
	return r.complete(), end, nil
}

// begin opens the message if the data frame h starts one and makes room in
// buf for its whole payload. Next has checked the limit.
func (r *Reader) begin(h ws.Header, limit int64) error {
	first := !r.fragmented
	if first {
		// A buffer kept from a bigger limit is let go so that the buffer
		// never exceeds the limit in force.
		if int64(cap(r.buf)) > limit {
			r.drop()
		}
		r.buf = r.buf[:0]
		r.checked = 0
		r.op = h.OpCode
	}
	if !h.Fin {
		r.fragmented = true
	}
	return r.grow(len(r.buf)+int(h.Length), limit, first && h.Fin)
}

// stream consumes payload bytes of the frame being streamed from in; hn is
// the length of its header, consumed with them.
func (r *Reader) stream(in []byte, hn int) (Event, int, error) {
	k := int(min(r.remain, int64(len(in))))
	if k == 0 && hn == 0 {
		return Event{}, 0, nil
	}
	p := in[:k]
	ws.Cipher(p, r.mask, r.maskOff)
	r.maskOff += k
	r.remain -= int64(k)
	r.buf = append(r.buf, p...) // begin made room for the whole frame
	last := r.remain == 0 && r.fin
	if r.op == ws.OpText && !r.validUTF8(last) {
		return Event{}, 0, invalidUTF8()
	}
	if !last {
		return Event{}, hn + k, nil
	}
	return r.complete(), hn + k, nil
}

// complete closes the message whose last byte buf now holds and returns it.
func (r *Reader) complete() Event {
	r.fragmented = false
	kind := Binary
	if r.op == ws.OpText {
		kind = Text
	}
	msg := r.buf[:len(r.buf):len(r.buf)]
	r.buf = r.buf[:0]
	r.checked = 0
	return Event{Kind: kind, Payload: msg}
}

// grow makes cap(r.buf) >= need (need <= limit), reserving the growth in the
// budget. A message of one frame gets exactly its size; a fragmented one
// grows by at least a quarter (never doubling: a held byte costs at most
// 1.25 bytes), from minBuf, never beyond limit. It uses make rather than
// append, whose growth would round the capacity up past either.
func (r *Reader) grow(need int, limit int64, exact bool) error {
	if need <= cap(r.buf) {
		return nil
	}
	c := need
	if !exact {
		c = max(need, cap(r.buf)+cap(r.buf)/4, minBuf)
		if int64(c) > limit {
			c = int(limit) // >= need
		}
	}
	if !r.Budget.reserve(int64(c - cap(r.buf))) {
		return overBudget()
	}
	b, base := allocBuf(len(r.buf), c)
	copy(b, r.buf)
	r.unmap()
	r.buf, r.mapBase, r.mapCap = b, base, c
	return nil
}

// minBuf is the first capacity of a fragment buffer (limit permitting), so
// that a message sent in tiny fragments does not reallocate on each one.
const minBuf = 512

// validUTF8 validates the unchecked part of the buffered text. Before the
// message's last byte, a trailing rune that the next bytes may still complete
// is left for later; any other invalid byte fails now (fail fast, RFC 6455
// 8.1).
func (r *Reader) validUTF8(final bool) bool {
	p := r.buf[r.checked:]
	if final {
		return utf8.Valid(p)
	}
	end := len(p)
	// A rune is at most 4 bytes, so an incomplete one starts within the last
	// 3. FullRune is false only for a valid, incomplete prefix.
	for i := len(p) - 1; i >= 0 && i >= len(p)-(utf8.UTFMax-1); i-- {
		if utf8.RuneStart(p[i]) {
			if !utf8.FullRune(p[i:]) {
				end = i
			}
			break
		}
	}
	if !utf8.Valid(p[:end]) {
		return false
	}
	r.checked += end
	return true
}

// parseClose checks a received close payload (RFC 6455 5.5.1, 7.4).
func parseClose(p []byte) (ws.StatusCode, []byte, error) {
	switch len(p) {
	case 0:
		return ws.StatusNoStatusRcvd, nil, nil
	case 1:
		return 0, nil, protocolError("close payload of 1 byte")
	}
	code := ws.StatusCode(binary.BigEndian.Uint16(p))
	if !validReceivedCode(code) {
		return 0, nil, protocolError("invalid close code")
	}
	reason := p[2:]
	if !utf8.Valid(reason) {
		return 0, nil, invalidUTF8()
	}
	return code, reason, nil
}

// validReceivedCode reports whether a peer may send code in a close frame:
// the codes RFC 6455 defines for sending, and the ranges for libraries,
// frameworks and applications. 1004-1006 and 1015 must never be sent; the
// rest of 1000-2999 is taken as unassigned. (IANA has since registered
// 1012-1014, which servers send; they are refused from a client here.)
func validReceivedCode(code ws.StatusCode) bool {
	switch {
	case code >= 1000 && code <= 1003:
		return true
	case code >= 1007 && code <= 1011:
		return true
	case code >= 3000 && code <= 4999:
		return true
	}
	return false
}

// ParseHeader parses the frame header at the start of b without copying or
// allocating. It returns the header and its size n, or n == 0 and no error
// when b does not hold the whole header yet.
//
// n is the number of bytes the header actually took: a client may encode a
// small length in 16 or 64 bits, which ws.HeaderSize would not count. A 64-bit
// length with its most significant bit set is a *CloseError (1002), reported
// as soon as that byte is present.
func ParseHeader(b []byte) (h ws.Header, n int, err error) {
	if len(b) < 2 {
		return h, 0, nil
	}
	h.Fin = b[0]&0x80 != 0
	h.Rsv = (b[0] & 0x70) >> 4
	h.OpCode = ws.OpCode(b[0] & 0x0f)
	h.Masked = b[1]&0x80 != 0

	n = 2
	switch l := b[1] & 0x7f; l {
	case 126:
		if len(b) < n+2 {
			return ws.Header{}, 0, nil
		}
		h.Length = int64(binary.BigEndian.Uint16(b[n:]))
		n += 2
	case 127:
		if len(b) > n && b[n]&0x80 != 0 {
			return ws.Header{}, 0, protocolError("payload length over 63 bits")
		}
		if len(b) < n+8 {
			return ws.Header{}, 0, nil
		}
		h.Length = int64(binary.BigEndian.Uint64(b[n:]))
		n += 8
	default:
		h.Length = int64(l)
	}

	if h.Masked {
		if len(b) < n+4 {
			return ws.Header{}, 0, nil
		}
		copy(h.Mask[:], b[n:n+4])
		n += 4
	}
	return h, n, nil
}

// unmap gives buf's mapping back, if it has one.
func (r *Reader) unmap() {
	if r.mapBase != 0 {
		freeBuf(r.mapBase, r.mapCap)
		r.mapBase, r.mapCap = 0, 0
	}
}
