package reactor

import (
	"errors"
	"github.com/mcpgate/gateway/clock"
	"sync"
	"time"

	"github.com/panjf2000/gnet/v2"
	"golang.org/x/sys/unix"

	"github.com/mcpgate/gateway/tlsconn"
)

// The connection's byte transport. A plaintext connection reads gnet's
// inbound buffer in place and writes with gnet's Write. A TLS connection
// feeds gnet's bytes (ciphertext) to its tlsconn.Conn, keeps the decrypted
// bytes in plain until the HTTP head or a frame is complete, and writes
// through tls.Conn.Write, whose records reach the socket in order through
// the outbound queue (outq.go). Everything above this file sees only
// input, consume and send.

// input returns every buffered plaintext byte. Valid until consume.
func (c *conn) input() []byte {
	if c.tc != nil {
		return c.plain
	}
	in, _ := c.gc.Peek(-1)
	return in
}

// consume drops n bytes from the front of the input (n > 0), or all of it
// when n < 0.
func (c *conn) consume(n int) {
	if c.tc != nil {
		if n < 0 || n >= len(c.plain) {
			c.releasePlain() // an idle connection keeps no buffer
			return
		}
		c.plain = c.plain[:copy(c.plain, c.plain[n:])]
		return
	}
	if n == 0 {
		return // gnet's Discard(0) would drop everything buffered
	}
	_, _ = c.gc.Discard(n)
}

// send writes bytes from the loop, in order after everything queued
// before them (a close frame never overtakes a reply). b is only lent:
// what the socket does not take at once is copied off the heap (outq.go).
func (c *conn) send(b []byte) {
	if c.tc != nil {
		_, _ = c.tc.LoopWrite(b) // records come back through tlsOut with loop true
		return
	}
	c.writeLoop(b)
}

// backlog is what is written but not yet on the wire, for the slow-reader cap.
func (c *conn) backlog() int64 {
	return int64(c.gc.OutboundBuffered()) + c.sess.OutPending.Load()
}

// tlsOut is the tlsconn out function: ciphertext records, in order, lent
// for the call. Records made on the loop are written like send's bytes;
// records made elsewhere (workers, the handshake goroutine) are copied to
// the queue, off the heap, for the loop to write. tlsconn never calls it
// twice at once.
func (c *conn) tlsOut(b []byte, loop bool) {
	if loop {
		c.writeLoop(b)
		return
	}
	c.pushCopy(b)
}

// Closing (why it takes three steps): an answer written and then lost is a
// defect, and a plain close loses answers two ways. gnet closes without
// waiting for bytes still queued (outq.go) to reach the kernel; and
// closing a socket whose receive buffer holds unread bytes (a client still
// sending: a flood, a pipelined request) makes the kernel send RST and drop
// what it has not sent, the close frame or the HTTP answer included. So the
// gateway, like nginx's lingering close and net/http's closeWriteAndWait:
//  1. sends TLS's close_notify after the last record and waits until the
//     outbound queue has handed every byte to the kernel
//     (flushGrace at most: a reader that takes nothing is cut);
//  2. if the client has sent bytes the gateway has not read (it is still
//     sending), shuts down the write side: FIN after the last byte; else it
//     closes now (FIN too, and no reset: nothing is unread);
//  3. discards what still arrives and closes when the client does, or after
//     lingerTime once the kernel has delivered everything (flushGrace at
//     most).
//
// After a 431 nothing more is read (SPEC 4.1), so step 3 is done without
// the loop: a duplicate of the descriptor keeps the half-closed socket for
// lingerTime while gnet forgets it (holdFD); the kernel's receive window
// stalls the sender meanwhile.
const (
	flushGrace = 5 * time.Second
	lingerTime = time.Second
)

