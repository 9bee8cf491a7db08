// Package upstream owns the contract between the gateway and the MCP servers
// behind it: an Upstream opens one Session per authenticated client
// connection, the gateway hands it complete JSON-RPC messages with Send, and
// the upstream hands back replies and server-initiated messages through the
// connection's Sink. Implementations live in subpackages (builtin, and the
// stdio and http pools).
//
// It also owns the message buffer pool (GetBuffer, PutBuffer) through which a
// message changes hands from the reactor to an upstream without a copy.
package upstream

import (
	"errors"

	"github.com/mcpgate/gateway/mcp"
)

var (
	// ErrBusy means the upstream's queue is full; the message was not taken.
	// The gateway answers the request itself (and may retry or shed load).
	ErrBusy = errors.New("upstream: busy")
	// ErrClosed means the upstream or the session is closed.
	ErrClosed = errors.New("upstream: closed")
)

// Sink receives messages from an upstream for one client connection. msg is
// only valid during the call (the receiver copies it). Deliver may be called
// from several upstream goroutines at once and must not block for long: it is
// where a slow client is detected, not waited for.
type Sink interface {
	Deliver(msg []byte)
	// Fail ends the client connection with a WebSocket close code and
	// reason, after the messages already delivered: 1011 when the session's
	// worker died, 1013 when no worker is available (pool at max).
	Fail(code uint16, reason string)
	// Subject is the authenticated principal of the connection (set before
	// Open), by which a pool shares its workers fairly (max_per_subject).
	Subject() string
}

// Upstream is one configured upstream (a route target).
type Upstream interface {
	Name() string
	// Open starts the upstream side of one client connection. It is called
	// on a network event loop and must not block.
	Open(sink Sink) (Session, error)
	// Close stops the upstream's workers. Sessions still open get no more
	// Deliver calls once it returns, and their Send returns ErrClosed.
	Close() error
}

// Session is the upstream side of one client connection.
type Session interface {
	// Send hands over one complete JSON-RPC text message (or batch). It must
	// not block (it runs on an event loop). On success the session owns msg
	// and returns it with PutBuffer when done, so msg should come from
	// GetBuffer. On error (ErrBusy when the upstream's queue is full,
	// ErrClosed) the caller keeps msg, so it can still answer the request.
	Send(msg []byte) error
	// Close says the client left. Deliver calls may still be in flight when
	// it returns; a Deliver after Close must be harmless to the Sink.
	Close()
}

// Inline is implemented by sessions whose upstream is pure computation with
// a small bound (the builtin server): the reactor may answer a message on its
// event loop instead of handing it to a worker, which saves the two
// cross-goroutine wake-ups (queue, then AsyncWrite) that otherwise cost more
// than the answer itself.
type Inline interface {
	// HandleInline appends the reply to msg (possibly nothing, for
	// notifications) to dst and returns it, with ok true; ok false means
	// the message is not one to answer inline (too big): use Send. env is
	// msg's mcp.Scan result, which the caller has already checked (no
	// error): the session need not validate msg again. It is passed by
	// value so that the call through the interface does not make the
	// caller's envelope escape to the heap.
	HandleInline(dst, msg []byte, env mcp.Envelope) (reply []byte, ok bool)
}
