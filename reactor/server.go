// Package reactor owns the network edge: gnet v2 event loops (one per core)
// that accept TCP connections, parse the HTTP upgrade from peeked bytes,
// read WebSocket frames with package frame, drive each connection through the
// session states (handshake, auth, open, closing), apply the per-connection
// and per-IP limits, and hand authenticated messages to upstream sessions.
//
// Nothing here blocks an event loop: token checks are memory-only, limiters
// answer from memory, and upstream Send is a non-blocking queue push. Replies
// come back from upstream goroutines through each connection's outbound
// queue (outq.go: written by the loop, held off the Go heap while the
// socket is full, write_buffer_bytes at most). There is no
// goroutine per connection; an idle connection holds its session record, its
// frame reader state and gnet's connection object, nothing else.
//
// gnet has no deadlines, so one sweeper goroutine scans the session table
// every 100 ms and schedules expired connections (handshake, auth, ping,
// idle) back onto their own loops.
package reactor

import (
	"context"
	"errors"
	"fmt"
	"github.com/mcpgate/gateway/clock"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gobwas/ws"
	"github.com/panjf2000/gnet/v2"
	"github.com/panjf2000/gnet/v2/pkg/logging"
	"golang.org/x/sys/unix"

	"github.com/mcpgate/gateway/auth"
	"github.com/mcpgate/gateway/config"
	"github.com/mcpgate/gateway/fdbudget"
	"github.com/mcpgate/gateway/frame"
	"github.com/mcpgate/gateway/metrics"
	"github.com/mcpgate/gateway/ratelimit"
	"github.com/mcpgate/gateway/session"
	"github.com/mcpgate/gateway/tlsconn"
	"github.com/mcpgate/gateway/upstream"
)

// Verifier checks a bearer token and names its principal.
type Verifier interface {
	Verify(token string) (auth.Principal, error)
}

// Route maps an upgrade path to the upstream that serves it.
type Route struct {
	Path     string
	Upstream upstream.Upstream
}

// Options is everything a Server needs; the caller provisions it from the
// validated config.
type Options struct {
	Config         *config.Config
	Verifier       Verifier
	Routes         []Route
	Table          *session.Table
	Metrics        *metrics.Metrics
	Log            *slog.Logger
	SubjectLimiter ratelimit.SubjectLimiter // nil: per-subject limit off
	Tickets        TicketStore              // nil: no /tickets, ?ticket= ignored
	// Revoked reports a revoked subject (from memory: it runs on the loop);
	// its tickets are refused. nil: none is.
	Revoked func(subject string) bool
	// TLS serves wss:// on every listener; nil serves plaintext.
	TLS *tlsconn.Server
	// PlaintextOnlyTrusted, with TLS nil, serves only peers inside Trusted
	// (insecure_plaintext off loopback: a TLS-terminating balancer in front).
	PlaintextOnlyTrusted bool
	// Trusted are the load balancers allowed to send PROXY protocol and
	// X-Forwarded-For.
	Trusted []netip.Prefix
	// ProxyProtocol expects a PROXY v1/v2 header from trusted peers.
	ProxyProtocol bool
	// Multicore runs one event loop per core (default true through New's caller).
	Loops int
	// Descriptors is the process's descriptor budget (SPEC 10): client
	// sockets count against it and are refused with 503 before the
	// open-file limit (see OnOpen). nil: only max_connections caps them.
	Descriptors *fdbudget.Budget
}

// limits are the config values the hot path reads, in ready-to-use units.
type limits struct {
	maxMsg, maxPreAuth int64
	maxHeader          int
	handshake, auth    int64 // ns
	idle, ping         int64 // ns
	writeCap           int64
	maxConns, perIP    int64
	maxPending         int64
	perConn            ratelimit.Limit
	frames             ratelimit.Limit // every frame, control frames included
	msgTimeout         int64           // ns: first frame to last of a message
	asyncCap           int             // inbound bytes held while an async step runs
	headerAuth         bool
}

