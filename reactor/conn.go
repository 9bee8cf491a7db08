package reactor

import (
	"context"
	"github.com/mcpgate/gateway/clock"
	"math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gobwas/ws"
	"github.com/panjf2000/gnet/v2"

	"github.com/mcpgate/gateway/auth"
	"github.com/mcpgate/gateway/config"
	"github.com/mcpgate/gateway/fault"
	"github.com/mcpgate/gateway/frame"
	"github.com/mcpgate/gateway/mcp"
	"github.com/mcpgate/gateway/ratelimit"
	"github.com/mcpgate/gateway/session"
	"github.com/mcpgate/gateway/tlsconn"
	"github.com/mcpgate/gateway/upstream"
)

// conn is one client connection: its session record, frame reader and
// upstream session. Fields without atomics belong to the connection's loop.
type conn struct {
	sess session.Session
	rd   frame.Reader
	gc   gnet.Conn
	srv  *Server
	up   upstream.Session
	// inline is up when it can answer on the loop (upstream.Inline), found
	// once when up is set rather than asserted on every message.
	inline upstream.Inline

	tc    *tlsconn.Conn // nil for plaintext
	plain []byte        // decrypted input not yet consumed (TLS only)

	dead          atomic.Bool  // OnClose ran; workers stop delivering
	stopOut       atomic.Bool  // the connection is ending: workers stop delivering
	out           outQueue     // written, not yet taken by the kernel (outq.go)
	inflight      atomic.Int32 // requests relayed and not yet answered
	relayed       atomic.Int64 // their bytes, about (relayRoom)
	draining      atomic.Bool  // drain protocol: -31000 to requests, 1001 once quiet (drainDue)
	lastAnswer    atomic.Int64 // draining: when an in-flight request was last answered (ns)
	drainFrom     int64        // draining: when the drain of this connection began (ns)
	drainMsg      int64        // draining: when a message last arrived (ns)
	drainPing     int64        // draining: when the flush ping went out (ns), 0 if none
	drainPong     int64        // draining: when its pong came back (ns), 0 if not yet
	drainQuiet    int64        // draining: how long it must be quiet before its 1001 (ns)
	rebalanced    bool         // asked to reconnect by rebalancing (Server.reconnecting)
	authed        atomic.Bool  // authenticated (Open or later): Reconnect's candidates
	closeReason   string
	closeCode     uint16
	status        int16  // HTTP status answered to the upgrade (101 on success)
	reject        int16  // status decided at accept time, sent once the request is in
	refusal       string // why a request was refused (a constant: no secret, no client bytes), for the close line
	retryAfter    int16
	counted       bool  // holds a per-IP slot
	pending       bool  // counted in pending-auth (until authenticated or closed)
	needProxy     bool  // a PROXY header from a trusted balancer comes first
	admitLater    bool  // a trusted proxy: admit once X-Forwarded-For is read
	async         bool  // an off-loop step (ticket store) is running; read nothing
	shutting      bool  // shut ran: a close is done or queued; read nothing
	tlsFull       bool  // pumpTLS stopped at the decrypted-input cap
	flushUntil    int64 // closing: everything must be in the kernel by then (ns)
	lastInput     int64 // when bytes last arrived (ns; OnTraffic)
	discarded     int64 // bytes read and dropped since shut
	lingerUntil   int64 // half-closed: close by then if the client has not (ns)
	noLinger      bool  // after a 431: read nothing more while lingering
	ticketChecked bool
	preAuthFrames uint8            // frames read before authentication (at most config.PreAuthFrames)
	frames        ratelimit.Window // frames_per_connection once authenticated
	msgStart      int64            // when the message now incomplete began (ns), 0 if none
	ticketSubject string
	closedBy      string // "server" or "client"
}

// onTraffic reads as many complete frames as are buffered. A TLS connection
// whose decrypted input reached its cap is pumped again as soon as the reader
// has made room, rather than at the next socket read, which may never come.
func (c *conn) onTraffic() gnet.Action {
	c.lastInput = clock.Now()
	if c.shutting {
		in, _ := c.gc.Peek(-1)
		if len(in) > 0 {
			_, _ = c.gc.Discard(len(in))
			c.discarded += int64(len(in))
			if c.floodingClose() {
				return gnet.Close
			}
		}
		return gnet.None
	}
	act := c.traffic()
	for act == gnet.None && c.tlsFull && !c.async && !c.shutting &&
		(c.plain == nil || len(c.plain) < cap(c.plain)) {
		act = c.traffic()
	}
	return act
}

