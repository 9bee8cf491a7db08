package httpup

import (
	"context"
	"io"
	"mime"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mcpgate/gateway/fault"
	"github.com/mcpgate/gateway/mcp"
	"github.com/mcpgate/gateway/upstream"
	"github.com/mcpgate/gateway/upstream/pool"
)

// Session states (session mode).
const (
	stNew   = iota
	stInit  // initialize sent; later messages wait for its Mcp-Session-Id
	stReady // messages go out in order, each on its own POST
	stDead  // the upstream session is lost; the connection was failed
)

// session is one client connection.
type session struct {
	u      *Upstream
	route  *pool.Route
	table  pool.Table // session mode: the calls of this connection
	rt     pool.Routing
	ctx    context.Context // cancelled when the connection ends
	cancel context.CancelFunc
	n      atomic.Int32 // exchanges in flight

	mu      sync.Mutex
	mode    pool.Mode
	state   int
	tgt     *target // session mode: the URL the session lives on
	sid     string
	version string
	queue   []*exch
	last    <-chan struct{} // written signal of the last exchange launched
	closed  bool
}

// Send hands one client message over without blocking: each message
// becomes an HTTP exchange on a goroutine of its own. On error the caller
// keeps msg.
func (s *session) Send(msg []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || s.state == stDead || s.route.Failed() {
		return upstream.ErrClosed
	}
	if s.mode == pool.ModeUnknown {
		s.mode = pool.Detect(msg)
		if s.mode == pool.ModeSession {
			s.rt = pool.Routing{Table: &s.table, Session: s.route, Back: s.back, Stats: s.u.st, Log: s.u.log}
		}
	}
	p := pool.Prepare(s.route, msg, s.mode)
	n := len(p.Out)
	if n == 0 {
		s.finish(msg, &p)
		return nil
	}
	if int(s.n.Load())+n > perSession || !s.u.begin(n) {
		p.Release()
		return upstream.ErrBusy
	}
	s.n.Add(int32(n))
	for _, o := range p.Out {
		e := &exch{out: o}
		if o.Call != nil {
			// Its timeout is the call's timer, which a listen request has not.
			e.ctx, e.cancel = context.WithCancel(s.ctx)
		} else {
			e.ctx, e.cancel = context.WithTimeout(s.ctx, s.u.timeout)
		}
		if c := o.Call; c != nil {
			c.Worker = e
			s.u.st.Request()
			if s.mode == pool.ModeSession {
				s.table.Add(c, s.u.timeout, s.u.onTimeout)
			} else {
				s.u.table.Add(c, s.u.timeout, s.u.onTimeout)
			}
		}
		if s.mode == pool.ModeRequest {
			if o.Cancel != nil {
				s.u.table.Cancel(o.Cancel)
			}
			s.u.wg.Add(1)
			go s.u.dispatch(s, e)
			continue
		}
		if o.Cancel != nil {
			s.table.Cancel(o.Cancel)
		}
		switch s.state {
		case stNew:
			s.state = stInit
			s.u.wg.Add(1)
			go s.initialize(e)
		case stInit:
			s.queue = append(s.queue, e)
		default:
			s.launch(e)
		}
	}
	s.finish(msg, &p)
	return nil
}

func (s *session) finish(msg []byte, p *pool.Prepared) {
	if !p.Own {
		upstream.PutBuffer(msg)
	}
	p.Batch.Seal()
	if p.Reply != nil {
		go s.route.Deliver(p.Reply) // never call the Sink from Send
	}
}

// release gives back what an exchange held.
func (s *session) release(e *exch) {
	e.written()
	e.cancel()
	upstream.PutBuffer(e.out.Msg)
	s.n.Add(-1)
	s.u.end(1)
}

// launch starts an exchange of a ready session (s.mu held). It goes out
// once the one before it has been written: the upstream sees the client's
// order, while slow requests still run side by side.
func (s *session) launch(e *exch) {
	e.prev = s.last
	e.wrote = make(chan struct{})
	s.last = e.wrote
	s.u.wg.Add(1)
	go s.run(e)
}