// Server is the gateway's WebSocket listener set.
type Server struct {
	gnet.BuiltinEventEngine

	opt  Options
	limp atomic.Pointer[limits] // lim(); SetLimits swaps it (reload)

	denialLog logSampler // per-subject denials: one line a second
	addrs     []string
	origins   atomic.Pointer[originSet]  // SetOrigins swaps it (reload)
	routing   atomic.Pointer[routeTable] // SetRoutes swaps it (reload)
	routeUse  [maxRoutes]atomic.Int64    // authenticated connections per route (UsesUpstream)
	log       *slog.Logger
	m         *metrics.Metrics
	table     *session.Table
	ipRate    *ratelimit.Keyed[netip.Addr] // keyed by ipKey.key
	ipKey     ipKeyer
	held      *frame.Budget // limits.max_buffered_bytes: partial messages' buffers

	eng      gnet.Engine
	engReady chan struct{}
	stopped  chan struct{}

	asyncSem  chan struct{}
	ticketTTL time.Duration

	open     atomic.Int64
	accepted atomic.Int64 // connections ever accepted (trimMemory)
	closed   atomic.Int64 // connections ever closed (trimMemory)
	heldFDs  atomic.Int64 // lingering descriptors out of the loop (holdFD)
	waker    waker        // flushes outbound queues whose socket has room (outq.go)
	pending  atomic.Int64
	draining atomic.Bool
	// reconnecting counts open connections a rebalancing node asked to
	// reconnect (Reconnect) that have not closed yet.
	reconnecting atomic.Int64

	ipMu    sync.Mutex
	ipConns map[netip.Addr]int32 // keyed by ipKey.key
}

