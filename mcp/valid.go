package mcp

import (
	"encoding/binary"
	"math/bits"
)

// A one-pass JSON validator. It accepts exactly what encoding/json.Valid
// accepts (FuzzValid checks that), but runs in the same pass that finds the
// envelope members, never allocates for nesting up to 128 levels, and is
// several times faster: this is the per-message cost of the gateway.
//
// Like encoding/json it does not check UTF-8 inside strings; the WebSocket
// layer checks UTF-8 of text messages (close 1007) before they get here.

// maxDepth matches encoding/json's maxNestingDepth.
const maxDepth = 10000

// strSafe[c] is true for bytes that need no attention inside a string.
var strSafe = func() (t [256]bool) {
	for c := 0x20; c < 256; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

var hexVal = func() (t [256]int8) {
	for i := range t {
		t[i] = -1
	}
	for c := '0'; c <= '9'; c++ {
		t[c] = int8(c - '0')
	}
	for c := 'a'; c <= 'f'; c++ {
		t[c] = int8(c - 'a' + 10)
		t[c-'a'+'A'] = int8(c - 'a' + 10)
	}
	return t
}()

func isSpace(c byte) bool { return c == ' ' || c == '\n' || c == '\r' || c == '\t' }

func skipSpace(b []byte, i int) int {
	// b[i] > ' ' first: compact JSON has no space, so one compare ends it.
	for i < len(b) && b[i] <= ' ' && isSpace(b[i]) {
		i++
	}
	return i
}

// Valid reports whether b is one valid JSON text, with the same answer as
// encoding/json.Valid.
func Valid(b []byte) bool {
	i := skipSpace(b, 0)
	end, _ := validValue(b, i)
	return end >= 0 && skipSpace(b, end) == len(b)
}

// scanString validates the string starting at b[i] == '"' and returns the
// index after its closing quote (or -1), and whether it holds escapes.
func scanString(b []byte, i int) (int, bool) {
	i++
	esc := false
	for {
		// skipSafe, inlined by hand: a message is mostly short strings, and
		// the call cost as much as the scan.
		if i+8 <= len(b) {
			m := stopMask(binary.LittleEndian.Uint64(b[i:]))
			if m == 0 {
				i += 8
				continue
			}
			i += bits.TrailingZeros64(m) >> 3
		} else {
			for i < len(b) && strSafe[b[i]] {
				i++
			}
			if i >= len(b) {
				return -1, esc
			}
		}
		switch b[i] {
		case '"':
			return i + 1, esc
		case '\\':
			esc = true
			if i+1 >= len(b) {
				return -1, esc
			}
			switch b[i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				i += 2
			case 'u':
				if i+6 > len(b) || hexVal[b[i+2]]|hexVal[b[i+3]]|hexVal[b[i+4]]|hexVal[b[i+5]] < 0 {
					return -1, esc
				}
				i += 6
			default:
				return -1, esc
			}
		default: // control character
			return -1, esc
		}
	}
}

const (
	lsb = 0x0101010101010101
	msb = 0x8080808080808080
)

// stopMask flags (0x80 in the byte) each byte of the 8 in v (little endian)
// that ends or escapes a string or is a control character: q == 0 (quote),
// s == 0 (backslash), or v < 0x20. The lowest flagged byte is exact (borrows
// only run upward from a real match); the ones above it may be false.
func stopMask(v uint64) uint64 {
	q := v ^ (lsb * '"')
	s := v ^ (lsb * '\\')
	return (((q - lsb) &^ q) | ((s - lsb) &^ s) | ((v - lsb*0x20) &^ v)) & msb
}

// skipSafe returns the index of the first byte at or after i that ends or
// escapes a string or is a control character. It tests 8 bytes at a time
// (SWAR): strings are most of the bytes of an MCP message.
func skipSafe(b []byte, i int) int {
	for ; i+8 <= len(b); i += 8 {
		if m := stopMask(binary.LittleEndian.Uint64(b[i:])); m != 0 {
			return i + bits.TrailingZeros64(m)>>3
		}
	}
	for i < len(b) && strSafe[b[i]] {
		i++
	}
	return i
}

// scanNumber validates the number starting at b[i] and returns its end or -1.
func scanNumber(b []byte, i int) int {
	if i < len(b) && b[i] == '-' {
		i++
	}
	if i >= len(b) {
		return -1
	}
	switch c := b[i]; {
	case c == '0':
		i++
	case c >= '1' && c <= '9':
		i++
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			i++
		}
	default:
		return -1
	}
	if i < len(b) && b[i] == '.' {
		i++
		s := i
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			i++
		}
		if i == s {
			return -1
		}
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		s := i
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			i++
		}
		if i == s {
			return -1
		}
	}
	return i
}