func (c *conn) traffic() gnet.Action {
	if c.async {
		// Bytes stay buffered until the off-loop step returns, within a cap:
		// a client that pipelines more than an upgrade and an auth message
		// is cut rather than buffered without bound (SPEC 10).
		if c.gc.InboundBuffered() > c.srv.lim().asyncCap {
			c.srv.m.Rejected.WithLabelValues("async_overflow").Inc()
			c.sess.State = session.Closing
			return gnet.Close
		}
		return gnet.None
	}
	now := c.lastInput // set by onTraffic, just now
	if c.sess.State == session.Handshake && c.tc == nil || c.needProxy {
		if act, ok := c.proxyHeader(now); !ok {
			return act
		}
	}
	if c.tc != nil && !c.pumpTLS() {
		return gnet.Close
	}
	if c.sess.State == session.Handshake {
		done, act := c.handshake(now)
		if !done {
			return act
		}
	}
	if c.sess.State == session.Closing {
		c.consume(-1)
		return gnet.None
	}
	in := c.input()
	if len(in) == 0 {
		return gnet.None
	}
	c.sess.LastSeen = now
	consumed := 0
	for len(in) > 0 {
		limit := c.srv.lim().maxMsg
		if c.sess.State != session.Open {
			limit = c.srv.lim().maxPreAuth
		}
		mid := c.rd.InFrame() // more of a frame counted when it began
		ev, n, err := c.rd.Next(in, limit)
		if err != nil {
			ce, _ := err.(*frame.CloseError)
			code, reason := ws.StatusProtocolError, "Protocol error"
			if ce != nil {
				code, reason = ce.Code, ce.Reason
			}
			switch code {
			case ws.StatusMessageTooBig:
				c.srv.m.Rejected.WithLabelValues("too_big").Inc()
			case frame.StatusTryAgainLater:
				c.srv.m.Rejected.WithLabelValues("buffer_budget").Inc()
			}
			c.consume(-1)
			return c.fail(code, reason)
		}
		if n == 0 {
			break
		}
		in = in[n:]
		consumed += n
		if !mid && !c.frameAllowed(now) {
			c.srv.m.RateLimit.WithLabelValues("frames", "deny").Inc()
			c.consume(-1)
			return c.fail(ws.StatusPolicyViolation, "Rate limit exceeded")
		}
		if ev.Kind != frame.None && !c.rd.Open() {
			c.msgStart = 0 // a message (or a control frame) is complete
		}
		if act := c.onEvent(&ev, now); act != gnet.None {
			c.consume(-1)
			return act
		}
	}
	c.consume(consumed)
	c.timeMessage(now, len(in) > 0 || c.rd.Open())
	return gnet.None
}

// frameAllowed counts one frame (SPEC 10): every frame, control frames and
// empty fragments included, at most config.PreAuthFrames before
// authentication, then ratelimit.frames_per_connection.
func (c *conn) frameAllowed(now int64) bool {
	if c.sess.State != session.Open {
		if c.preAuthFrames >= config.PreAuthFrames {
			return false
		}
		c.preAuthFrames++
		return true
	}
	l := c.srv.lim().frames
	return !l.Enabled() || c.frames.Allow(now, l.N, int64(l.Window))
}

// timeMessage starts the message_timeout clock when bytes of an incomplete
// message are held (a partial frame, or an open fragmented message) and
// none was running; trickled bytes do not move it. The sweeper closes the
// connection 1008 "Message timeout" at msgStart + message_timeout.
func (c *conn) timeMessage(now int64, partial bool) {
	if !partial {
		c.msgStart = 0
		return
	}
	if c.msgStart != 0 {
		return
	}
	c.msgStart = now
	due := now + c.srv.lim().msgTimeout
	if dl := c.sess.Deadline.Load(); dl == 0 || dl > due {
		c.sess.Deadline.Store(due)
	}
}

