package mcp

import (
	"encoding/binary"
	"strconv"
	"unicode/utf8"
)

const hexDigits = "0123456789abcdef"

// AppendString appends s as a quoted JSON string. It escapes what JSON
// requires (quote, backslash, control characters), U+2028 and U+2029 (so the
// text is also safe inside JavaScript), and replaces invalid UTF-8 with
// U+FFFD, as encoding/json does. It does not HTML-escape <, > and &: replies
// go to MCP clients, not into HTML pages.
func AppendString[T ~string | ~[]byte](dst []byte, s T) []byte {
	dst = append(dst, '"')
	dst = appendEscaped(dst, s)
	return append(dst, '"')
}

// appendEscaped appends the escaped content of s, without quotes.
func appendEscaped[T ~string | ~[]byte](dst []byte, s T) []byte {
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch c {
			case '"', '\\':
				dst = append(dst, '\\', c)
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			case '\b':
				dst = append(dst, '\\', 'b')
			case '\f':
				dst = append(dst, '\\', 'f')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		// At most 4 bytes: the conversion stays on the stack.
		r, size := utf8.DecodeRuneInString(string(s[i:min(i+utf8.UTFMax, len(s))]))
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i++
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			dst = append(dst, s[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	return append(dst, s[start:]...)
}

// AppendResponseStart appends `{"jsonrpc":"2.0","id":ID,"result":` for the
// raw id (nil means null); the caller appends the result value and '}'.
func AppendResponseStart(dst, id []byte) []byte {
	dst = append(dst, `{"jsonrpc":"2.0","id":`...)
	dst = appendID(dst, id)
	return append(dst, `,"result":`...)
}

// AppendError appends a complete JSON-RPC error response. id is the raw JSON
// id exactly as the client sent it (nil means null); data is raw JSON or nil.
// It does not allocate when dst has room.
func AppendError(dst []byte, id []byte, code int, message string, data []byte) []byte {
	dst = append(dst, `{"jsonrpc":"2.0","id":`...)
	dst = appendID(dst, id)
	dst = append(dst, `,"error":{"code":`...)
	dst = strconv.AppendInt(dst, int64(code), 10)
	dst = append(dst, `,"message":`...)
	dst = AppendString(dst, message)
	if data != nil {
		dst = append(dst, `,"data":`...)
		dst = append(dst, data...)
	}
	return append(dst, '}', '}')
}

func appendID(dst, id []byte) []byte {
	if id == nil {
		return append(dst, "null"...)
	}
	return append(dst, id...)
}

// StringEquals reports whether the quoted JSON string raw (valid JSON, with
// its quotes) decodes to s. It decodes escapes on the fly without
// allocating; invalid UTF-8 and lone surrogates decode to U+FFFD, as in
// encoding/json.
func StringEquals(raw []byte, s string) bool {
	if len(raw) < 2 || raw[0] != '"' || raw[len(raw)-1] != '"' {
		return false
	}
	raw = raw[1 : len(raw)-1]
	j := 0 // position in s
	var buf [utf8.UTFMax]byte
	for i := 0; i < len(raw); {
		c := raw[i]
		var r rune
		switch {
		case c == '\\':
			if i+1 >= len(raw) {
				return false
			}
			switch raw[i+1] {
			case 'u':
				var ok bool
				r, i, ok = decodeU(raw, i)
				if !ok {
					return false
				}
			default:
				r = rune(unescapeByte(raw[i+1]))
				if r == 0 {
					return false
				}
				i += 2
			}
		case c < utf8.RuneSelf:
			if j >= len(s) || s[j] != c {
				return false
			}
			i++
			j++
			continue
		default:
			var size int
			r, size = utf8.DecodeRune(raw[i:])
			i += size
		}
		n := utf8.EncodeRune(buf[:], r)
		if len(s)-j < n || s[j:j+n] != string(buf[:n]) {
			return false
		}
		j += n
	}
	return j == len(s)
}

// isPlain reports whether the content of a JSON string is ASCII without
// escapes, so that it decodes to itself. (Non-ASCII bytes may be invalid
// UTF-8, which decodes to U+FFFD.)
func isPlain(raw []byte) bool {
	i := 0
	for ; i+8 <= len(raw); i += 8 {
		v := binary.LittleEndian.Uint64(raw[i:])
		s := v ^ (lsb * '\\')
		if (v|((s-lsb)&^s))&msb != 0 {
			return false
		}
	}
	for ; i < len(raw); i++ {
		if c := raw[i]; c == '\\' || c >= utf8.RuneSelf {
			return false
		}
	}
	return true
}

func unescapeByte(c byte) byte {
	switch c {
	case '"', '\\', '/':
		return c
	case 'b':
		return '\b'
	case 'f':
		return '\f'
	case 'n':
		return '\n'
	case 'r':
		return '\r'
	case 't':
		return '\t'
	}
	return 0
}

func hex4(b []byte) (rune, bool) {
	if len(b) < 4 {
		return 0, false
	}
	var r rune
	for _, c := range b[:4] {
		v := hexVal[c]
		if v < 0 {
			return 0, false
		}
		r = r<<4 | rune(v)
	}
	return r, true
}

// decodeU decodes the \uXXXX escape at raw[i] (and a following low
// surrogate), returning the rune and the index after it.
func decodeU(raw []byte, i int) (rune, int, bool) {
	r, ok := hex4(raw[i+2:])
	if !ok {
		return 0, 0, false
	}
	i += 6
	if r >= 0xd800 && r < 0xdc00 {
		if i+6 <= len(raw) && raw[i] == '\\' && raw[i+1] == 'u' {
			if r2, ok := hex4(raw[i+2:]); ok && r2 >= 0xdc00 && r2 < 0xe000 {
				return (r-0xd800)<<10 | (r2 - 0xdc00) + 0x10000, i + 6, true
			}
		}
		return utf8.RuneError, i, true
	}
	if r >= 0xdc00 && r < 0xe000 {
		return utf8.RuneError, i, true
	}
	return r, i, true
}

// AppendUnquote appends the decoded content of the quoted JSON string raw
// (valid JSON, with its quotes). Invalid UTF-8 and lone surrogates become
// U+FFFD, as in encoding/json.
func AppendUnquote(dst, raw []byte) ([]byte, bool) {
	if len(raw) < 2 || raw[0] != '"' || raw[len(raw)-1] != '"' {
		return dst, false
	}
	raw = raw[1 : len(raw)-1]
	for i := 0; i < len(raw); {
		c := raw[i]
		switch {
		case c == '\\':
			if i+1 >= len(raw) {
				return dst, false
			}
			if raw[i+1] == 'u' {
				r, next, ok := decodeU(raw, i)
				if !ok {
					return dst, false
				}
				dst = utf8.AppendRune(dst, r)
				i = next
				continue
			}
			u := unescapeByte(raw[i+1])
			if u == 0 {
				return dst, false
			}
			dst = append(dst, u)
			i += 2
		case c < utf8.RuneSelf:
			dst = append(dst, c)
			i++
		default:
			r, size := utf8.DecodeRune(raw[i:])
			dst = utf8.AppendRune(dst, r)
			i += size
		}
	}
	return dst, true
}
