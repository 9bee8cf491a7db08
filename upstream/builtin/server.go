// Package builtin owns the in-process MCP server: the worker pool of the
// embedded default run (`gateway serve` without a file) and the upstream used
// to measure the gateway itself, with no process or network hop behind it.
//
// It speaks both MCP generations: the session revisions (2024-11-05 to
// 2025-11-25, with initialize) and the stateless revision 2026-07-28 (the
// version in params._meta, server/discover). Its tools, echo and get-sum,
// answer exactly like those of the reference server
// @modelcontextprotocol/server-everything, so clients and benchmarks run
// unchanged against either.
//
// Work runs on a fixed pool of goroutines fed by one bounded queue; a
// connection costs a small struct, not a goroutine.
package builtin

import (
	"log/slog"
	"runtime"
	"sync"
	"sync/atomic"

	"github.com/mcpgate/gateway/fault"
	"github.com/mcpgate/gateway/mcp"
	"github.com/mcpgate/gateway/metrics"
	"github.com/mcpgate/gateway/upstream"
	"github.com/prometheus/client_golang/prometheus"
)

// Server is the built-in upstream. It implements upstream.Upstream.
type Server struct {
	name      string
	jobs      chan job
	done      chan struct{}
	closed    atomic.Bool
	closeOnce sync.Once
	wg        sync.WaitGroup
	m         *metrics.Metrics // nil: panics are not counted
	log       *slog.Logger     // nil: slog.Default()
	// requests is gateway_upstream_requests_total{upstream=name}, resolved
	// once (an atomic add per message, inline path included); nil without m.
	requests prometheus.Counter
}

// Option configures a Server.
type Option func(*Server)

// WithMetrics counts the messages handed to the server
// (gateway_upstream_requests_total) and the panics it recovers from
// (gateway_panics_total{site="builtin"}).
func WithMetrics(m *metrics.Metrics) Option { return func(s *Server) { s.m = m } }

// WithLogger is where recovered panics are logged (default slog.Default()).
func WithLogger(log *slog.Logger) Option { return func(s *Server) { s.log = log } }

type job struct {
	sess *session
	msg  []byte
}

// New starts a server with workers goroutines (0 means GOMAXPROCS) reading
// from one queue of queueDepth messages (0 means 4096).
//
// A panic while answering one message (SPEC 10) is recovered: it is
// counted and logged (package fault), the connection the message came from
// is closed with 1011 "Internal error", and the worker goes on with the
// next message.
func New(name string, workers, queueDepth int, opts ...Option) *Server {
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	if queueDepth <= 0 {
		queueDepth = 4096
	}
	s := &Server{
		name: name,
		jobs: make(chan job, queueDepth),
		done: make(chan struct{}),
	}
	for _, o := range opts {
		o(s)
	}
	if s.m != nil {
		s.requests = s.m.UpstreamRequests.WithLabelValues(name)
	}
	s.wg.Add(workers)
	for range workers {
		go s.work()
	}
	return s
}

// Name returns the configured upstream name.
func (s *Server) Name() string { return s.name }

// Open starts the server side of one client connection. It does not block.
func (s *Server) Open(sink upstream.Sink) (upstream.Session, error) {
	if s.closed.Load() {
		return nil, upstream.ErrClosed
	}
	return &session{srv: s, sink: sink}, nil
}

// Close stops the workers and waits for them; no Deliver happens after it
// returns. Messages still queued are dropped (their buffers recycled).
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		s.closed.Store(true)
		close(s.done)
		s.wg.Wait()
		for {
			select {
			case j := <-s.jobs:
				upstream.PutBuffer(j.msg)
			default:
				return
			}
		}
	})
	return nil
}

// replyBufMax bounds the reply buffer a worker keeps between jobs, so that one
// huge batch does not pin memory for the life of the worker.
const replyBufMax = 1 << 20

func (s *Server) work() {
	defer s.wg.Done()
	out := make([]byte, 0, 4096)
	for {
		select {
		case <-s.done:
			return
		case j := <-s.jobs:
			out = s.serve(out, j)
			if cap(out) > replyBufMax {
				out = make([]byte, 0, 4096)
			}
		}
	}
}

// serve answers one queued message on a worker goroutine and returns the
// reply buffer to reuse. A panic is the message's connection's alone: it
// is closed with 1011 and the worker carries on.
func (s *Server) serve(out []byte, j job) (reuse []byte) {
	msg := j.msg // nil once given back: a panic in Deliver must not put it twice
	defer func() {
		if r := recover(); r != nil {
			s.panicked(j.sess, r)
			if msg != nil {
				upstream.PutBuffer(msg)
			}
			reuse = make([]byte, 0, 4096) // the reply was cut short
		}
	}()
	if j.sess.closed.Load() {
		upstream.PutBuffer(msg)
		return out
	}
	out = s.Handle(out[:0], msg)
	upstream.PutBuffer(msg)
	msg = nil
	// Checked again after the work, and after Close set the flag,
	// so that no Deliver starts once Close has returned.
	if len(out) > 0 && !j.sess.closed.Load() && !s.closed.Load() {
		j.sess.sink.Deliver(out)
	}
	return out
}

// panicked counts and logs a panic recovered while answering a message of
// ss, and closes its connection (1011) unless it or the server is gone.
func (s *Server) panicked(ss *session, r any) {
	fault.Recovered(s.m, s.log, fault.SiteBuiltin, r)
	if !ss.closed.Load() && !s.closed.Load() {
		ss.sink.Fail(fault.Code, fault.Reason)
	}
}

// session is one client connection's state: only where replies go. The
// server keeps no per-session protocol state (like the reference server, it
// answers requests that were not preceded by initialize).
type session struct {
	srv    *Server
	sink   upstream.Sink
	closed atomic.Bool
}

// Send queues msg without blocking. Replies to messages of one session may
// come back in any order when there are several workers, as JSON-RPC allows.
func (ss *session) Send(msg []byte) error {
	if ss.closed.Load() || ss.srv.closed.Load() {
		return upstream.ErrClosed
	}
	select {
	case ss.srv.jobs <- job{sess: ss, msg: msg}:
		ss.srv.count()
		return nil
	default:
		return upstream.ErrBusy
	}
}

// Close marks the session gone; queued messages of it are skipped.
func (ss *session) Close() { ss.closed.Store(true) }

// InlineMax is the largest message the builtin server answers on the
// caller's goroutine (HandleInline); bigger ones go through the workers, so
// that an event loop never spends long on one message.
const InlineMax = 16 << 10

// HandleInline answers small messages at once (upstream.Inline), from the
// caller's scan of msg.
// A panic is recovered here, on the event loop: nothing is answered and the
// connection is closed with 1011 (the loop goes on).
func (ss *session) HandleInline(dst, msg []byte, env mcp.Envelope) (reply []byte, ok bool) {
	if len(msg) > InlineMax || ss.closed.Load() || ss.srv.closed.Load() {
		return dst, false
	}
	start := len(dst)
	defer func() {
		if r := recover(); r != nil {
			ss.srv.panicked(ss, r)
			reply, ok = dst[:start], true
		}
	}()
	ss.srv.count()
	return ss.srv.handleScanned(dst, msg, &env, nil), true
}

func (s *Server) count() {
	if s.requests != nil {
		s.requests.Inc()
	}
}