func (c *conn) onEvent(ev *frame.Event, now int64) gnet.Action {
	switch ev.Kind {
	case frame.Text:
		act := c.onText(ev.Payload, now)
		c.rd.Release()
		return act
	case frame.Binary:
		c.srv.m.Rejected.WithLabelValues("binary").Inc()
		return c.fail(ws.StatusUnsupportedData, "Binary messages are not supported")
	case frame.Ping:
		b := getBuf(frame.MaxHeaderLen(len(ev.Payload)) + len(ev.Payload))
		*b = frame.AppendPong((*b)[:0], ev.Payload)
		act := c.write(*b)
		putBuf(b)
		return act
	case frame.Pong:
		c.sess.PingSent = 0
		if c.drainPing != 0 && c.drainPong == 0 && string(ev.Payload) == drainPingPayload {
			c.drainPong = now // everything sent before it is read (drainStep)
			c.wakeBy(now + int64(DrainAfterPong))
		}
	case frame.Close:
		code := ev.CloseCode
		if code == ws.StatusNoStatusRcvd {
			code = ws.StatusNormalClosure
		}
		c.closedBy = "client"
		c.closeCode = uint16(ev.CloseCode)
		c.closeReason = string(ev.CloseReason)
		c.sess.State = session.Closing
		var buf [4]byte
		c.send(frame.AppendClose(buf[:0], code, ""))
		return gnet.Close
	}
	return gnet.None
}

func (c *conn) onText(msg []byte, now int64) gnet.Action {
	s := c.srv
	fault.Hit("loop.text")
	if c.sess.State == session.PendingAuth {
		token, v := session.ParseAuth(msg)
		if v == session.AuthAccepted {
			p, err := s.opt.Verifier.Verify(token)
			if err == nil {
				if !c.authenticated(now, p.Subject) {
					return gnet.Close
				}
				b := getBuf(64)
				*b = frame.AppendText((*b)[:0], session.AppendAuthOK(nil, c.sess.ID()))
				act := c.write(*b)
				putBuf(b)
				return act
			}
			s.m.AuthFailures.WithLabelValues(auth.Reason(err)).Inc()
			v = session.AuthRejected
		} else if v == session.AuthNotJSON {
			s.m.AuthFailures.WithLabelValues("not_json").Inc()
		} else {
			s.m.AuthFailures.WithLabelValues("not_auth_frame").Inc()
		}
		code, reason := v.CloseFor()
		return c.fail(code, reason)
	}
	if c.sess.State != session.Open {
		return gnet.None
	}
	c.sess.MsgsIn++
	env, err := mcp.Scan(msg)
	// Every message of a batch counts against the limits as if it came
	// alone (SPEC 10): a batch of k elements counts k. One refused whole
	// (too long, empty, invalid) counts as the one message it is.
	count, requests, elems := 1, int32(0), 0
	maxBatch := s.maxBatch()
	switch {
	case err == nil && env.Kind == mcp.KindRequest:
		requests = 1
	case err == nil && env.Kind == mcp.KindBatch:
		var reqs int
		elems, reqs = mcp.CountBatch(msg, maxBatch)
		if elems > 0 && elems <= maxBatch {
			count, requests = elems, int32(reqs)
		}
	}
	if l := s.lim().perConn; l.Enabled() {
		// All of a batch or none: a batch that does not fit closes the
		// connection as a single message over the limit does.
		if ok, _ := c.sess.Rate.AllowN(now, count, l.N, int64(l.Window)); !ok {
			s.m.RateLimit.WithLabelValues("connection", "deny").Inc()
			return c.fail(ws.StatusPolicyViolation, "Rate limit exceeded")
		}
	}
	switch err {
	case nil:
	case mcp.ErrParse:
		s.m.Rejected.WithLabelValues("parse_error").Inc()
		return c.replyError(nil, mcp.CodeParseError, "Parse error", nil)
	default:
		s.m.Rejected.WithLabelValues("invalid_request").Inc()
		return c.replyError(env.ID, mcp.CodeInvalidRequest, "Invalid Request", nil)
	}
	switch {
	case env.Kind == mcp.KindBatch:
		s.m.RequestBatch()
	case env.MethodEscaped:
		s.m.Request(nil) // other: labels are never decoded from client bytes
	case env.Method != nil:
		s.m.Request(env.Method)
	}
	if env.Kind == mcp.KindBatch {
		switch {
		case elems > maxBatch:
			// Refused whole, nothing forwarded: one error with id null,
			// as JSON-RPC 2.0 answers a batch that fails as a whole.
			s.m.Rejected.WithLabelValues("batch_too_long").Inc()
			return c.replyError(nil, mcp.CodeInvalidRequest, "Invalid Request", maxBatchData(maxBatch))
		case elems == 0: // [] is not a batch but an invalid request
			s.m.Rejected.WithLabelValues("invalid_request").Inc()
			return c.replyError(nil, mcp.CodeInvalidRequest, "Invalid Request", nil)
		}
	}
	if !c.draining.Load() && s.draining.Load() {
		c.enterDrain() // admitted as the drain began (see Drain)
	}
	if c.draining.Load() {
		// Every request still gets an answer before the 1001: new ones are
		// refused here, each request of a batch with its own error;
		// in-flight ones are waited for.
		// The 1001 waits until the client has been quiet for drainQuiet
		// after this answer (drainDue): a client that stops sending on
		// -31000 may have more requests on the wire, and each of them is
		// answered too rather than read after the close and dropped.
		act := c.refuseMsg(msg, &env, mcp.CodeReconnect, "Reconnect", retryAfterMS(time.Second))
		c.drainMsg = now
		c.wakeBy(now + c.drainQuiet)
		return act
	}
	if sl := s.opt.SubjectLimiter; sl != nil {
		if ok, retry := sl.AllowNAt(c.sess.Subject, count, now); !ok {
			s.m.RateLimit.WithLabelValues("subject", "deny").Inc()
			if ok, held := s.denialLog.allow(now); ok {
				s.log.Warn("rate limited", "limiter", "subject", "subject", c.sess.Subject,
					"session", c.sess.ID(), "requests", count, "retry_after_ms", retry.Milliseconds(),
					"not_logged_since_last", held)
			}
			// Each request gets -31029; notifications and responses are
			// dropped.
			return c.refuseMsg(msg, &env, mcp.CodeRateLimited, "Rate limit exceeded", retryAfterMS(retry))
		}
	}
	if in := c.inline; in != nil {
		b := getBuf(4096)
		// Leave room for the frame header, then frame the reply in place.
		reply, handled := in.HandleInline((*b)[:frame.MaxHeaderSize], msg, env)
		if handled {
			act := gnet.None
			if len(reply) > frame.MaxHeaderSize {
				act = c.writeReply(reply)
				c.sess.MsgsOut.Add(1)
				s.m.MessagesOut.Inc()
			}
			*b = reply[:0]
			putBuf(b)
			s.m.MessagesIn.Inc()
			return act
		}
		putBuf(b)
	}
	if !c.relayRoom(requests, len(msg)) {
		// Asking faster than it reads: refused like a busy upstream.
		s.m.UpstreamErrors.WithLabelValues(s.route(c.sess.RouteIdx).Upstream.Name(), "busy").Inc()
		return c.refuseMsg(msg, &env, mcp.CodeUpstreamUnavailable, "Upstream unavailable", retryAfterMS(time.Second))
	}
	c.inflight.Add(requests)
	buf := upstream.GetBuffer(len(msg))
	copy(buf, msg)
	if err := c.up.Send(buf); err != nil {
		upstream.PutBuffer(buf) // not taken: the caller keeps it (upstream.Session)
		c.inflight.Add(-requests)
		s.m.UpstreamErrors.WithLabelValues(s.route(c.sess.RouteIdx).Upstream.Name(), "busy").Inc()
		return c.refuseMsg(msg, &env, mcp.CodeUpstreamUnavailable, "Upstream unavailable", retryAfterMS(time.Second))
	}
	s.m.MessagesIn.Inc()
	return gnet.None
}