// shut starts closing the connection from its loop. It returns the action
// for OnTraffic: Close only when the socket must close at once.
func (c *conn) shut() gnet.Action {
	if c.shutting {
		return gnet.None // already under way
	}
	c.shutting = true
	c.stopOut.Store(true)
	// Nothing more is read: a partial message's buffer (and its share of
	// max_buffered_bytes) goes now, not when the socket finally closes;
	// from a task, since shut may run while a message of that buffer is
	// being handled (write, failSlow), and a large one is unmapped.
	c.runOnLoop(c.rd.Free)
	c.srv.releaseAdmission(c)
	if c.tc != nil && c.tc.Established() {
		_ = c.tc.CloseNotify()
	}
	now := clock.Now()
	c.flushUntil = now + int64(flushGrace)
	return c.linger(now)
}

// linger moves a closing connection on: wait for the flush, half-close,
// wait for the client's FIN. The sweeper calls it again at the deadline it
// sets (onDeadline).
func (c *conn) linger(now int64) gnet.Action {
	if c.lingerUntil != 0 {
		if now >= c.lingerUntil && (now >= c.flushUntil || c.kernelSent()) {
			return gnet.Close
		}
		c.sess.Deadline.Store(max(c.lingerUntil, now+int64(sweepEvery)))
		return gnet.None
	}
	if c.outPending() {
		if now >= c.flushUntil {
			return gnet.Close // the reader takes nothing: cut
		}
		c.sess.Deadline.Store(now + int64(sweepEvery))
		return gnet.None
	}
	if !c.clientSending(now) {
		// A quiet client: a plain close sends FIN, not RST, and skips the
		// half-close's extra work (a deadline burst closes thousands).
		return gnet.Close
	}
	if err := unix.Shutdown(c.gc.Fd(), unix.SHUT_WR); err != nil {
		return gnet.Close // the client is gone already
	}
	if c.noLinger {
		c.srv.holdFD(c.gc, false)
		return gnet.Close
	}
	c.lingerUntil = now + int64(lingerTime)
	c.sess.Deadline.Store(c.lingerUntil)
	return gnet.None
}

// clientSending reports a client that may send more before it reads the
// answer: bytes arrived within lingerTime (the close answers what it sent,
// a flood, a pipelined request), or are unread in gnet's buffer or the
// socket's receive queue. Closing over them would reset the connection.
func (c *conn) clientSending(now int64) bool {
	if now-c.lastInput < int64(lingerTime) || c.gc.InboundBuffered() > 0 {
		return true
	}
	n, err := unix.IoctlGetInt(c.gc.Fd(), unix.SIOCINQ)
	return err != nil || n > 0
}

// kernelSent reports that the kernel has no bytes of ours left to deliver:
// a close over unread input would reset away any it still held (a slow
// reader's backlog behind its close frame).
func (c *conn) kernelSent() bool {
	n, err := unix.IoctlGetInt(c.gc.Fd(), unix.SIOCOUTQ)
	return err != nil || n == 0
}

// Discarding a flood while lingering costs the loop as much as reading it
// did: four flooders discarded for a whole lingerTime took the loops from
// every other client (SPEC 10). So a closing client that sends on past
// lingerDiscard bytes is moved out of the loop once gnet has handed the
// kernel every byte of the answer: the socket is half-closed and held
// (holdFD), drained slowly until the client is quiet, and the flooder
// stalls on its send window. While gnet still holds bytes of the answer (a
// reader slower than its backlog) the loop discards on, flushGrace at most:
// closing then would lose the answer.
const lingerDiscard = 64 << 10

// floodingClose reports a closing connection whose client sends on past
// the discard allowance and that is now held out of the loop: close it.
func (c *conn) floodingClose() bool {
	if c.discarded <= lingerDiscard || c.outPending() {
		return false
	}
	if c.lingerUntil == 0 {
		if err := unix.Shutdown(c.gc.Fd(), unix.SHUT_WR); err != nil {
			return true // the client is gone already
		}
	}
	c.srv.holdFD(c.gc, true)
	return true
}