func scanLiteral(b []byte, i int, lit string) int {
	if len(b)-i < len(lit) || string(b[i:i+len(lit)]) != lit {
		return -1
	}
	return i + len(lit)
}

// validValue validates the value starting at b[i] (no leading space) and
// returns the index after it, or -1. The second result reports whether the
// value is a string with escapes.
func validValue(b []byte, i int) (int, bool) {
	if i >= len(b) {
		return -1, false
	}
	switch c := b[i]; {
	case c == '"':
		return scanString(b, i)
	case c == '{' || c == '[':
		return validContainer(b, i), false
	case c == 't':
		return scanLiteral(b, i, "true"), false
	case c == 'f':
		return scanLiteral(b, i, "false"), false
	case c == 'n':
		return scanLiteral(b, i, "null"), false
	default:
		return scanNumber(b, i), false
	}
}

// validContainer validates the object or array at b[i] iteratively, keeping
// one bit per level (1 = object) so that hostile nesting costs no stack.
func validContainer(b []byte, i int) int {
	var small [2]uint64
	stack := small[:]
	depth := uint(0)  // open containers; the bit of level d is stack[d/64]>>(d%64)
	inObject := false // the bit of the innermost level, kept at hand
	for {
		// Here b[i] starts a value (possibly after space).
		i = skipSpace(b, i)
		if i >= len(b) {
			return -1
		}
		switch c := b[i]; c {
		case '"': // the most common value: no detour through validValue
			if i, _ = scanString(b, i); i < 0 {
				return -1
			}
		case '{', '[':
			if depth >= maxDepth {
				return -1
			}
			w, bit := depth/64, uint64(1)<<(depth%64)
			if w >= uint(len(stack)) {
				stack = append(stack, 0)
			}
			depth++
			i = skipSpace(b, i+1)
			inObject = c == '{'
			if !inObject {
				stack[w] &^= bit
				if i < len(b) && b[i] == ']' {
					depth--
					inObject = isObjectLevel(stack, depth)
					i++
					break
				}
				continue
			}
			stack[w] |= bit
			if i < len(b) && b[i] == '}' {
				depth--
				inObject = isObjectLevel(stack, depth)
				i++
				break
			}
			if i = objectKey(b, i); i < 0 {
				return -1
			}
			continue
		default:
			if i, _ = validValue(b, i); i < 0 {
				return -1
			}
		}
		// A value ended: close containers or move to the next element.
		for {
			if depth == 0 {
				return i
			}
			i = skipSpace(b, i)
			if i >= len(b) {
				return -1
			}
			c := b[i]
			if c == ',' {
				i++
				if inObject {
					if i = objectKey(b, skipSpace(b, i)); i < 0 {
						return -1
					}
				}
				break
			}
			if (c == '}' && inObject) || (c == ']' && !inObject) {
				depth--
				inObject = isObjectLevel(stack, depth)
				i++
				continue
			}
			return -1
		}
	}
}

// isObjectLevel reports whether the container enclosing level depth (the
// innermost one once depth levels are open) is an object; false at depth 0.
func isObjectLevel(stack []uint64, depth uint) bool {
	if depth == 0 {
		return false
	}
	d := depth - 1
	return stack[d/64]>>(d%64)&1 != 0
}

// objectKey validates `"key" :` at b[i] and returns the index after the colon.
func objectKey(b []byte, i int) int {
	if i >= len(b) || b[i] != '"' {
		return -1
	}
	i, _ = scanString(b, i)
	if i < 0 {
		return -1
	}
	i = skipSpace(b, i)
	if i >= len(b) || b[i] != ':' {
		return -1
	}
	return i + 1
}

// skipValue returns the end of the value at b[i] (no leading space), which
// must already be known valid. On invalid input it returns len(b) or less,
// never panics and never loops.
func skipValue(b []byte, i int) int {
	if i >= len(b) {
		return len(b)
	}
	switch b[i] {
	case '"':
		return skipString(b, i)
	case '{', '[':
		depth := 0
		for i < len(b) {
			switch b[i] {
			case '"':
				i = skipString(b, i)
				continue
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return i + 1
				}
			}
			i++
		}
		return len(b)
	default:
		for i < len(b) {
			switch b[i] {
			case ',', '}', ']', ' ', '\n', '\r', '\t':
				return i
			}
			i++
		}
		return i
	}
}

// skipString returns the index after the closing quote of the string at b[i].
func skipString(b []byte, i int) int {
	i++
	for {
		i = skipSafe(b, i)
		if i >= len(b) {
			return len(b)
		}
		switch b[i] {
		case '"':
			return i + 1
		case '\\':
			i += 2
		default: // a control byte: only in input that was not validated
			i++
		}
	}
}