// authenticated moves the connection to Open and gives it its upstream session.
func (c *conn) authenticated(now int64, subject string) bool {
	s := c.srv
	s.table.SetSubject(&c.sess, subject) // before Open: pools share by subject
	up, err := s.route(c.sess.RouteIdx).Upstream.Open(c)
	if err != nil {
		c.srv.m.UpstreamErrors.WithLabelValues(s.route(c.sess.RouteIdx).Upstream.Name(), "open").Inc()
		c.fail(ws.StatusCode(1013), "No worker available")
		return false
	}
	c.up = up
	c.inline, _ = up.(upstream.Inline)
	c.sess.State = session.Open
	c.authed.Store(true)
	s.routeUse[c.sess.RouteIdx].Add(1)
	if c.pending {
		c.pending = false
		s.pending.Add(-1)
		s.m.PendingAuth.Dec()
	}
	c.sess.LastSeen = now
	c.sess.Deadline.Store(now + s.lim().ping)
	s.log.Info("conn open", "remote", c.sess.Remote.String(), "subject", subject,
		"route", s.route(c.sess.RouteIdx).Path, "session", c.sess.ID())
	return true
}

// replyError answers one message with a JSON-RPC error (id nil: null).
func (c *conn) replyError(id []byte, code int, msg string, data []byte) gnet.Action {
	b := getBuf(frame.MaxHeaderSize + 128 + len(id) + len(msg) + len(data))
	out := mcp.AppendError((*b)[:frame.MaxHeaderSize], id, code, msg, data)
	act := c.write(frame.TextInPlace(out, frame.MaxHeaderSize))
	*b = out[:0]
	putBuf(b)
	return act
}