// lingerStep is linger outside OnTraffic (sweeper, queued task).
func (c *conn) lingerStep(now int64) {
	if c.linger(now) == gnet.Close {
		_ = c.gc.EventLoop().Close(c.gc)
	}
}

// closeSocket is shut for code that cannot return an action (deadlines,
// drain, handshake outcome, off-loop steps): it must run on the loop, and
// never inside OnTraffic (gnet touches the connection after it returns).
func (c *conn) closeSocket() {
	if c.shut() == gnet.Close {
		_ = c.gc.EventLoop().Close(c.gc)
	}
}

// pumpTLS moves ciphertext from gnet into the TLS connection and decrypted
// bytes into plain. It reports false when the connection must close.
func (c *conn) pumpTLS() bool {
	raw, _ := c.gc.Peek(-1)
	if len(raw) > 0 {
		err := c.tc.Feed(raw)
		_, _ = c.gc.Discard(len(raw))
		if err != nil {
			return false
		}
	}
	if !c.tc.Established() {
		return true // the handshake goroutine has the bytes
	}
	c.tlsFull = false
	limit := c.plainCap()
	if c.plain == nil {
		c.plain = (*plainPool.Get().(*[]byte))[:0]
	}
	defer func() {
		if len(c.plain) == 0 {
			c.releasePlain()
		}
	}()
	for {
		if len(c.plain) == cap(c.plain) {
			if cap(c.plain) >= limit {
				// A window's worth decrypted: stop here; onTraffic pumps
				// again once the reader has consumed some.
				c.tlsFull = true
				return true
			}
			nb := make([]byte, len(c.plain), max(2*cap(c.plain), 4096))
			copy(nb, c.plain)
			c.plain = nb
		}
		n, err := c.tc.Read(c.plain[len(c.plain):cap(c.plain)])
		c.plain = c.plain[:len(c.plain)+n]
		if err != nil {
			return errors.Is(err, tlsconn.ErrWouldBlock)
		}
		if n == 0 {
			return true
		}
	}
}

// onTLSHandshake runs on a handshake goroutine: hop to the loop, then either
// close or go on with whatever was decrypted meanwhile.
func (c *conn) onTLSHandshake(err error) {
	c.runOnLoop(func() {
		if err != nil {
			c.srv.m.Handshakes.WithLabelValues("tls_error").Inc()
			c.status = -2
			c.refusal = "tls handshake failed: " + tlsErrText(err)
			c.closeSocket() // after the alert crypto/tls queued, if any
			return
		}
		c.resume()
	})
}

// plainPool holds decrypted-input buffers between reads, so that an idle TLS
// connection holds none.
var plainPool = sync.Pool{New: func() any { b := make([]byte, 0, 4096); return &b }}

// plainWindow is how much decrypted input pumpTLS holds at most. The frame
// reader streams a data frame's payload out of its input as it arrives,
// so the window needs room for a request head (max_header_bytes), a frame
// header and a control frame, not for a whole message: sized for a whole
// message (max_message_bytes) a wss:// client sending large messages made
// pumpTLS double a fresh buffer up to it and drop it on every read (2.6
// bytes allocated per byte received; abuse TestSlowReaderRSS).
const plainWindow = 64 << 10

// plainCap is the decrypted-input window: plainWindow, or a request head
// and a frame if max_header_bytes is larger.
func (c *conn) plainCap() int {
	return max(plainWindow, c.srv.lim().maxHeader+4096)
}

func (c *conn) releasePlain() {
	if c.plain == nil {
		return
	}
	if cap(c.plain) <= plainWindow {
		b := c.plain[:0]
		plainPool.Put(&b)
	}
	c.plain = nil
}

// tlsErrText is a TLS handshake error for the log: crypto/tls's own
// messages ("tls: client offered only unsupported versions") name no
// secret; anything longer is cut, since a message may quote client bytes.
func tlsErrText(err error) string {
	msg := err.Error()
	if len(msg) > 120 {
		msg = msg[:120] + "..."
	}
	return msg
}
