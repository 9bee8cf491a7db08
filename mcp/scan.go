// Package mcp owns the JSON-RPC 2.0 / MCP message format on the gateway's hot
// path: validating a client message and finding its envelope (id, method,
// params) without allocating, walking batches, looking up object members, and
// appending responses and errors with correct JSON string escaping.
//
// It keeps every id exactly as the client sent it (raw bytes), so a reply
// carries `"abc"` as a string and `1.50` as `1.50`: JSON-RPC clients match
// replies by id, and a gateway that re-encodes ids breaks them.
//
// It knows nothing of connections or upstreams; package upstream and the
// reactor build on it.
package mcp

import (
	"bytes"
	"errors"
	"unicode/utf8"
)

// JSON-RPC 2.0 and MCP error codes.
const (
	CodeParseError     = -32700
	CodeInvalidRequest = -32600
	CodeMethodNotFound = -32601
	CodeInvalidParams  = -32602
	CodeInternal       = -32603
	// CodeUnsupportedVersion is MCP 2026-07-28's UnsupportedProtocolVersion.
	CodeUnsupportedVersion = -32022
	// The gateway's own answers (SPEC 4.6), outside JSON-RPC's server-error
	// range, which MCP reserves: -32029 and -32000 are retired.
	CodeReconnect           = -31000 // draining: reconnect elsewhere (data.retry_after_ms)
	CodeRateLimited         = -31029 // per_subject limit (data.retry_after_ms)
	CodeUpstreamUnavailable = -31503 // no worker can take it now (data.retry_after_ms)
	CodeUpstreamTimeout     = -31504 // no answer within the upstream's request_timeout
	CodeForbidden           = -31003 // an authorization rule denied it (data.reason)
)

var (
	// ErrParse means the message is not valid JSON: answer -32700, id null.
	ErrParse = errors.New("mcp: parse error")
	// ErrInvalidRequest means valid JSON that is not a JSON-RPC 2.0 message:
	// answer -32600 with Envelope.ID (null when nil).
	ErrInvalidRequest = errors.New("mcp: invalid request")
)

// Kind says what a message is.
type Kind uint8

const (
	KindInvalid      Kind = iota
	KindRequest           // method and id
	KindNotification      // method, no id
	KindResponse          // result or error, and id
	KindBatch             // a JSON array; walk it with NewBatch
)

func (k Kind) String() string {
	switch k {
	case KindRequest:
		return "request"
	case KindNotification:
		return "notification"
	case KindResponse:
		return "response"
	case KindBatch:
		return "batch"
	}
	return "invalid"
}

// Envelope is the top level of one JSON-RPC message. Its slices alias the
// scanned message; nothing is copied.
type Envelope struct {
	Kind Kind
	// ID is the raw JSON of the id (a string with its quotes and escapes, a
	// number as written, or null for a response); nil when absent. On
	// ErrInvalidRequest it is set when a string or number id could be found,
	// so the error can still go to the right request.
	ID []byte
	// Method is the method name without quotes, unless MethodEscaped (it
	// has escapes or invalid UTF-8): then it is the whole quoted JSON string
	// (compare with MethodIs, decode with AppendUnquote).
	Method        []byte
	MethodEscaped bool
	// Params, Result and Error are raw JSON values; nil when absent.
	Params []byte
	Result []byte
	Error  []byte
}

// MethodIs reports whether the method is name, decoding escapes if needed.
func (e *Envelope) MethodIs(name string) bool {
	if !e.MethodEscaped {
		return string(e.Method) == name
	}
	return StringEquals(e.Method, name)
}

// member indexes of the envelope keys.
const (
	mJSONRPC = iota
	mID
	mMethod
	mParams
	mResult
	mError
	nMembers
	// mConfusable marks a key such as "ID" or "jſonrpc" that is not an
	// envelope key but case-folds to one. Decoders that match keys without
	// case (Go's encoding/json into structs) would take it as that member,
	// so the gateway and its upstream could disagree about the id or the
	// method: such messages are refused, like duplicates.
	mConfusable = -2
)

var memberNames = [nMembers]string{"jsonrpc", "id", "method", "params", "result", "error"}

// memberIndex returns the envelope member that the quoted key names, -1 for
// other keys, or mConfusable for a key that only case-folds to a member name.
func memberIndex(key []byte, escaped bool) int {
	k := key[1 : len(key)-1]
	if !escaped {
		switch string(k) {
		case "jsonrpc":
			return mJSONRPC
		case "id":
			return mID
		case "method":
			return mMethod
		case "params":
			return mParams
		case "result":
			return mResult
		case "error":
			return mError
		}
	}
	if len(k) > 64 {
		return -1
	}
	var buf [64]byte
	d := k
	if escaped {
		var ok bool
		if d, ok = AppendUnquote(buf[:0], key); !ok {
			return -1
		}
	}
	for m, name := range memberNames {
		if string(d) == name {
			return m
		}
		if bytes.EqualFold(d, []byte(name)) {
			return mConfusable
		}
	}
	return -1
}