// refuseMsg answers a message the gateway does not forward (drain, per_subject
// limit, busy upstream; SPEC 10): a request gets the error, a batch one
// array with the error for each of its requests under the request's own
// id (mcp.AppendBatchError); notifications and responses get nothing.
func (c *conn) refuseMsg(msg []byte, env *mcp.Envelope, code int, text string, data []byte) gnet.Action {
	switch env.Kind {
	case mcp.KindRequest:
		return c.replyError(env.ID, code, text, data)
	case mcp.KindBatch:
		b := getBuf(frame.MaxHeaderSize + 4096)
		out := mcp.AppendBatchError((*b)[:frame.MaxHeaderSize], msg, code, text, data)
		act := gnet.None
		if len(out) > frame.MaxHeaderSize {
			act = c.write(frame.TextInPlace(out, frame.MaxHeaderSize))
		}
		*b = out[:0]
		putBuf(b)
		return act
	}
	return gnet.None
}

// maxBatch is limits.max_batch (read only for batches, which are rare).
func (s *Server) maxBatch() int {
	if n := s.opt.Config.Limits.MaxBatch; n > 0 {
		return n
	}
	return config.DefaultMaxBatch
}

// maxBatchData is the data of the answer to a batch over limits.max_batch.
func maxBatchData(n int) []byte {
	b := strconv.AppendInt([]byte(`{"max_batch":`), int64(n), 10)
	return append(b, '}')
}

// write sends bytes from the loop. gnet copies what the socket does not take
// at once into the connection's outbound buffer, which has no cap of its
// own: a reader that lets it grow past write_buffer_bytes is closed.
func (c *conn) write(b []byte) gnet.Action {
	c.send(b)
	if c.backlog() > c.backlogCap() {
		return c.failSlow()
	}
	return gnet.None
}

// Reply size and write cap agree (SPEC 10): write_buffer_bytes bounds both
// what a connection may have queued and the largest reply it is sent. A
// reply (an upstream's, or the builtin server's) whose frame is larger
// never goes out; each request it answers gets -32603 "Internal error"
// with data.reason "reply_too_large" instead (tooLarge), so a reading
// client gets an answer and is never cut as a slow consumer for one reply.
// Upstreams may send up to 64 MiB (stdio lines, HTTP bodies): raise
// write_buffer_bytes to relay replies that large.

// frameLen is the size of msg framed as one text message.
func frameLen(msg []byte) int64 { return int64(frame.MaxHeaderLen(len(msg)) + len(msg)) }

// backlogCap is write_buffer_bytes, against which backlog is judged. Over
// TLS the backlog is ciphertext: a reply of the full cap is allowed its
// records' overhead (22-29 bytes per record of at most 16 KiB, smaller
// records while a connection starts: under cap/256 + 8 KiB in all).
func (c *conn) backlogCap() int64 {
	w := c.srv.lim().writeCap
	if c.tc != nil {
		return w + w>>8 + 8<<10
	}
	return w
}

// tooLarge appends to dst the answer that replaces msg, a reply over
// write_buffer_bytes: an error for each response in it (one object, or an
// array for a batch; mcp.AppendResponseErrors). Server requests and
// notifications in it are dropped. It appends nothing when nothing is to
// be answered or the answer itself would not fit.
func (c *conn) tooLarge(dst, msg []byte) []byte {
	s := c.srv
	s.m.Rejected.WithLabelValues("reply_too_large").Inc()
	s.log.Warn("message over limits.write_buffer_bytes not sent; the requests it answers get -32603", "subject", c.sess.Subject,
		"session", c.sess.ID(), "bytes", len(msg), "write_buffer_bytes", s.lim().writeCap)
	var data [96]byte
	d := append(data[:0], `{"reason":"reply_too_large","reply_bytes":`...)
	d = strconv.AppendInt(d, int64(len(msg)), 10)
	d = append(d, `,"limit_bytes":`...)
	d = strconv.AppendInt(d, s.lim().writeCap, 10)
	d = append(d, '}')
	start := len(dst)
	dst = mcp.AppendResponseErrors(dst, msg, mcp.CodeInternal, "Internal error", d)
	if frameLen(dst[start:]) > s.lim().writeCap {
		return dst[:start] // a pathological batch of responses: dropped
	}
	return dst
}

