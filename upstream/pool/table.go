package pool

import (
	"github.com/mcpgate/gateway/tracing"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mcpgate/gateway/mcp"
)

// Call is one client request in flight on a worker.
type Call struct {
	// GID is the id the worker sees (and the progress token, if the client
	// gave one).
	GID   uint64
	Route *Route
	// ID and Token are the client's raw id and progress token, byte for
	// byte (Token nil when the request had none).
	ID    []byte
	Token []byte
	Start time.Time
	// Listen marks subscriptions/listen: it stays open, so no timeout.
	Listen bool
	// Worker is the upstream's own reference to where the call went.
	Worker any
	// Retried is set by an upstream that sent the request again because
	// it never reached its first worker: there is no second retry.
	Retried bool
	// Trace is the request's span; nil when tracing is off.
	Trace *tracing.Request

	batch        *Batch
	timer        *time.Timer
	rprev, rnext *Call
	idBuf        [24]byte
	tokBuf       [24]byte
}

// Reply delivers the (already restored) reply to the call's connection, or
// adds it to the batch the request came in.
func (c *Call) Reply(msg []byte) {
	if c.Trace != nil {
		c.Trace.End(replyErrorCode(msg), "")
	}
	if c.batch != nil {
		c.batch.add(msg)
		return
	}
	c.Route.Deliver(msg)
}

// ReplyError answers the call with a JSON-RPC error carrying its client id.
func (c *Call) ReplyError(code int, message string) { c.ReplyErrorData(code, message, nil) }

// ReplyErrorData answers the call with a JSON-RPC error with data (nil:
// none).
func (c *Call) ReplyErrorData(code int, message string, data []byte) {
	var buf [256]byte
	c.Reply(mcp.AppendError(buf[:0], c.ID, code, message, data))
}

// Table holds the calls in flight on one worker (or one upstream), keyed by
// gateway id. Taking a call out is what answers it: whoever takes it (the
// reply, the timeout, the worker's death, the client leaving) is the only
// one to act on it, so a late reply finds nothing and is dropped.
type Table struct {
	// OnBusy, if set before use, is called with +1 when the table gets its
	// first call and -1 when it loses its last (for the busy gauge).
	OnBusy func(delta int)

	mu sync.Mutex
	m  map[uint64]*Call
	n  atomic.Int32
}

// Len returns the number of calls in flight.
func (t *Table) Len() int { return int(t.n.Load()) }

// Add registers c. With timeout > 0 (and c not a Listen), onTimeout runs
// for c if it is still in flight then; it has been taken out already.
func (t *Table) Add(c *Call, timeout time.Duration, onTimeout func(*Call)) {
	t.mu.Lock()
	if t.m == nil {
		t.m = make(map[uint64]*Call)
	}
	t.m[c.GID] = c
	n := t.n.Add(1)
	if timeout > 0 && !c.Listen && onTimeout != nil {
		// Set under the lock: the callback takes it, so it cannot run
		// before the field is written.
		c.timer = time.AfterFunc(timeout, func() {
			if t.Take(c.GID) == c {
				onTimeout(c)
			}
		})
	}
	// Linked under the table lock, so a Take cannot unlink it first.
	c.Route.link(c)
	t.mu.Unlock()
	if n == 1 && t.OnBusy != nil {
		t.OnBusy(1)
	}
}

// Get returns the call with gateway id gid, leaving it in flight.
func (t *Table) Get(gid uint64) *Call {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.m[gid]
}

// Take removes and returns the call with gateway id gid (nil if none).
func (t *Table) Take(gid uint64) *Call {
	t.mu.Lock()
	c := t.m[gid]
	if c == nil {
		t.mu.Unlock()
		return nil
	}
	delete(t.m, gid)
	n := t.n.Add(-1)
	if c.timer != nil {
		c.timer.Stop()
	}
	t.mu.Unlock()
	c.Route.unlink(c)
	if n == 0 && t.OnBusy != nil {
		t.OnBusy(-1)
	}
	return c
}

// Remove takes c out if it is still in flight here, and reports whether it
// was.
func (t *Table) Remove(c *Call) bool { return t.Take(c.GID) != nil }

// Cancel takes c out because the client cancelled it: no reply will reach
// the client (MCP says to ignore one), and a batch it was part of no longer
// waits for it. It reports whether c was still in flight.
func (t *Table) Cancel(c *Call) bool {
	if t.Take(c.GID) == nil {
		return false
	}
	if c.batch != nil {
		c.batch.add(nil)
	}
	return true
}

// TakeAll removes and returns every call (the worker died).
func (t *Table) TakeAll() []*Call {
	t.mu.Lock()
	out := make([]*Call, 0, len(t.m))
	for gid, c := range t.m {
		delete(t.m, gid)
		if c.timer != nil {
			c.timer.Stop()
		}
		out = append(out, c)
	}
	had := t.n.Swap(0)
	t.mu.Unlock()
	for _, c := range out {
		c.Route.unlink(c)
	}
	if had > 0 && t.OnBusy != nil {
		t.OnBusy(-1)
	}
	return out
}

// Batch collects the replies to the requests of one client batch and
// delivers them as one array once the last is in (JSON-RPC 2.0 section 6).
// Replies come in the order they complete, which JSON-RPC allows.
type Batch struct {
	mu    sync.Mutex
	route *Route
	left  int // replies still due, plus one until Seal
	n     int // replies in buf
	buf   []byte
}

func newBatch(r *Route) *Batch { return &Batch{route: r, left: 1, buf: []byte{'['}} }

func (b *Batch) expect() {
	b.mu.Lock()
	b.left++
	b.mu.Unlock()
}

// add appends one reply (nil: a request that ends without one).
func (b *Batch) add(reply []byte) {
	b.mu.Lock()
	if len(reply) > 0 {
		if b.n > 0 {
			b.buf = append(b.buf, ',')
		}
		b.buf = append(b.buf, reply...)
		b.n++
	}
	b.left--
	b.finish()
}

// Seal says every element of the batch has been dispatched. Call it once,
// after the requests were handed to workers; until then the batch is not
// delivered, even if all replies are in.
func (b *Batch) Seal() {
	if b == nil {
		return
	}
	b.mu.Lock()
	b.left--
	b.finish()
}

// finish runs with b.mu held and releases it.
func (b *Batch) finish() {
	if b.left != 0 || b.n == 0 {
		b.mu.Unlock()
		return
	}
	out := append(b.buf, ']')
	b.n = 0 // deliver once
	b.mu.Unlock()
	b.route.Deliver(out)
}

// replyErrorCode is the JSON-RPC error code of a reply (0 for a result),
// for its span: only read when tracing is on.
func replyErrorCode(msg []byte) int {
	env, err := mcp.Scan(msg)
	if err != nil || env.Error == nil {
		return 0
	}
	code, ok := mcp.Lookup(env.Error, "code")
	if !ok {
		return 0
	}
	n := 0
	neg := len(code) > 0 && code[0] == '-'
	for _, b := range code[boolInt(neg):] {
		if b < '0' || b > '9' || n > 1e9 {
			break
		}
		n = n*10 + int(b-'0')
	}
	if neg {
		n = -n
	}
	return n
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}
