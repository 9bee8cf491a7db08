// Package session owns the gateway's table of live connections: one compact
// record per connection (state, subject, remote address, deadlines, counters,
// the per-connection rate window) in a slab indexed by a generation-checked
// ID, and the first-message authentication state machine of SPEC 4.2.
//
// A record is written by the event loop that owns its connection. Other
// goroutines (the deadline sweeper, upstream workers, the admin API) only read
// the atomic fields, or go through the table, whose lookups are lock-free.
package session

import (
	"log/slog"
	"net/netip"
	"sync/atomic"

	"github.com/mcpgate/gateway/ratelimit"
)

// State is where a connection is in its life.
type State uint8

const (
	// Handshake: TCP accepted, HTTP upgrade not yet complete.
	Handshake State = iota
	// PendingAuth: upgraded, waiting for the first-message auth frame.
	PendingAuth
	// Open: authenticated; messages are relayed.
	Open
	// Closing: a close frame was sent; nothing more is relayed.
	Closing
)

var stateNames = [...]string{"handshake", "pending_auth", "open", "closing"}

func (s State) String() string {
	if int(s) < len(stateNames) {
		return stateNames[s]
	}
	return "unknown"
}

// ID names a record: slot index in the low 32 bits, the slot's generation in
// the high 32, so that an ID kept by a worker never finds a later connection
// that reused the slot.
type ID uint64

// String is the ID as the client sees it in auth_ok: 16 hex digits. Logs
// (open, close, refusals), the admin API and the audit log print it the
// same way, so that one grep joins them.
func (id ID) String() string { return string(appendHex(make([]byte, 0, 16), uint64(id))) }

// LogValue makes slog print the ID as String does (its JSON handler would
// print the number).
func (id ID) LogValue() slog.Value { return slog.StringValue(id.String()) }

func (id ID) slot() uint32 { return uint32(id) }
func (id ID) gen() uint32  { return uint32(id >> 32) }

// Session is one connection's record. Its layout is kept compact: on amd64 it
// is 160 bytes (see TestSessionSize), and an idle connection holds nothing
// else of ours apart from the reactor's frame reader state. Rate, the exact
// sliding window of ratelimit (44 bytes), is most of it; State and RouteIdx
// follow it to fill its 4-byte alignment.
type Session struct {
	// Deadline is the next time (clock.Now ns) the sweeper must look at this
	// connection: the handshake or auth deadline, the next ping, or the idle
	// cut. 0 means none. Written by the owning loop, read by the sweeper.
	Deadline atomic.Int64
	// OutPending counts reply bytes queued from worker goroutines but not yet
	// handed to the socket; with the socket's own backlog it is held under
	// limits.write_buffer_bytes.
	OutPending atomic.Int64

	Remote   netip.Addr // the client, after PROXY / X-Forwarded-For from a trusted peer
	Subject  string     // the principal, once authenticated
	Opened   int64      // clock.Now ns
	LastSeen int64      // clock.Now ns of the last inbound frame (loop-owned)
	PingSent int64      // clock.Now ns of the last ping we sent, 0 when answered

	MsgsIn   uint32
	MsgsOut  atomic.Uint32
	Rate     ratelimit.Window // ratelimit.per_connection (loop-owned)
	State    State
	RouteIdx uint8 // index of the route the upgrade matched
	id       ID

	// Conn is the reactor's connection object, opaque to this package.
	Conn any
}

// ID is the record's table ID (0 until added).
func (s *Session) ID() ID { return s.id }
