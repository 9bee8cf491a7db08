package pool

import (
	"sync"
	"sync/atomic"

	"github.com/mcpgate/gateway/upstream"
)

// Gate stops every delivery of one upstream at once: Upstream.Close shuts
// it, and once Shut returns no Deliver or Fail is running or will start.
// Deliveries hold it shared, so they never wait for each other.
type Gate struct {
	// Name is the upstream's, for the spans of its requests (tracing).
	Name string

	mu     sync.RWMutex
	closed bool
}

// Shut closes the gate, waiting for the deliveries under way.
func (g *Gate) Shut() {
	g.mu.Lock()
	g.closed = true
	g.mu.Unlock()
}

// Closed reports whether Shut was called.
func (g *Gate) Closed() bool {
	g.mu.RLock()
	defer g.mu.RUnlock()
	return g.closed
}

// Route is the upstream end of one client connection: where the replies to
// its requests, and the worker messages that belong to it, are delivered.
// It also lists the connection's requests in flight, wherever they are.
type Route struct {
	sink   upstream.Sink
	gate   *Gate
	closed atomic.Bool // the client left (Session.Close)
	failed atomic.Bool // Fail was called

	mu    sync.Mutex
	calls *Call // in flight, linked through Call.rnext
}

// NewRoute returns the route for one client connection.
func NewRoute(g *Gate, sink upstream.Sink) *Route { return &Route{sink: sink, gate: g} }

// Deliver hands msg to the connection, unless it left or the upstream is
// closed. msg is only read during the call.
func (r *Route) Deliver(msg []byte) {
	if r.closed.Load() || len(msg) == 0 {
		return
	}
	r.gate.mu.RLock()
	if !r.gate.closed {
		r.sink.Deliver(msg)
	}
	r.gate.mu.RUnlock()
}

// Fail ends the connection with a WebSocket close code, once, after what was
// already delivered.
func (r *Route) Fail(code uint16, reason string) {
	if r.closed.Load() || !r.failed.CompareAndSwap(false, true) {
		return
	}
	r.gate.mu.RLock()
	if !r.gate.closed {
		r.sink.Fail(code, reason)
	}
	r.gate.mu.RUnlock()
}

// Failed reports whether the connection was failed.
func (r *Route) Failed() bool { return r.failed.Load() }

// Close marks the client gone: nothing more is delivered. It returns the
// connection's requests still in flight, so the upstream can take them off
// their workers (and tell the workers to stop).
func (r *Route) Close() []*Call {
	r.closed.Store(true)
	calls := r.InFlight()
	for _, c := range calls {
		c.Trace.End(0, "client gone")
	}
	return calls
}

// Closed reports whether the client left.
func (r *Route) Closed() bool { return r.closed.Load() }

// InFlight returns the connection's requests in flight.
func (r *Route) InFlight() []*Call {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []*Call
	for c := r.calls; c != nil; c = c.rnext {
		out = append(out, c)
	}
	return out
}

// findID returns the connection's request in flight whose client id is id
// (byte for byte), for mapping a client's notifications/cancelled.
func (r *Route) findID(id []byte) *Call {
	r.mu.Lock()
	defer r.mu.Unlock()
	for c := r.calls; c != nil; c = c.rnext {
		if string(c.ID) == string(id) {
			return c
		}
	}
	return nil
}

func (r *Route) link(c *Call) {
	r.mu.Lock()
	c.rnext = r.calls
	if r.calls != nil {
		r.calls.rprev = c
	}
	r.calls = c
	r.mu.Unlock()
}

func (r *Route) unlink(c *Call) {
	r.mu.Lock()
	if c.rprev != nil {
		c.rprev.rnext = c.rnext
	} else if r.calls == c {
		r.calls = c.rnext
	}
	if c.rnext != nil {
		c.rnext.rprev = c.rprev
	}
	c.rprev, c.rnext = nil, nil
	r.mu.Unlock()
}
