package audit

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/sha1"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gobwas/ws"
)

// Bounds on what the audit may cost the target. They are constants, not
// flags: an audit is a polite probe, never a load test.
const (
	maxConcurrentConns = 10
	maxTotalConns      = 50
	maxReadPerConn     = 4 << 20    // bytes read from one connection
	maxWritePerConn    = 1200 << 10 // bytes written to one connection (the size probe is ~1.1 MiB)
	maxInboundMessage  = 1 << 20    // a server message larger than this ends the probe
	maxRetryAfter      = 5 * time.Second
	evidenceChars      = 240
)

var errBudget = errors.New("audit connection budget exhausted")

// limiter enforces the connection budget and counts bytes across the audit.
type limiter struct {
	sem       chan struct{}
	total     atomic.Int64
	open      atomic.Int64
	maxOpen   atomic.Int64
	bytesIn   atomic.Int64
	bytesOut  atomic.Int64
	handshake atomic.Int64
}

func newLimiter() *limiter { return &limiter{sem: make(chan struct{}, maxConcurrentConns)} }

func (l *limiter) acquire(ctx context.Context) error {
	if l.total.Add(1) > maxTotalConns {
		return errBudget
	}
	select {
	case l.sem <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	n := l.open.Add(1)
	for {
		m := l.maxOpen.Load()
		if n <= m || l.maxOpen.CompareAndSwap(m, n) {
			break
		}
	}
	return nil
}

func (l *limiter) release() { l.open.Add(-1); <-l.sem }

// meteredConn counts bytes and refuses to read or write past its caps.
type meteredConn struct {
	net.Conn
	lim   *limiter
	read  int64 // only the reading goroutine touches it
	wrote atomic.Int64
	once  sync.Once
}

func (c *meteredConn) Read(p []byte) (int, error) {
	if c.read >= maxReadPerConn {
		return 0, errors.New("audit read cap reached")
	}
	if rest := maxReadPerConn - c.read; int64(len(p)) > rest {
		p = p[:rest]
	}
	n, err := c.Conn.Read(p)
	c.read += int64(n)
	c.lim.bytesIn.Add(int64(n))
	return n, err
}

func (c *meteredConn) Write(p []byte) (int, error) {
	if c.wrote.Load()+int64(len(p)) > maxWritePerConn {
		return 0, errors.New("audit write cap reached")
	}
	n, err := c.Conn.Write(p)
	c.wrote.Add(int64(n))
	c.lim.bytesOut.Add(int64(n))
	return n, err
}

func (c *meteredConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.lim.release)
	return err
}

// creds are what an upgrade request carries besides the WebSocket headers.
type creds struct {
	query  string // appended to the URL's query, e.g. "token=T"
	origin string // Origin header; empty sends none
	bearer string // Authorization: Bearer
	cookie string // Cookie header
}

// upgradeResult is the server's answer to one upgrade request.
type upgradeResult struct {
	sent   string // the request, summarized and redacted
	status int    // 0 when no HTTP answer came
	line   string // status line or the transport error
	header http.Header
	conn   *wsConn // non-nil on a valid 101
	// lost: the request went out (over TLS too, for wss://) and the server
	// ended the connection without any HTTP answer. A refusal decided and
	// then lost looks like this, and so does a failure: neither is a 403.
	lost bool
}

func (r *upgradeResult) upgraded() bool { return r.conn != nil }

// received summarizes the answer for evidence.
func (r *upgradeResult) received() string {
	if r.status == 0 {
		return r.line
	}
	s := r.line
	if ra := r.header.Get("Retry-After"); ra != "" {
		s += " (Retry-After: " + ra + ")"
	}
	return s
}

// upgrade dials the target and sends one WebSocket upgrade. On 429 or 503
// with a short Retry-After it waits and tries once more.
func (a *auditor) upgrade(ctx context.Context, c creds) *upgradeResult {
	r := a.upgradeOnce(ctx, c)
	if r.status == 429 || r.status == 503 {
		wait, err := strconv.Atoi(r.header.Get("Retry-After"))
		if err == nil && wait >= 0 && time.Duration(wait)*time.Second <= maxRetryAfter {
			select {
			case <-time.After(time.Duration(wait)*time.Second + 100*time.Millisecond):
				return a.upgradeOnce(ctx, c)
			case <-ctx.Done():
			}
		}
	}
	return r
}