// writeReply writes a reply built after frame.MaxHeaderSize bytes of room
// (framed in place), or its tooLarge answer.
func (c *conn) writeReply(reply []byte) gnet.Action {
	body := reply[frame.MaxHeaderSize:]
	if frameLen(body) <= c.srv.lim().writeCap {
		return c.write(frame.TextInPlace(reply, frame.MaxHeaderSize))
	}
	b := getBuf(frame.MaxHeaderSize + 4096)
	out := c.tooLarge((*b)[:frame.MaxHeaderSize], body)
	act := gnet.None
	if len(out) > frame.MaxHeaderSize {
		act = c.write(frame.TextInPlace(out, frame.MaxHeaderSize))
	}
	*b = out[:0]
	putBuf(b)
	return act
}

// failSlow closes a reader whose backlog passed write_buffer_bytes with 1008
// "Slow consumer": the close frame goes behind the backlog (it cannot jump
// it), later replies are dropped, and the socket closes once the backlog is
// written, or is cut after flushGrace (see shut).
func (c *conn) failSlow() gnet.Action {
	if c.sess.State == session.Closing {
		return gnet.None
	}
	c.srv.m.Rejected.WithLabelValues("slow_consumer").Inc()
	c.closedBy = "server"
	c.closeCode = uint16(ws.StatusPolicyViolation)
	c.closeReason = "Slow consumer"
	c.sess.State = session.Closing
	c.stopOut.Store(true)
	var buf [2 + 2 + 13]byte
	c.send(frame.AppendClose(buf[:0], ws.StatusPolicyViolation, "Slow consumer"))
	return c.shut()
}

// fail sends a close frame with code and reason and asks to close; the
// socket closes once the frame (and any reply queued before it) is written
// (see shut).
func (c *conn) fail(code ws.StatusCode, reason string) gnet.Action {
	if c.sess.State == session.Closing {
		return gnet.None // the close is under way (shut)
	}
	c.closedBy = "server"
	c.closeCode = uint16(code)
	c.closeReason = reason
	c.sess.State = session.Closing
	c.stopOut.Store(true) // no reply after the close frame
	var buf [2 + 2 + 125]byte
	c.send(frame.AppendClose(buf[:0], code, reason))
	return gnet.Close
}

// closeNow is fail for code running outside OnTraffic (deadlines, drain,
// revocation): it must be called on the connection's loop.
func (c *conn) closeNow(code ws.StatusCode, reason string) {
	if c.dead.Load() {
		return
	}
	if c.sess.State != session.Handshake {
		c.fail(code, reason)
	}
	c.closeSocket()
}

// runOnLoop schedules f on the connection's event loop.
func (c *conn) runOnLoop(f func()) {
	if c.dead.Load() {
		return
	}
	_ = c.gc.EventLoop().Execute(context.Background(), gnet.RunnableFunc(func(context.Context) error {
		if !c.dead.Load() {
			defer func() {
				if r := recover(); r != nil {
					if c.onPanic(r) == gnet.Close {
						c.closeSocket()
					}
				}
			}()
			f()
		}
		return nil
	}))
}

// Deliver is the upstream.Sink side: it frames one message from an upstream
// worker and queues it on the connection's loop. It runs on worker goroutines.
func (c *conn) Deliver(msg []byte) {
	if c.dead.Load() || c.stopOut.Load() {
		return // nothing may follow the close frame
	}
	answered := countResponses(msg)
	if frameLen(msg) > c.srv.lim().writeCap {
		// Too large to send: its requests are answered with errors.
		b := getBuf(1024)
		*b = c.tooLarge((*b)[:0], msg)
		defer putBuf(b) // msg is copied before Deliver returns
		msg = *b
	}
	n := frameLen(msg)
	if len(msg) > 0 && c.sess.OutPending.Load()+n > c.backlogCap() {
		c.runOnLoop(func() {
			if c.failSlow() == gnet.Close {
				_ = c.gc.EventLoop().Close(c.gc)
			}
		})
		return
	}
	if answered > 0 {
		left := c.inflight.Add(-answered)
		c.relayAnswered(answered, left)
		if left <= 0 && c.draining.Load() {
			// The last answer: the 1001 follows once the client has been
			// quiet for drainQuiet after it (drainDue, on the sweeper).
			now := clock.Now()
			c.lastAnswer.Store(now)
			c.wakeBy(now + c.drainQuiet)
		}
	}
	if len(msg) == 0 {
		return // nothing left to send (see tooLarge)
	}
	if c.tc != nil || len(msg) >= offReply {
		if !c.pushFrame(msg, c.backlogCap()) {
			c.refusedOut()
			return
		}
		c.sess.MsgsOut.Add(1)
		c.srv.m.MessagesOut.Inc()
		return
	}
	ob := outPool.Get().(*outBuf)
	ob.b = frame.AppendText(ob.b[:0], msg)
	// Queued for the loop (outq.go), within write_buffer_bytes exactly:
	// the check above may race with another worker's reply.
	if !c.pushOut(ob.b, ob, c.backlogCap()) {
		c.refusedOut()
		return
	}
	c.sess.MsgsOut.Add(1)
	c.srv.m.MessagesOut.Inc()
}

