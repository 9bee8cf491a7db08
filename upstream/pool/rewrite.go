package pool

import (
	"strconv"
	"sync/atomic"

	"github.com/mcpgate/gateway/mcp"
	"github.com/mcpgate/gateway/metrics"
	"github.com/mcpgate/gateway/tracing"
)

// Mode is how a client connection uses its upstream.
type Mode uint8

const (
	// ModeUnknown: the connection has sent no MCP message yet.
	ModeUnknown Mode = iota
	// ModeSession: the first message was initialize; the connection gets a
	// worker of its own for its whole life.
	ModeSession
	// ModeRequest: stateless requests, dispatched one by one over a shared
	// pool of workers.
	ModeRequest
)

func (m Mode) String() string {
	switch m {
	case ModeSession:
		return "session"
	case ModeRequest:
		return "request"
	}
	return "unknown"
}

// Keys and methods the pool looks at.
const (
	MetaVersionKey      = "io.modelcontextprotocol/protocolVersion"
	MetaSubscriptionKey = "io.modelcontextprotocol/subscriptionId"
	MethodInitialize    = "initialize"
	MethodCancelled     = "notifications/cancelled"
	MethodProgress      = "notifications/progress"
	MethodListen        = "subscriptions/listen"
)

// Detect decides a connection's mode from its first MCP message: an
// initialize request starts a session (only session revisions have one);
// anything else is a stateless client. A batch is never a session start:
// initialize must not be part of one.
func Detect(msg []byte) Mode {
	env, err := mcp.Scan(msg)
	if err == nil && env.Kind == mcp.KindRequest && env.MethodIs(MethodInitialize) {
		return ModeSession
	}
	return ModeRequest
}

// maxGID keeps gateway ids exact in JavaScript workers (2^53).
const maxGID = 1<<53 - 1

var lastGID atomic.Uint64

// NextGID returns a gateway request id unique in this process. Ids are
// unique across connections and upstreams, so a worker shared by many
// connections never sees two requests with the same id.
func NextGID() uint64 {
	for {
		g := lastGID.Add(1)
		if g <= maxGID {
			return g
		}
		lastGID.CompareAndSwap(g, 0) // wraps after 2^53 requests
	}
}

// ParseGID reads a worker's id (or progress token, or subscription id) as a
// gateway id: a plain JSON integer, as the gateway wrote it.
func ParseGID(raw []byte) (uint64, bool) {
	if len(raw) == 0 || len(raw) > 16 || (raw[0] == '0' && len(raw) > 1) {
		return 0, false
	}
	var n uint64
	for _, c := range raw {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + uint64(c-'0')
	}
	return n, n <= maxGID
}

// AppendGID appends a gateway id as a JSON number.
func AppendGID(dst []byte, gid uint64) []byte { return strconv.AppendUint(dst, gid, 10) }

// offset returns where sub begins inside msg. sub must be a subslice of msg
// as returned by mcp.Scan, mcp.Lookup or mcp.Members, which never cut the
// capacity, so both end at the same place in memory.
func offset(msg, sub []byte) int {
	off := cap(msg) - cap(sub)
	if off < 0 || off+len(sub) > len(msg) {
		return -1
	}
	return off
}

// span is a part of a message to replace.
type span struct {
	at   []byte // a subslice of the message
	with []byte // the new bytes; nil with gid set means the gateway id
	gid  uint64
}

// splice appends msg to dst with each span replaced. Spans must not overlap;
// they may come in any order.
func splice(dst, msg []byte, spans ...span) []byte {
	for i := 1; i < len(spans); i++ { // a few spans: insertion sort by offset
		for j := i; j > 0 && offset(msg, spans[j].at) < offset(msg, spans[j-1].at); j-- {
			spans[j], spans[j-1] = spans[j-1], spans[j]
		}
	}
	pos := 0
	for _, s := range spans {
		off := offset(msg, s.at)
		if off < pos {
			continue // not from msg: leave it (never happens with Scan's slices)
		}
		dst = append(dst, msg[pos:off]...)
		if s.with != nil {
			dst = append(dst, s.with...)
		} else {
			dst = AppendGID(dst, s.gid)
		}
		pos = off + len(s.at)
	}
	return append(dst, msg[pos:]...)
}

// progressToken returns params._meta.progressToken of a request (nil if none).
func progressToken(params []byte) []byte {
	if params == nil {
		return nil
	}
	meta, ok := mcp.Lookup(params, "_meta")
	if !ok {
		return nil
	}
	tok, ok := mcp.Lookup(meta, "progressToken")
	if !ok || (tok[0] != '"' && tok[0] != '-' && (tok[0] < '0' || tok[0] > '9')) {
		return nil // only strings and numbers are tokens
	}
	return tok
}

// traceparent returns params._meta.traceparent of a request when it is a
// plain JSON string of a version-00 traceparent's length (quotes
// included), else nil: anything else is not continued, and not rewritten.
func traceparent(params []byte) []byte {
	if params == nil {
		return nil
	}
	meta, ok := mcp.Lookup(params, "_meta")
	if !ok {
		return nil
	}
	v, ok := mcp.Lookup(meta, "traceparent")
	if !ok || len(v) != tracing.TraceparentLen+2 || v[0] != '"' || v[len(v)-1] != '"' {
		return nil
	}
	for _, b := range v[1 : len(v)-1] {
		if b == '\\' || b < 0x20 {
			return nil
		}
	}
	return v
}

// methodName is the request's method for a span name: one of the named
// methods or "other" (a client cannot mint span names).
func methodName(env *mcp.Envelope) string {
	if env.MethodEscaped {
		return "other"
	}
	if metrics.KnownMethod(env.Method) {
		return string(env.Method)
	}
	return "other"
}
