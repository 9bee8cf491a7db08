package pool

import (
	"strconv"
	"sync/atomic"

	"github.com/mcpgate/gateway/mcp"
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
	if len(spans) == 2 && offset(msg, spans[1].at) < offset(msg, spans[0].at) {
		spans[0], spans[1] = spans[1], spans[0]
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