// outBuf is one framed reply on its way to the socket (outq.go).
type outBuf struct{ b []byte }

var outPool = sync.Pool{New: func() any { return &outBuf{b: make([]byte, 0, 1024)} }}

func (ob *outBuf) release() {
	if cap(ob.b) > 256<<10 {
		ob.b = make([]byte, 0, 1024) // don't park rare huge replies in the pool
	}
	outPool.Put(ob)
}

// retryAfterMS is the data of an answer that says when to try again.
func retryAfterMS(d time.Duration) []byte {
	b := strconv.AppendInt([]byte(`{"retry_after_ms":`), d.Milliseconds(), 10)
	return append(b, '}')
}

// The drain protocol (SPEC 4.4, 4.6), for every connection at SIGTERM
// (startDrain) and for the few a rebalancing node sheds (startReconnect):
// each request is answered -31000 "Reconnect"; requests in flight are
// answered as usual; the connection closes with 1001 "Going away" once
// nothing is in flight and no message has been received for drainQuiet
// after the last answer or request (drainDue), then a ping has been
// answered with nothing after its pong for DrainAfterPong (drainStep), or
// at drain_timeout (Drain). Pings and pongs do not hold it, a message
// partly received does. A client that stops sending on -31000 thus has
// every request answered: a request it sent before it read the -31000
// arrives within the grace and gets its own -31000. The ping flushes the
// path: whatever the client sent before it answered the ping (held up in a
// balancer, or in a client that stalled) arrives before the pong, and what
// a stalled client's writer sends as it wakes comes with it, so neither
// is read after the close. A client that answers no ping is closed
// DrainPongWait after it. drainQuiet is DrainQuiet plus a share of
// DrainSpread drawn per connection, so the closes of a node's connections
// are spread over the grace rather than sent in one sweep.
const (
	// DrainPongWait is how long a drained connection waits for the pong
	// to its flush ping.
	DrainPongWait = 2 * time.Second
	// DrainAfterPong is how long it must stay quiet after that pong.
	DrainAfterPong = time.Second

	// DrainQuiet is the least time a draining connection must be quiet
	// (nothing received, nothing in flight) before its 1001: longer than a
	// loopback or LAN round trip under load, short beside drain_timeout.
	DrainQuiet = time.Second
	// DrainSpread is the most added to DrainQuiet per connection.
	DrainSpread = time.Second
)

// startDrain runs on the loop at SIGTERM: a connection not yet open closes
// at once, an open one enters the drain protocol.
func (c *conn) startDrain() {
	if c.sess.State != session.Open {
		c.closeNow(ws.StatusGoingAway, "Going away")
		return
	}
	c.enterDrain()
}

// startReconnect runs on the loop when a rebalancing node asks this
// connection to move: the drain protocol for it alone. It reports whether
// the connection entered it (open, idle, not draining already).
func (c *conn) startReconnect() bool {
	if c.sess.State != session.Open || c.shutting || c.draining.Load() || c.inflight.Load() > 0 {
		return false
	}
	c.rebalanced = true
	c.srv.reconnecting.Add(1)
	c.enterDrain()
	return true
}

// enterDrain starts the drain protocol on an open connection (on its loop).
func (c *conn) enterDrain() {
	if c.draining.Load() {
		return
	}
	now := clock.Now()
	c.drainFrom = now
	c.drainQuiet = int64(DrainQuiet) + rand.Int64N(int64(DrainSpread)+1)
	c.draining.Store(true)
	c.wakeBy(now + c.drainQuiet)
}

// drainDue is when a draining connection with nothing in flight closes:
// drainQuiet after the last message received, the last answer or the
// drain's start; while a message is partly in, after its last bytes.
// On the loop.
func (c *conn) drainDue() int64 {
	last := max(c.drainFrom, c.drainMsg, c.lastAnswer.Load())
	if c.msgStart != 0 || c.rd.Open() {
		last = max(last, c.lastInput)
	}
	return last + c.drainQuiet
}