// Scan validates msg as a whole (ErrParse if it is not one JSON text) and
// returns its JSON-RPC envelope. A message whose first non-space byte is '['
// is a batch: Scan only validates it; walk it with NewBatch. Anything else
// that is valid JSON but not a JSON-RPC 2.0 request, notification or
// response gives ErrInvalidRequest. Scan never allocates.
//
// Duplicate envelope keys, and keys that differ from one only in case, are
// refused (ErrInvalidRequest): decoders disagree about which one wins, and
// the gateway and its upstream must see the same id and method.
func Scan(msg []byte) (Envelope, error) {
	var env Envelope
	i := skipSpace(msg, 0)
	if i >= len(msg) {
		return env, ErrParse
	}
	if msg[i] != '{' {
		end, _ := validValue(msg, i)
		if end < 0 || skipSpace(msg, end) != len(msg) {
			return env, ErrParse
		}
		if msg[i] == '[' {
			env.Kind = KindBatch
			return env, nil
		}
		return env, ErrInvalidRequest
	}

	var vals [nMembers][]byte
	var esc [nMembers]bool
	dup := false
	i = skipSpace(msg, i+1)
	if i < len(msg) && msg[i] == '}' {
		i++
	} else {
		for {
			if i >= len(msg) || msg[i] != '"' {
				return env, ErrParse
			}
			kEnd, kEsc := scanString(msg, i)
			if kEnd < 0 {
				return env, ErrParse
			}
			m := memberIndex(msg[i:kEnd], kEsc)
			i = skipSpace(msg, kEnd)
			if i >= len(msg) || msg[i] != ':' {
				return env, ErrParse
			}
			i = skipSpace(msg, i+1)
			var vEnd int
			var vEsc bool
			if i < len(msg) && msg[i] == '"' { // skip validValue's switch
				vEnd, vEsc = scanString(msg, i)
			} else {
				vEnd, vEsc = validValue(msg, i)
			}
			if vEnd < 0 {
				return env, ErrParse
			}
			if m == mConfusable {
				dup = true
			}
			if m >= 0 {
				if vals[m] != nil {
					dup = true
				}
				vals[m] = msg[i:vEnd]
				esc[m] = vEsc
			}
			i = skipSpace(msg, vEnd)
			if i >= len(msg) {
				return env, ErrParse
			}
			if msg[i] == ',' {
				i = skipSpace(msg, i+1)
				continue
			}
			if msg[i] != '}' {
				return env, ErrParse
			}
			i++
			break
		}
	}
	if skipSpace(msg, i) != len(msg) {
		return env, ErrParse
	}

	// The JSON is valid; now the JSON-RPC rules.
	id := vals[mID]
	idOK := id != nil && (id[0] == '"' || id[0] == '-' || (id[0] >= '0' && id[0] <= '9'))
	if idOK && !dup {
		env.ID = id
	}
	if dup {
		return env, ErrInvalidRequest
	}
	if v := vals[mJSONRPC]; v == nil || !(string(v) == `"2.0"` || (esc[mJSONRPC] && StringEquals(v, "2.0"))) {
		return env, ErrInvalidRequest
	}
	env.Params, env.Result, env.Error = vals[mParams], vals[mResult], vals[mError]

	if method := vals[mMethod]; method != nil {
		if method[0] != '"' || env.Result != nil || env.Error != nil {
			return env, ErrInvalidRequest
		}
		if p := env.Params; p != nil && p[0] != '{' && p[0] != '[' {
			return env, ErrInvalidRequest
		}
		// Invalid UTF-8 decodes to U+FFFD, so it needs decoding like escapes.
		// (isPlain first: utf8.Valid costs more on a short ASCII name.)
		if esc[mMethod] || !isPlain(method[1:len(method)-1]) && !utf8.Valid(method) {
			env.Method, env.MethodEscaped = method, true
		} else {
			env.Method = method[1 : len(method)-1]
		}
		switch {
		case id == nil:
			env.Kind = KindNotification
		case idOK:
			env.Kind = KindRequest
		default: // null, bool, object or array id
			return env, ErrInvalidRequest
		}
		return env, nil
	}

	// A response: an id (null allowed) and exactly one of result or error.
	if id == nil || !(idOK || string(id) == "null") {
		return env, ErrInvalidRequest
	}
	if (env.Result == nil) == (env.Error == nil) || env.Params != nil {
		return env, ErrInvalidRequest
	}
	if env.Error != nil && env.Error[0] != '{' {
		return env, ErrInvalidRequest
	}
	env.ID = id
	env.Kind = KindResponse
	return env, nil
}