func (a *auditor) upgradeOnce(ctx context.Context, c creds) *upgradeResult {
	target := a.u.RequestURI()
	if c.query != "" {
		if strings.Contains(target, "?") {
			target += "&" + c.query
		} else {
			target += "?" + c.query
		}
	}
	var key [16]byte
	_, _ = rand.Read(key[:])
	keyStr := base64.StdEncoding.EncodeToString(key[:])
	var b strings.Builder
	fmt.Fprintf(&b, "GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n", target, a.u.Host)
	fmt.Fprintf(&b, "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\nUser-Agent: mcpgate-audit/1\r\n", keyStr)
	sent := "GET " + target
	var extras []string
	if c.origin != "" {
		fmt.Fprintf(&b, "Origin: %s\r\n", c.origin)
		extras = append(extras, "Origin: "+c.origin)
	}
	if c.bearer != "" {
		fmt.Fprintf(&b, "Authorization: Bearer %s\r\n", c.bearer)
		extras = append(extras, "Authorization: Bearer "+c.bearer)
	}
	if c.cookie != "" {
		fmt.Fprintf(&b, "Cookie: %s\r\n", c.cookie)
		extras = append(extras, "Cookie: "+c.cookie)
	}
	b.WriteString("\r\n")
	if len(extras) == 0 {
		extras = append(extras, "no Origin, no credentials")
	}
	r := &upgradeResult{sent: a.redact(sent + " [" + strings.Join(extras, "; ") + "]"), header: http.Header{}}

	nc, mc, err := a.dial(ctx)
	if err != nil {
		r.line = "no connection: " + a.redact(err.Error())
		return r
	}
	a.lim.handshake.Add(1)
	_ = nc.SetDeadline(time.Now().Add(a.replyWait()))
	if _, err := io.WriteString(nc, b.String()); err != nil {
		nc.Close()
		r.line = "upgrade not sent: " + describeErr(err)
		return r
	}
	br := bufio.NewReaderSize(nc, 4096)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		nc.Close()
		r.lost = serverEnded(err)
		r.line = "no HTTP answer: " + describeErr(err)
		return r
	}
	r.status, r.header = resp.StatusCode, resp.Header
	a.answered.Store(true)
	r.line = resp.Proto + " " + resp.Status
	if resp.StatusCode != http.StatusSwitchingProtocols {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 256))
		if s := strings.TrimSpace(string(body)); s != "" {
			r.line += ": " + clip(s)
		}
		nc.Close()
		return r
	}
	h := sha1.Sum([]byte(keyStr + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
	if resp.Header.Get("Sec-WebSocket-Accept") != base64.StdEncoding.EncodeToString(h[:]) {
		nc.Close()
		r.line += " with a wrong Sec-WebSocket-Accept"
		return r
	}
	_ = nc.SetDeadline(time.Time{})
	r.conn = &wsConn{a: a, nc: nc, mc: mc, br: br, opened: time.Now(), msgs: make(chan message, 1024)}
	go r.conn.readLoop()
	return r
}

// dial opens a metered connection to the URL's host, with TLS for wss.
func (a *auditor) dial(ctx context.Context) (net.Conn, *meteredConn, error) {
	if err := a.lim.acquire(ctx); err != nil {
		return nil, nil, err
	}
	d := net.Dialer{Timeout: a.replyWait()}
	raw, err := d.DialContext(ctx, "tcp", a.addr)
	if err != nil {
		a.lim.release()
		return nil, nil, err
	}
	mc := &meteredConn{Conn: raw, lim: a.lim}
	if !a.secure {
		return mc, mc, nil
	}
	tc := tls.Client(mc, a.probeTLS)
	hctx, cancel := context.WithTimeout(ctx, a.replyWait())
	defer cancel()
	if err := tc.HandshakeContext(hctx); err != nil {
		mc.Close()
		return nil, nil, fmt.Errorf("TLS handshake: %w", err)
	}
	return tc, mc, nil
}

// message is one thing read from a connection: a data message, a close, or
// the end of the stream.
type message struct {
	at     time.Duration // since the upgrade
	op     ws.OpCode
	data   []byte
	code   ws.StatusCode // for close frames; 1005 when the frame had no code
	reason string
	err    error // the connection ended without a close frame
}

func (m message) isClose() bool { return m.op == ws.OpClose || m.err != nil }

// cut reports whether the connection ended without a close frame: the
// client sees 1006 and cannot tell why (a close decided and then lost, as
// over a TLS connection closed before its queued writes, looks like this).
func (m message) cut() bool { return m.err != nil }

// serverEnded reports whether a read error is the server ending the
// connection (EOF, reset), not a timeout or the prober's own close.
func serverEnded(err error) bool {
	var ne net.Error
	switch {
	case errors.Is(err, net.ErrClosed):
		return false
	case errors.As(err, &ne) && ne.Timeout():
		return false
	}
	return true
}

// describe summarizes a message for evidence.
func (m message) describe() string {
	switch {
	case m.err != nil:
		return fmt.Sprintf("connection ended without a close frame after %s: %s", dur(m.at), describeErr(m.err))
	case m.op == ws.OpClose:
		if m.reason != "" {
			return fmt.Sprintf("close %d %q after %s", m.code, m.reason, dur(m.at))
		}
		return fmt.Sprintf("close %d after %s", m.code, dur(m.at))
	case m.op == ws.OpBinary:
		return fmt.Sprintf("binary message, %d bytes", len(m.data))
	}
	return "text " + clip(string(m.data))
}

// wsConn is an upgraded client connection. A goroutine reads frames into
// msgs, answers pings and echoes the close handshake.
type wsConn struct {
	a      *auditor
	nc     net.Conn
	mc     *meteredConn // the TCP connection under nc, for its byte count
	br     *bufio.Reader
	opened time.Time
	wmu    sync.Mutex
	msgs   chan message // closed after the final message
}

func (c *wsConn) readLoop() {
	defer close(c.msgs)
	var buf []byte
	var bufOp ws.OpCode
	for {
		h, err := ws.ReadHeader(c.br)
		if err != nil {
			c.msgs <- message{at: time.Since(c.opened), err: err}
			return
		}
		if h.Length > maxInboundMessage || int64(len(buf))+h.Length > maxInboundMessage {
			c.msgs <- message{at: time.Since(c.opened), err: fmt.Errorf("server message over %d bytes", maxInboundMessage)}
			c.nc.Close()
			return
		}
		p := make([]byte, h.Length)
		if _, err := io.ReadFull(c.br, p); err != nil {
			c.msgs <- message{at: time.Since(c.opened), err: err}
			return
		}
		if h.Masked {
			ws.Cipher(p, h.Mask, 0)
		}
		switch h.OpCode {
		case ws.OpPing:
			_ = c.writeFrame(ws.NewPongFrame(p))
			continue
		case ws.OpPong:
			continue
		case ws.OpClose:
			m := message{at: time.Since(c.opened), op: ws.OpClose, code: ws.StatusNoStatusRcvd}
			if len(p) >= 2 {
				m.code, m.reason = ws.ParseCloseFrameData(p)
			}
			c.msgs <- m
			_ = c.writeFrame(ws.NewCloseFrame(ws.NewCloseFrameBody(ws.StatusNormalClosure, "")))
			c.nc.Close()
			return
		case ws.OpContinuation:
			buf = append(buf, p...)
		default:
			buf, bufOp = p, h.OpCode
		}
		if h.Fin {
			select {
			case c.msgs <- message{at: time.Since(c.opened), op: bufOp, data: buf}:
			default: // a flood the prober is not reading: drop, the counters suffice
			}
			buf = nil
		}
	}
}

func (c *wsConn) writeFrame(f ws.Frame) error { return c.writeFrameWithin(f, c.a.replyWait()) }

func (c *wsConn) writeFrameWithin(f ws.Frame, d time.Duration) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	_ = c.nc.SetWriteDeadline(time.Now().Add(d))
	return ws.WriteFrame(c.nc, ws.MaskFrameInPlace(f))
}