// drainPingPayload tells the drain's flush ping from a keepalive ping.
const drainPingPayload = "drain"

// drainStep runs on the loop for a draining connection with nothing in
// flight: it closes it with 1001 when the protocol allows (see DrainQuiet),
// else sends the flush ping when due and says when to look again.
func (c *conn) drainStep(now int64) (closed bool, next int64) {
	due := c.drainDue()
	if now < due {
		return false, due
	}
	last := due - c.drainQuiet // the last message, answer or the drain's start
	switch {
	case c.drainPing <= last: // quiet, and no ping since: flush
		var b [2 + len(drainPingPayload)]byte
		c.send(frame.AppendPing(b[:0], []byte(drainPingPayload)))
		c.drainPing, c.drainPong = now, 0
		return false, now + int64(DrainPongWait)
	case c.drainPong == 0:
		if at := c.drainPing + int64(DrainPongWait); now < at {
			return false, at
		}
	default:
		if at := c.drainPong + int64(DrainAfterPong); now < at {
			return false, at
		}
	}
	if unread(c.gc.Fd()) {
		// Bytes the loop has not read yet (it ran this first): they may
		// be a request, to be answered before the 1001.
		return false, now + int64(sweepEvery)
	}
	c.closeNow(ws.StatusGoingAway, "Going away")
	return true, 0
}

// wakeBy makes the sweeper look at the connection by t at the latest
// (Deadline holds the earliest time it must; 0 is none). Any goroutine.
func (c *conn) wakeBy(t int64) {
	for {
		dl := c.sess.Deadline.Load()
		if dl != 0 && dl <= t {
			return
		}
		if c.sess.Deadline.CompareAndSwap(dl, t) {
			return
		}
	}
}

// countResponses is how many answers an upstream message carries.
func countResponses(msg []byte) int32 {
	env, err := mcp.Scan(msg)
	if err != nil {
		return 0
	}
	return countKind(&env, msg, mcp.KindResponse)
}

// countKind counts the messages of one kind in a message or a batch.
func countKind(env *mcp.Envelope, msg []byte, kind mcp.Kind) int32 {
	switch env.Kind {
	case kind:
		return 1
	case mcp.KindBatch:
		var n int32
		it := mcp.NewBatch(msg)
		for {
			el, ok := it.Next()
			if !ok {
				return n
			}
			if e, err := mcp.Scan(el); err == nil && e.Kind == kind {
				n++
			}
		}
	}
	return 0
}

// onPanic ends the connection whose callback panicked (SPEC 10): counted,
// logged with its stack, close 1011 after what was already written, or a
// plain close before the upgrade; the loop and every other connection carry
// on. Its input is dropped: the reader may be mid-frame.
func (c *conn) onPanic(r any) gnet.Action {
	fault.Recovered(c.srv.m, c.srv.log, fault.SiteLoop, r)
	if c.shutting {
		return gnet.Close
	}
	if c.sess.State == session.Handshake {
		c.sess.State = session.Closing
		return gnet.Close
	}
	c.consume(-1)
	if c.sess.State == session.Closing {
		return c.shut()
	}
	c.fail(ws.StatusCode(fault.Code), fault.Reason)
	return c.shut()
}

// Subject is the upstream.Sink side of fair sharing: the connection's
// authenticated principal.
func (c *conn) Subject() string { return c.sess.Subject }

// Fail is the upstream.Sink side of closing: replies delivered before the
// failure are in the outbound queue already (Deliver queues them before it
// returns, outq.go), so the close frame goes out after them.
func (c *conn) Fail(code uint16, reason string) {
	c.runOnLoop(func() { c.closeNow(ws.StatusCode(code), reason) })
}

// Buffers for outbound frames written on the loop. What the socket does not
// take is copied into the outbound queue (outq.go), so every buffer returns
// to the pool at once.
var bufPool = sync.Pool{New: func() any { b := make([]byte, 0, 4096); return &b }}

func getBuf(n int) *[]byte {
	b := bufPool.Get().(*[]byte)
	if cap(*b) < n {
		nb := make([]byte, 0, n)
		return &nb
	}
	return b
}

func putBuf(b *[]byte) {
	if cap(*b) > 1<<20 {
		return // don't keep rare huge buffers alive
	}
	*b = (*b)[:0]
	bufPool.Put(b)
}
