package session

import (
	"bytes"
	"encoding/json"

	"github.com/gobwas/ws"
)

// AuthVerdict is the outcome of a connection's first message (SPEC 4.2).
type AuthVerdict uint8

const (
	// AuthAccepted: the message was a well-formed auth frame whose token verified.
	AuthAccepted AuthVerdict = iota
	// AuthNotJSON: close 1007 "Invalid message format".
	AuthNotJSON
	// AuthRejected: any other JSON, or a token that did not verify: close 1008 "Invalid credentials".
	AuthRejected
)

// Close reasons of SPEC 4.2, verbatim from the seed design.
const (
	ReasonAuthTimeout        = "Authentication timeout"
	ReasonInvalidCredentials = "Invalid credentials"
	ReasonInvalidFormat      = "Invalid message format"
)

// CloseFor is the close code and reason for a verdict other than AuthAccepted.
func (v AuthVerdict) CloseFor() (ws.StatusCode, string) {
	if v == AuthNotJSON {
		return ws.StatusInvalidFramePayloadData, ReasonInvalidFormat
	}
	return ws.StatusPolicyViolation, ReasonInvalidCredentials
}

// ParseAuth reads a first message. It returns the token of a well-formed
// {"type":"auth","token":"..."} frame. Invalid JSON gives AuthNotJSON; valid
// JSON of any other shape (an MCP request sent before auth included) gives
// AuthRejected: a client that skips auth is never answered, only closed.
//
// The keys are exactly "type" and "token", case-sensitive, each once, both
// strings (SPEC 4.2): encoding/json's Unmarshal would match "Type" and skip
// extra keys, so the object is walked token by token instead.
func ParseAuth(msg []byte) (token string, v AuthVerdict) {
	if !json.Valid(msg) {
		return "", AuthNotJSON
	}
	d := json.NewDecoder(bytes.NewReader(msg))
	if t, err := d.Token(); err != nil || t != json.Delim('{') {
		return "", AuthRejected
	}
	var typ, tok string
	var seen [2]bool
	for d.More() {
		k, err := d.Token()
		if err != nil {
			return "", AuthRejected
		}
		val, err := d.Token()
		s, isStr := val.(string)
		if err != nil || !isStr {
			return "", AuthRejected // a number, null, object or array value
		}
		switch k {
		case "type":
			if seen[0] {
				return "", AuthRejected
			}
			seen[0], typ = true, s
		case "token":
			if seen[1] {
				return "", AuthRejected
			}
			seen[1], tok = true, s
		default:
			return "", AuthRejected
		}
	}
	if typ != "auth" || tok == "" {
		return "", AuthRejected
	}
	return tok, AuthAccepted
}

// AppendAuthOK appends {"type":"auth_ok","session":"<id>"}; the ID is printed
// in hex, and reveals nothing but the slot and its generation.
func AppendAuthOK(dst []byte, id ID) []byte {
	dst = append(dst, `{"type":"auth_ok","session":"`...)
	dst = appendHex(dst, uint64(id))
	return append(dst, `"}`...)
}

func appendHex(dst []byte, v uint64) []byte {
	const digits = "0123456789abcdef"
	var b [16]byte
	for i := 15; i >= 0; i-- {
		b[i] = digits[v&0xf]
		v >>= 4
	}
	return append(dst, b[:]...)
}