func (s *session) run(e *exch) {
	defer s.u.wg.Done()
	defer s.release(e)
	defer s.recoverSession()
	if e.prev != nil {
		select {
		case <-e.prev:
		case <-e.ctx.Done():
			return
		}
	}
	// tgt, sid and version are fixed before the first launch.
	e.setDest(s.tgt, s.sid, s.version)
	a := s.u.post(e.ctx, e, s.tgt, s.sid, s.version, &s.rt, nil)
	e.written()
	s.settle(e, a)
}

// settle acts on how a session-mode exchange ended.
func (s *session) settle(e *exch, a answer) {
	call := e.out.Call
	if a.err == nil {
		s.u.markUp(s.tgt)
	}
	switch {
	case a.err != nil && e.ctx.Err() != nil:
		// Cancelled: whoever cancelled it (timeout, close, death) answered.
	case a.err != nil && isDial(a.err):
		// The server the session lives on is gone, and the session with it.
		s.u.markDown(s.tgt, a.err)
		s.die("session_lost", 1011, pool.MsgWorkerDied)
	case a.err != nil:
		s.u.st.Error(errKind(a.err))
		s.fail(call, "Upstream request failed")
	case a.status == http.StatusNotFound && s.sid != "":
		s.die("session_lost", 1011, pool.MsgWorkerDied) // the upstream no longer knows the session
	case a.status/100 != 2:
		s.u.st.Error("status")
		if call != nil && s.table.Remove(call) {
			replyStatus(call, a.status, a.body)
		}
	case a.status != http.StatusAccepted:
		// A 202 to a request may be answered on the GET stream; any other
		// answer that ended without the response will not be.
		s.fail(call, "Upstream closed the stream without answering")
	}
	if c := e.out.Cancel; c != nil {
		c.Worker.(*exch).cancel() // the request was cancelled: stop reading its stream
	}
}

// fail answers call -32603 if it is still in flight.
func (s *session) fail(call *pool.Call, msg string) {
	if call != nil && s.table.Remove(call) {
		call.ReplyError(mcp.CodeInternal, msg)
	}
}

// initialize opens the upstream session: it POSTs the client's initialize
// to the first URL that takes it, keeps the Mcp-Session-Id and the version
// the server chose, then lets the queued messages go.
func (s *session) initialize(e *exch) {
	defer s.u.wg.Done()
	defer s.release(e)
	defer s.recoverSession()
	call := e.out.Call
	var version string
	observe := func(m []byte) {
		env, err := mcp.Scan(m)
		if err != nil || env.Kind != mcp.KindResponse || env.Result == nil || call == nil {
			return
		}
		if gid, ok := pool.ParseGID(env.ID); ok && gid == call.GID {
			if v, ok := mcp.Lookup(env.Result, "protocolVersion"); ok {
				if u, ok := mcp.AppendUnquote(nil, v); ok {
					version = string(u)
				}
			}
		}
	}
	var tried uint64
	var a answer
	var t *target
	for {
		if t = s.u.pick(tried); t == nil {
			// Every URL refused the connection.
			s.u.st.Error("no_worker")
			if call != nil && s.table.Remove(call) {
				call.Unavailable(pool.RetryAfter)
			}
			s.die("", 1013, pool.MsgNoWorker)
			return
		}
		tried |= s.u.index(t)
		a = s.u.post(e.ctx, e, t, "", "", &s.rt, observe)
		if a.err != nil && e.ctx.Err() == nil && isDial(a.err) {
			s.u.markDown(t, a.err)
			continue
		}
		break
	}
	if a.err != nil && e.ctx.Err() != nil {
		// The session never started (or the client left).
		s.die("", 1011, pool.MsgWorkerDied)
		return
	}
	s.mu.Lock()
	s.tgt, s.sid, s.version = t, a.sid, version
	if s.closed {
		s.mu.Unlock()
		s.deleteSession(t, a.sid, version)
		return
	}
	s.state = stReady
	for _, q := range s.queue {
		s.launch(q)
	}
	s.queue = nil
	s.mu.Unlock()
	s.settle(e, a)
	if a.sid != "" && a.err == nil && a.status/100 == 2 {
		s.u.wg.Add(1)
		go s.listen()
	}
}