// New validates the options and prepares a server; Serve starts it.
func New(o Options) (*Server, error) {
	c := o.Config
	if c == nil || o.Verifier == nil || o.Table == nil || o.Metrics == nil {
		return nil, errors.New("reactor: config, verifier, table and metrics are required")
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	s := &Server{
		denialLog: logSampler{every: int64(denialLogEvery)},
		opt:       o,
		log:       o.Log,
		m:         o.Metrics,
		table:     o.Table,
		ipConns:   make(map[netip.Addr]int32),
		engReady:  make(chan struct{}),
		stopped:   make(chan struct{}),
		asyncSem:  make(chan struct{}, 256),
		ticketTTL: time.Duration(c.Auth.Tickets.TTL),
		ipKey:     newIPKeyer(c.Limits),
	}
	l := &limits{
		maxMsg:     int64(c.Limits.MaxMessageBytes),
		maxPreAuth: int64(c.Limits.MaxPreAuthBytes),
		maxHeader:  int(c.Limits.MaxHeaderBytes),
	}
	if l.maxPreAuth <= 0 || l.maxPreAuth > l.maxMsg {
		l.maxPreAuth = min(16<<10, l.maxMsg)
	}
	// While a ticket is looked up nothing is read: at most the upgrade
	// request and the auth message (framed, and over TLS in records of at
	// most 16 KiB plus overhead) may wait in gnet's buffer (SPEC 10).
	l.asyncCap = l.maxHeader + int(l.maxPreAuth) + 2*14 + 17<<10
	s.limp.Store(s.reloadable(l, c))
	s.SetOrigins(c.Origins)
	if len(o.Routes) > maxRoutes {
		return nil, errors.New("reactor: at most 255 routes")
	}
	rt := &routeTable{list: append([]Route(nil), o.Routes...), byPath: make(map[string]int, len(o.Routes))}
	for i, r := range o.Routes {
		rt.byPath[r.Path] = i
	}
	s.routing.Store(rt)
	s.held = frame.NewBudget(max(int64(c.Limits.MaxBufferedBytes), l.maxMsg))
	hr := c.RateLimit.HandshakesPerIP
	s.ipRate = ratelimit.NewIPLimiter(ratelimit.Limit{N: hr.Count, Window: time.Duration(hr.Window)})
	for _, a := range c.Listen {
		s.addrs = append(s.addrs, "tcp://"+a)
	}
	return s, nil
}

// Serve runs the event loops until Stop or ctx ends. It returns once the
// engine has stopped.
func (s *Server) Serve(ctx context.Context) error {
	loops := s.opt.Loops
	opts := []gnet.Option{
		gnet.WithMulticore(loops == 0),
		gnet.WithTCPNoDelay(gnet.TCPNoDelay),
		gnet.WithLoadBalancing(gnet.LeastConnections),
		gnet.WithLogLevel(logging.ErrorLevel),
		gnet.WithLogger(gnetLog{s.opt.Log}),
		gnet.WithTCPKeepAlive(0),
		gnet.WithReuseAddr(true), // restart while old sockets sit in TIME_WAIT
		gnet.WithReusePort(s.opt.Config.ReusePort),
	}
	if loops > 0 {
		opts = append(opts, gnet.WithNumEventLoop(loops))
	}
	sweepCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	go s.sweep(sweepCtx)
	go s.trimMemory(sweepCtx)
	go func() {
		select {
		case <-ctx.Done():
			s.Stop(context.Background())
		case <-s.stopped:
		}
	}()
	err := gnet.Rotate(s, s.addrs, opts...)
	s.waker.close()
	close(s.stopped)
	return err
}

// Ready is closed once the listeners are bound.
func (s *Server) Ready() <-chan struct{} { return s.engReady }

// OnBoot keeps the engine handle for Stop.
func (s *Server) OnBoot(eng gnet.Engine) gnet.Action {
	s.eng = eng
	s.bootDescriptors(eng)
	close(s.engReady)
	s.log.Info("listening", "addrs", strings.Join(s.opt.Config.Listen, ","), "path_routes", len(s.routing.Load().byPath))
	return gnet.None
}

// Stop closes every connection and the listeners. Drain first (Drain) to
// give clients a close 1001.
func (s *Server) Stop(ctx context.Context) error {
	select {
	case <-s.engReady:
	default:
		return nil
	}
	return s.eng.Stop(ctx)
}

// Draining reports whether Drain has begun.
func (s *Server) Draining() bool { return s.draining.Load() }

// Full reports whether the next client would be refused 503 for want of
// room: limits.max_connections is reached, or the descriptor budget is
// inside its client margin (fdbudget). /readyz answers 503 then.
func (s *Server) Full() bool {
	if s.open.Load()+s.heldFDs.Load() >= s.lim().maxConns {
		return true
	}
	b := s.opt.Descriptors
	return b != nil && b.Free() < b.Margin()
}

// Drain refuses new connections with 503 and new requests with a JSON-RPC
// error, closes each open connection with 1001 "Going away" once its
// in-flight requests are answered, and waits until every connection is gone
// or ctx ends; then the rest get their 1001 at once.
func (s *Server) Drain(ctx context.Context) {
	s.draining.Store(true)
	s.table.Range(func(ss *session.Session) bool {
		if c, ok := ss.Conn.(*conn); ok {
			c.runOnLoop(c.startDrain)
		}
		return true
	})
	defer s.table.Range(func(ss *session.Session) bool {
		if c, ok := ss.Conn.(*conn); ok {
			c.runOnLoop(func() { c.closeNow(ws.StatusGoingAway, "Going away") })
		}
		return true
	})
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for i := 1; s.open.Load() > 0; i++ {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if i%10 == 0 {
			// A connection admitted just as the drain began (past the
			// 503 check, not yet in the table the first pass saw) joins
			// the drain here, once authenticated.
			s.table.Range(func(ss *session.Session) bool {
				if c, ok := ss.Conn.(*conn); ok && c.authed.Load() && !c.draining.Load() {
					c.runOnLoop(c.startDrain)
				}
				return true
			})
		}
	}
}

// Reconnect asks up to n idle open connections (nothing in flight) to
// reconnect elsewhere, for rebalancing: each gets the drain protocol of
// startDrain on its own (-31000 to its requests, 1001 once quiet). It
// returns how many it picked; a pick its loop finds busy or closing is
// skipped there, so Reconnecting may grow by fewer. Nothing while draining.
func (s *Server) Reconnect(n int) int {
	if n <= 0 || s.draining.Load() {
		return 0
	}
	picked := 0
	s.table.Range(func(ss *session.Session) bool {
		c, ok := ss.Conn.(*conn)
		if !ok || !c.authed.Load() || c.draining.Load() || c.inflight.Load() > 0 || c.dead.Load() || c.stopOut.Load() {
			return true
		}
		c.runOnLoop(func() { c.startReconnect() })
		picked++
		return picked < n
	})
	return picked
}

// OpenConns is how many connections are open (every state).
func (s *Server) OpenConns() int64 { return s.open.Load() }

// Reconnecting is how many open connections were asked to reconnect
// (Reconnect) and have not closed yet.
func (s *Server) Reconnecting() int64 { return s.reconnecting.Load() }

// CloseSubject closes every connection of one principal on this node (a
// revocation) with code and reason.
func (s *Server) CloseSubject(subject string, code uint16, reason string) int {
	list := s.table.BySubject(subject)
	for _, ss := range list {
		if c, ok := ss.Conn.(*conn); ok {
			c.runOnLoop(func() { c.closeNow(ws.StatusCode(code), reason) })
		}
	}
	return len(list)
}

// Stats is a snapshot for tests and the admin API.
type Stats struct{ Open, PendingAuth int64 }

// Stats reports open and pending-auth connection counts.
func (s *Server) Stats() Stats {
	return Stats{Open: s.open.Load(), PendingAuth: s.pending.Load()}
}

// OnOpen admits or refuses a TCP connection. The global caps are enforced
// here, at once, because every accepted connection holds a file descriptor
// and gnet stops its whole engine if accept() ever fails with EMFILE: the
// operator's max_connections, and the descriptor budget, which counts this
// socket with every other descriptor of the process and refuses clients a
// margin before the headroom accept() needs (fdbudget.ClientVerdict).
func (s *Server) OnOpen(gc gnet.Conn) ([]byte, gnet.Action) {
	now := clock.Now()
	n := s.open.Add(1) + s.heldFDs.Load()
	s.accepted.Add(1)
	s.m.ConnectionsOpen.Inc()
	c := &conn{srv: s, gc: gc}
	c.rd.Budget = s.held
	c.sess.Opened = now
	c.sess.LastSeen = now
	c.sess.Conn = c
	c.sess.Remote = remoteAddr(gc.RemoteAddr())
	gc.SetContext(c)
	if s.opt.PlaintextOnlyTrusted && !s.trusted(c.sess.Remote) {
		c.status = -3 // plaintext refused to an untrusted peer: no bytes at all
		c.refusal = "plaintext from an untrusted peer"
		s.m.Handshakes.WithLabelValues("untrusted").Inc()
		return nil, gnet.Close
	}
	if s.opt.TLS != nil {
		c.tc = s.opt.TLS.NewConn(c.tlsOut, c.onTLSHandshake)
	}
	overCap := n > s.lim().maxConns
	pastMargin := n > s.lim().maxConns+tlsRefusalMargin(s.lim().maxConns)
	if b := s.opt.Descriptors; b != nil {
		switch b.ClientVerdict() {
		case fdbudget.Refuse:
			overCap = true
		case fdbudget.Close:
			overCap, pastMargin = true, true
		}
	}
	if overCap && pastMargin {
		// Past the margin descriptors come first. A TLS client's 503 costs
		// a handshake and holds the descriptor for it: a flood gets the TCP
		// close. A plaintext one gets its 503 at once, which a reset may
		// lose if its request arrives after the close.
		c.status = 503
		c.refusal = "over max_connections and its margin"
		s.m.Handshakes.WithLabelValues("503").Inc()
		if c.tc == nil {
			return httpStatus(503, 1), gnet.Close
		}
		return nil, gnet.Close
	}
	s.pending.Add(1)
	s.m.PendingAuth.Inc()
	c.pending = true
	switch {
	case s.opt.ProxyProtocol && s.trusted(c.sess.Remote):
		// The client's address comes in the PROXY header; per-IP
		// admission waits for it (see proxyHeader).
		c.needProxy = true
	case s.trusted(c.sess.Remote):
		// A trusted HTTP proxy: the client may be named in
		// X-Forwarded-For, so admission waits for the headers.
		c.admitLater = true
	default:
		s.admit(c, now)
	}
	if overCap || s.draining.Load() {
		// The 503 is answered once the request is in (as the refusals
		// admit decides; over TLS after the handshake): written before the
		// request arrived, it could be reset away by it (behind HAProxy,
		// whose PROXY header is unread, it was: the client saw EOF).
		c.reject, c.retryAfter = 503, 1
		c.refusal = "over max_connections"
		if s.draining.Load() {
			c.refusal = "draining"
		}
	}
	s.table.Add(&c.sess)
	dl := now + s.lim().handshake
	if c.reject != 0 {
		dl = min(dl, now+int64(2*time.Second))
	}
	c.sess.Deadline.Store(dl)
	return nil, gnet.None
}

// tlsRefusalMargin is how many TLS connections past max_connections are
// still taken through the handshake to be answered 503: 1/16 of the cap, at
// least 16. Descriptors are the budget's business: past its client margin
// (fdbudget.Budget.Margin) a TLS client gets the TCP close, however far
// from max_connections.
func tlsRefusalMargin(maxConns int64) int64 { return max(16, maxConns/16) }

// admit counts the connection against its client address and decides the
// refusals that depend on it (per-IP cap, pending-auth cap, handshake rate).
// The answer waits until the request is in (see handshake).
func (s *Server) admit(c *conn, now int64) {
	c.counted = true
	key := s.ipKey.key(c.sess.Remote) // the /64 of an IPv6 client (limits.ipv6_prefix)
	s.ipMu.Lock()
	s.ipConns[key]++
	perIP := s.ipConns[key]
	s.ipMu.Unlock()
	switch {
	case s.lim().perIP > 0 && int64(perIP) > s.lim().perIP:
		c.reject, c.retryAfter = 503, 1
		c.refusal = "over max_connections_per_ip"
	case s.lim().maxPending > 0 && s.pending.Load() > s.lim().maxPending:
		c.reject, c.retryAfter = 503, 1
		c.refusal = "over max_pending_auth"
	default:
		if ok, retry := s.ipRate.AllowAt(key, now); !ok {
			c.reject, c.retryAfter = 429, int16((retry+time.Second-1)/time.Second)
			c.refusal = "handshake rate per IP"
		}
	}
	if c.reject != 0 {
		// A refused client gets its answer once its request is in, so that
		// the response is read and not lost to a reset; it may not linger.
		if dl := c.sess.Deadline.Load(); dl == 0 || dl > now+int64(2*time.Second) {
			c.sess.Deadline.Store(now + int64(2*time.Second))
		}
	}
}

// holdFD keeps a half-closed socket open on a duplicate descriptor, out of
// the event loop, so that the answer written before is not reset away.
// The duplicates count against max_connections (OnOpen), since they hold
// descriptors. Every sweepEvery it discards at most holdDrain bytes of the
// client's input (none with drain false: after a 431 nothing more is read),
// so a client still sending moves slowly and costs the loop nothing. It
// closes once the kernel has delivered every byte of the answer and, when
// draining, the client has been quiet for lingerTime (nothing unread: FIN,
// no reset); at flushGrace in any case.
func (s *Server) holdFD(gc gnet.Conn, drain bool) {
	if b := s.opt.Descriptors; b != nil && b.Free() < 1 {
		return // the duplicate would eat into the accept headroom
	}
	fd, err := gc.Dup()
	if err != nil {
		return // no descriptor to spare: plain close
	}
	s.heldFDs.Add(1)
	now := time.Now()
	quiet, cut := now.Add(lingerTime), now.Add(flushGrace)
	var tick func()
	tick = func() {
		now := time.Now()
		if drain && discardInput(fd, holdDrain) {
			quiet = now.Add(lingerTime)
		}
		if now.Before(cut) && (now.Before(quiet) || !sentAll(fd) || drain && unread(fd)) {
			time.AfterFunc(sweepEvery, tick)
			return
		}
		_ = unix.Close(fd)
		s.heldFDs.Add(-1)
	}
	time.AfterFunc(sweepEvery, tick)
}

// holdDrain is what a held socket discards per sweepEvery: 640 KiB/s.
const holdDrain = 64 << 10

// discardSink is never written: MSG_TRUNC makes TCP drop the bytes without
// copying them (Linux tcp(7)).
var discardSink = make([]byte, holdDrain)

// discardInput drops up to n bytes the client sent and reports whether
// there were any.
func discardInput(fd, n int) bool {
	got, _, err := unix.Recvfrom(fd, discardSink[:n], unix.MSG_TRUNC|unix.MSG_DONTWAIT)
	return err == nil && got > 0
}

// sentAll reports that the kernel holds none of our bytes undelivered.
func sentAll(fd int) bool {
	n, err := unix.IoctlGetInt(fd, unix.SIOCOUTQ)
	return err != nil || n == 0
}

// unread reports bytes in the socket's receive queue.
func unread(fd int) bool {
	n, err := unix.IoctlGetInt(fd, unix.SIOCINQ)
	return err == nil && n > 0
}

// releaseAdmission gives back the connection's per-IP slot and its
// pending-auth place: at OnClose, or as soon as the gateway starts closing
// it (a lingering close is no client being served). The descriptor stays
// counted in open until OnClose. Idempotent; on the loop.
func (s *Server) releaseAdmission(c *conn) {
	if c.counted {
		c.counted = false
		key := s.ipKey.key(c.sess.Remote) // Remote is not changed once admitted
		s.ipMu.Lock()
		if s.ipConns[key]--; s.ipConns[key] <= 0 {
			delete(s.ipConns, key)
		}
		s.ipMu.Unlock()
	}
	// State may be Closing by now; pending says whether auth ever happened.
	if c.pending {
		c.pending = false
		s.pending.Add(-1)
		s.m.PendingAuth.Dec()
	}
}

// OnClose releases everything the connection held and logs its one line.
func (s *Server) OnClose(gc gnet.Conn, err error) gnet.Action {
	c, _ := gc.Context().(*conn)
	s.open.Add(-1)
	s.closed.Add(1)
	s.m.ConnectionsOpen.Dec()
	if c == nil {
		return gnet.None
	}
	c.dead.Store(true)
	if c.rebalanced {
		s.reconnecting.Add(-1)
	}
	if c.authed.Load() {
		s.routeUse[c.sess.RouteIdx].Add(-1)
	}
	s.table.Remove(&c.sess)
	s.releaseAdmission(c)
	if c.up != nil {
		c.up.Close()
	}
	if c.tc != nil {
		c.tc.Close()
		c.plain = nil
	}
	c.rd.Free()  // an open message's buffer and its reservation
	c.closeOut() // bytes the kernel never took: unmapped now
	code := int(c.closeCode)
	s.m.Close(code)
	if c.sess.State == session.Handshake {
		if c.status == 0 {
			c.status = -1 // closed before an answer: timeout or client gone
		}
	}
	attrs := []any{
		"session", c.sess.ID(),
		"remote", c.sess.Remote.String(),
		"duration_ms", clock.Since(c.sess.Opened).Milliseconds(),
		"state", c.sess.State.String(),
	}
	if c.sess.Subject != "" {
		attrs = append(attrs, "subject", c.sess.Subject)
	}
	if c.status != 0 {
		attrs = append(attrs, "http_status", c.status)
	}
	if c.refusal != "" {
		attrs = append(attrs, "refusal", c.refusal)
	}
	if code != 0 {
		attrs = append(attrs, "close_code", code, "close_reason", c.closeReason, "by", c.closedBy)
	}
	if err != nil && !errors.Is(err, net.ErrClosed) {
		attrs = append(attrs, "error", err.Error())
	}
	s.log.Info("conn close", attrs...)
	return gnet.None
}

// OnTraffic runs the connection's state machine over whatever is buffered.
func (s *Server) OnTraffic(gc gnet.Conn) (act gnet.Action) {
	c, _ := gc.Context().(*conn)
	if c == nil {
		return gnet.Close
	}
	defer func() {
		if r := recover(); r != nil {
			act = c.onPanic(r) // this connection ends (1011); the loop carries on
		}
	}()
	act = c.onTraffic()
	if act == gnet.Close && !c.shutting {
		return c.shut() // never before what was written on the way out
	}
	return act // None, or shut's own verdict: close now
}

func (s *Server) trusted(a netip.Addr) bool {
	for _, p := range s.opt.Trusted {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

func remoteAddr(a net.Addr) netip.Addr {
	if ta, ok := a.(*net.TCPAddr); ok {
		if ip, ok := netip.AddrFromSlice(ta.IP); ok {
			return ip.Unmap()
		}
	}
	return netip.Addr{}
}

var statusText = map[int]string{
	400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
	429: "Too Many Requests", 431: "Request Header Fields Too Large", 503: "Service Unavailable",
}

// httpStatus is a complete, closing HTTP/1.1 response with an empty body.
func httpStatus(code, retryAfter int) []byte {
	b := fmt.Appendf(nil, "HTTP/1.1 %d %s\r\nConnection: close\r\nContent-Length: 0\r\n", code, statusText[code])
	if retryAfter > 0 {
		b = fmt.Appendf(b, "Retry-After: %d\r\n", retryAfter)
	}
	return append(b, "\r\n"...)
}

// lim returns the limits in force. A reload (SetLimits) swaps them whole:
// a check sees the old set or the new one.
func (s *Server) lim() *limits { return s.limp.Load() }

// reloadable returns a copy of base with the limits a reload may change
// taken from c: deadlines and timeouts, the connection caps, the write cap,
// the per-connection rate limits and header auth. The rest (message and
// header sizes, the buffer budget) sized structures at start and stay.
func (s *Server) reloadable(base *limits, c *config.Config) *limits {
	l := *base
	l.handshake = int64(c.Limits.HandshakeTimeout)
	l.auth = int64(c.Auth.Timeout)
	l.idle = int64(c.Limits.IdleTimeout)
	l.ping = int64(c.Limits.PingInterval)
	l.writeCap = int64(c.Limits.WriteBufferBytes)
	l.maxConns = int64(c.EffectiveMaxConnections())
	l.perIP = int64(c.Limits.MaxConnectionsPerIP)
	l.maxPending = int64(c.Limits.MaxPendingAuth)
	l.perConn = ratelimit.Limit{N: c.RateLimit.PerConnection.Messages, Window: time.Duration(c.RateLimit.PerConnection.Window)}
	l.frames = ratelimit.Limit{N: c.RateLimit.FramesPerConnection.Count, Window: time.Duration(c.RateLimit.FramesPerConnection.Window)}
	l.msgTimeout = int64(c.Limits.MessageTimeout)
	l.headerAuth = c.Auth.Header
	// Never admit more connections than the file limit allows: gnet v2.9.7
	// stops the whole engine when accept() fails with EMFILE.
	fdCfg := *c
	fdCfg.Limits.MaxConnections = 0
	if fdCap := int64(fdCfg.EffectiveMaxConnections()); l.maxConns > fdCap {
		s.log.Warn("limits.max_connections exceeds what the open-file limit allows; capped",
			"configured", l.maxConns, "cap", fdCap)
		l.maxConns = fdCap
	}
	if l.msgTimeout <= 0 {
		l.msgTimeout = int64(30 * time.Second)
	}
	return &l
}

// SetLimits applies the reloadable limits of c (see reloadable): at once
// for the checks made per message and per deadline on every connection,
// and for every new connection.
func (s *Server) SetLimits(c *config.Config) { s.limp.Store(s.reloadable(s.lim(), c)) }