// Batch walks the elements of a batch that Scan accepted (Kind KindBatch).
type Batch struct {
	b []byte
	i int
}

// NewBatch starts a walk over the JSON array msg.
func NewBatch(msg []byte) Batch {
	i := skipSpace(msg, 0)
	if i < len(msg) && msg[i] == '[' {
		i++
	} else {
		i = len(msg)
	}
	return Batch{b: msg, i: i}
}

// Next returns the next element (raw JSON, no surrounding space), or false
// at the end of the array.
func (it *Batch) Next() ([]byte, bool) {
	b := it.b
	i := skipSpace(b, it.i)
	if i < len(b) && b[i] == ',' {
		i = skipSpace(b, i+1)
	}
	if i >= len(b) || b[i] == ']' {
		it.i = len(b)
		return nil, false
	}
	end := skipValue(b, i)
	if end <= i {
		it.i = len(b)
		return nil, false
	}
	it.i = end
	return b[i:end], true
}

// Lookup returns the raw value of member key in the JSON object obj, which
// must be valid JSON (for example a slice from Scan). If the key occurs more
// than once the last one wins, as in encoding/json and JavaScript's
// JSON.parse, so the answer agrees with any upstream that decodes obj. Keys
// with escapes are compared decoded.
func Lookup(obj []byte, key string) ([]byte, bool) {
	// Members for one key, without its slices: this is on the hot path.
	var v []byte
	i := skipSpace(obj, 0)
	if i >= len(obj) || obj[i] != '{' {
		return nil, false
	}
	i = skipSpace(obj, i+1)
	for i < len(obj) && obj[i] == '"' {
		kStart := i
		kEnd, plain := skipKey(obj, i)
		if i = memberValue(obj, kEnd); i < 0 {
			return nil, false
		}
		vEnd := valueEnd(obj, i)
		if vEnd <= i {
			return nil, false
		}
		if keyIs(obj[kStart:kEnd], plain, key) {
			v = obj[i:vEnd]
		}
		i = nextMember(obj, vEnd)
	}
	return v, v != nil
}

// Members looks up several members of the JSON object obj in one pass:
// vals[i] gets the raw value of keys[i] (nil when absent), with the same
// rules as Lookup. It reports false, with vals untouched or partly set, when
// obj is not an object.
func Members(obj []byte, keys []string, vals [][]byte) bool {
	clear(vals)
	i := skipSpace(obj, 0)
	if i >= len(obj) || obj[i] != '{' {
		return false
	}
	i = skipSpace(obj, i+1)
	for i < len(obj) && obj[i] == '"' {
		kStart := i
		kEnd, plain := skipKey(obj, i)
		if i = memberValue(obj, kEnd); i < 0 {
			return false
		}
		vEnd := valueEnd(obj, i)
		if vEnd <= i {
			return false
		}
		for n, key := range keys {
			if keyIs(obj[kStart:kEnd], plain, key) {
				vals[n] = obj[i:vEnd]
			}
		}
		i = nextMember(obj, vEnd)
	}
	return true
}

// keyIs reports whether the raw key k decodes to s; plain is from skipKey.
func keyIs(k []byte, plain bool, s string) bool {
	if plain { // it decodes to itself: compare bytes, length first
		return len(k) == len(s)+2 && string(k[1:len(k)-1]) == s
	}
	return StringEquals(k, s)
}

// memberValue returns the start of the value after a key that ends at
// b[kEnd], past the colon and space, or -1 when there is no colon.
func memberValue(b []byte, kEnd int) int {
	i := skipSpace(b, kEnd)
	if i >= len(b) || b[i] != ':' {
		return -1
	}
	return skipSpace(b, i+1)
}

// valueEnd is skipValue with the common string case first.
func valueEnd(b []byte, i int) int {
	if i < len(b) && b[i] == '"' {
		return skipString(b, i)
	}
	return skipValue(b, i)
}

// nextMember returns the start of the key after the value that ends at
// b[vEnd] (or the index of the closing brace).
func nextMember(b []byte, vEnd int) int {
	i := skipSpace(b, vEnd)
	if i < len(b) && b[i] == ',' {
		i = skipSpace(b, i+1)
	}
	return i
}

// skipKey returns the end of the string at obj[i] == '"' (as skipString)
// and whether its content is plain (see isPlain). Keys are short: a byte
// loop is quicker than skipString and isPlain together.
func skipKey(obj []byte, i int) (int, bool) {
	for j := i + 1; j < len(obj); j++ {
		c := obj[j]
		if c == '"' {
			return j + 1, true
		}
		if c == '\\' || c >= utf8.RuneSelf {
			return skipString(obj, i), false
		}
	}
	return len(obj), false
}