// die ends a session whose upstream side is lost: each request in flight
// gets -32603, then the connection is failed with code (1011, or 1013 when
// no URL took the session).
func (s *session) die(kind string, code uint16, reason string) {
	s.mu.Lock()
	if s.state == stDead || s.closed {
		s.mu.Unlock()
		return
	}
	s.state = stDead
	queued := s.queue
	s.queue = nil
	s.mu.Unlock()
	s.cancel()
	for _, e := range queued {
		s.release(e)
	}
	if kind != "" {
		s.u.st.Error(kind)
		s.u.log.Warn("upstream session lost", "upstream", s.u.name, "kind", kind)
	}
	for _, c := range s.table.TakeAll() {
		c.Died()
	}
	s.route.Fail(code, reason)
}

// back sends a message of the session to the server (a refusal the pool
// makes; in session mode server requests go to the client instead).
func (s *session) back(msg []byte) {
	s.mu.Lock()
	t, sid, version := s.tgt, s.sid, s.version
	s.mu.Unlock()
	if t != nil {
		s.u.notify(t, sid, version, msg)
	}
}

// listen keeps the session's GET stream open: the server sends on it what
// belongs to no request (server requests, list changes, logging). It
// reconnects with Last-Event-ID after a drop.
func (s *session) listen() {
	defer s.u.wg.Done()
	defer s.recoverSession()
	backoff := 500 * time.Millisecond
	var lastID string
	scratch := make([]byte, 0, 4096)
	for s.ctx.Err() == nil {
		req, err := http.NewRequestWithContext(s.ctx, http.MethodGet, s.tgt.url, nil)
		if err != nil {
			return
		}
		req.Header.Set("Accept", "text/event-stream")
		req.Header.Set("Mcp-Session-Id", s.sid)
		if s.version != "" {
			req.Header.Set("Mcp-Protocol-Version", s.version)
		}
		if lastID != "" {
			req.Header.Set("Last-Event-ID", lastID)
		}
		resp, err := s.u.client.Do(req)
		switch {
		case err != nil && s.ctx.Err() != nil:
			return
		case err != nil && isDial(err):
			s.u.markDown(s.tgt, err)
			s.die("session_lost", 1011, pool.MsgWorkerDied)
			return
		case err != nil:
		case resp.StatusCode == http.StatusNotFound:
			resp.Body.Close()
			s.die("session_lost", 1011, pool.MsgWorkerDied)
			return
		case resp.StatusCode == http.StatusOK:
			ct, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
			if ct == "text/event-stream" {
				backoff = 500 * time.Millisecond
				ev := newSSE(resp.Body)
				for {
					data, err := ev.next()
					if err != nil {
						break
					}
					fault.Hit("http.listen")
					scratch = s.rt.FromWorker(scratch, data)
				}
				lastID = ev.lastID
			}
			resp.Body.Close()
		case resp.StatusCode/100 == 4 && resp.StatusCode != http.StatusConflict && resp.StatusCode != http.StatusTooManyRequests:
			// 405 and kin: this server offers no GET stream.
			_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
			resp.Body.Close()
			return
		default:
			resp.Body.Close()
		}
		select {
		case <-s.ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 30*time.Second)
	}
}

// Close says the client left: exchanges stop, and the upstream session is
// DELETEd. In request mode, the server is told of the requests dropped.
func (s *session) Close() {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.closed = true
	t, sid, version := s.tgt, s.sid, s.version
	queued := s.queue
	s.queue = nil
	mode := s.mode
	s.mu.Unlock()
	calls := s.route.Close()
	s.u.forget(s)
	if mode == pool.ModeRequest {
		for _, c := range calls {
			if s.u.table.Remove(c) {
				if ct, csid, cver := c.Worker.(*exch).dest(); ct != nil {
					var buf [160]byte
					s.u.notify(ct, csid, cver, pool.AppendCancel(buf[:0], c.GID, "client disconnected"))
				}
			}
		}
	}
	s.cancel()
	for _, e := range queued {
		s.release(e)
	}
	s.table.TakeAll()
	if sid != "" {
		s.deleteSession(t, sid, version)
	}
}

// deleteSession ends the upstream session in the background.
func (s *session) deleteSession(t *target, sid, version string) {
	if t == nil || sid == "" {
		return
	}
	s.u.wg.Add(1)
	go func() {
		defer s.u.wg.Done()
		defer s.u.recoverQuiet()
		s.u.delete(t, sid, version)
	}()
}