// sendText sends one masked text message (the payload is masked in place).
func (c *wsConn) sendText(p []byte) error { return c.writeFrame(ws.NewTextFrame(p)) }

// next waits up to d for the next message; ok is false on timeout.
func (c *wsConn) next(d time.Duration) (message, bool) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case m, open := <-c.msgs:
		if !open {
			return message{at: time.Since(c.opened), err: io.EOF}, true
		}
		return m, true
	case <-t.C:
		return message{}, false
	}
}

// close ends the connection politely and releases its budget slot.
func (c *wsConn) close() {
	_ = c.writeFrame(ws.NewCloseFrame(ws.NewCloseFrameBody(ws.StatusNormalClosure, "")))
	c.nc.Close()
	for range c.msgs { // let the reader finish
	}
}

// describeErr turns common socket errors into short evidence.
func describeErr(err error) string {
	var ne net.Error
	switch {
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "closed by the server (EOF)"
	case errors.As(err, &ne) && ne.Timeout():
		return "timed out"
	case strings.Contains(err.Error(), "connection reset"):
		return "connection reset by the server"
	case strings.Contains(err.Error(), "broken pipe"):
		return "broken pipe (the server closed)"
	case errors.Is(err, net.ErrClosed):
		return "closed"
	}
	return err.Error()
}

func clip(s string) string {
	if len(s) <= evidenceChars {
		return s
	}
	return s[:evidenceChars] + fmt.Sprintf("… (%d bytes)", len(s))
}

func dur(d time.Duration) string {
	if d < time.Millisecond {
		return "<1ms"
	}
	if d < time.Second {
		return d.Round(time.Millisecond).String()
	}
	return d.Round(10 * time.Millisecond).String()
}
