package frame

import (
	"encoding/binary"
	"slices"
	"unicode/utf8"

	"github.com/gobwas/ws"
)

// MaxHeaderLen is the size of the header AppendFrame writes for a payload of
// payloadLen bytes: server frames are unmasked, with the minimal length
// encoding. Size a buffer with MaxHeaderLen(n)+n to append without allocating.
func MaxHeaderLen(payloadLen int) int {
	switch {
	case payloadLen <= 125:
		return 2
	case payloadLen <= 0xffff:
		return 4
	default:
		return 10
	}
}

// AppendFrame appends a server frame (unmasked, no RSV bits) to dst and returns
// the extended buffer. It allocates only if dst lacks capacity.
//
// The caller keeps control frames legal: fin set and at most 125 bytes
// (AppendClose, AppendPing and AppendPong do).
func AppendFrame(dst []byte, op ws.OpCode, fin bool, payload []byte) []byte {
	n := len(payload)
	dst = slices.Grow(dst, MaxHeaderLen(n)+n)
	return append(appendHeader(dst, op, fin, n), payload...)
}

// appendHeader appends an unmasked frame header for a payload of n bytes,
// with the shortest length encoding.
func appendHeader(dst []byte, op ws.OpCode, fin bool, n int) []byte {
	b0 := byte(op) & 0x0f
	if fin {
		b0 |= 0x80
	}
	switch {
	case n <= 125:
		return append(dst, b0, byte(n))
	case n <= 0xffff:
		dst = append(dst, b0, 126)
		return binary.BigEndian.AppendUint16(dst, uint16(n))
	default:
		dst = append(dst, b0, 127)
		return binary.BigEndian.AppendUint64(dst, uint64(n))
	}
}

// AppendTextHeader appends the header of a one-frame text message of n
// bytes, for a writer that sends the payload from where it is.
func AppendTextHeader(dst []byte, n int) []byte {
	return appendHeader(dst, ws.OpText, true, n)
}

// AppendText appends a whole text message in one frame.
func AppendText(dst, payload []byte) []byte {
	return AppendFrame(dst, ws.OpText, true, payload)
}

// AppendPing appends a ping; a payload over 125 bytes is cut to 125 so the
// frame stays legal.
func AppendPing(dst, payload []byte) []byte {
	return AppendFrame(dst, ws.OpPing, true, controlPayload(payload))
}

// AppendPong appends a pong, typically echoing a ping's payload (which Next
// guarantees is at most 125 bytes); a longer one is cut to 125.
func AppendPong(dst, payload []byte) []byte {
	return AppendFrame(dst, ws.OpPong, true, controlPayload(payload))
}

func controlPayload(p []byte) []byte {
	return p[:min(len(p), ws.MaxControlFramePayloadSize)]
}

// maxCloseReason is what is left of a control payload after the 2-byte code.
const maxCloseReason = ws.MaxControlFramePayloadSize - 2

// AppendClose appends a close frame with code and reason. The reason is cut to
// fit the 125-byte control payload, at a UTF-8 boundary, since the peer must
// fail the connection on a reason that is not UTF-8.
//
// Code 0 or ws.StatusNoStatusRcvd (1005), which must not appear on the wire,
// give a close frame without payload: the way to echo a close that had none.
func AppendClose(dst []byte, code ws.StatusCode, reason string) []byte {
	if code == 0 || code == ws.StatusNoStatusRcvd {
		return AppendFrame(dst, ws.OpClose, true, nil)
	}
	if len(reason) > maxCloseReason {
		cut := maxCloseReason
		// Back up to the start of the rune that straddles the limit. At most
		// 3 steps for valid UTF-8; invalid input is cut where it stands.
		for i := cut; i > cut-utf8.UTFMax && i > 0; i-- {
			if utf8.RuneStart(reason[i]) {
				cut = i
				break
			}
		}
		reason = reason[:cut]
	}
	n := 2 + len(reason)
	dst = slices.Grow(dst, MaxHeaderLen(n)+n)
	dst = append(dst, 0x80|byte(ws.OpClose), byte(n))
	dst = binary.BigEndian.AppendUint16(dst, uint16(code))
	return append(dst, reason...)
}

// MaxHeaderSize is the longest server frame header: 2 bytes, plus 8 of
// extended length (servers never mask).
const MaxHeaderSize = 10

// TextInPlace makes buf, whose payload starts at buf[reserved:], one text
// frame by writing the header just before the payload, and returns the frame
// (a suffix of buf). reserved must be at least MaxHeaderLen of the payload;
// MaxHeaderSize always is. It lets a reply be built after a reserved gap and
// sent without a copy.
func TextInPlace(buf []byte, reserved int) []byte {
	n := len(buf) - reserved
	start := reserved - MaxHeaderLen(n)
	appendHeader(buf[start:start:reserved], ws.OpText, true, n)
	return buf[start:]
}
