package tlsconn

import (
	"crypto/tls"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Connection states. Transitions happen under raw.mu; st is atomic so that
// Read and Write can check it without the lock.
const (
	stNew       int32 = iota // no ciphertext yet: holds a timer, no slot
	stQueued                 // ClientHello complete: a handshake goroutine is on its way
	stHandshake              // a pool goroutine runs the handshake
	stOpen                   // established; the loop reads, anyone writes
	stFailed                 // handshake failed; only Close remains
	stClosed                 // Close was called
)

// Conn is one server-side TLS connection driven by an event loop. See the
// package documentation for which goroutine may call what.
type Conn struct {
	raw rawConn
	tc  *tls.Conn

	rawBuf *[]byte // the pooled buffer lent to tc's rawInput (buffers.go); loop only
	srv    *Server
	born   time.Time // NewConn: the handshake deadline counts from here
	st     atomic.Int32

	// omu is held around every crypto/tls call that may write once the
	// handshake is done, so that out learns who is writing (raw.loop): the
	// loop may put its records straight on the socket, other goroutines must
	// queue theirs.
	omu sync.Mutex

	// Guarded by raw.mu.
	onHS     func(error) // nil once called
	timer    *time.Timer // nil once the handshake has an outcome
	timedOut bool
}

// Feed hands the connection ciphertext read from the socket. b is copied, so
// the caller may discard it on return. Before the handshake completes it
// wakes (or queues) the handshake; after, it buffers for Read, and the loop
// should call Read until ErrWouldBlock.
//
// An error means the connection is finished: close the socket. ErrBusy and
// ErrInputLimit are not reported to onHandshake; net.ErrClosed means the
// outcome was already reported (or Close was called).
func (c *Conn) Feed(b []byte) error {
	if len(b) == 0 {
		return nil
	}
	r := &c.raw
	r.mu.Lock()
	st := c.st.Load()
	switch {
	case st == stFailed || st == stClosed || r.closed:
		r.mu.Unlock()
		return net.ErrClosed
	case st != stOpen && r.pendingLocked()+len(b) > c.srv.cfg.MaxHandshakeInput:
		c.st.Store(stFailed)
		r.closeLocked(ErrInputLimit)
		c.stopTimerLocked()
		c.onHS = nil
		r.mu.Unlock()
		c.srv.failed.Add(1)
		return ErrInputLimit
	}
	if st == stOpen && r.pendingLocked() == 0 && c.feedDirect(b) {
		r.mu.Unlock()
		return nil
	}
	r.appendLocked(b)
	if st == stNew {
		if !helloReady((*r.buf)[r.off:]) {
			// Gather the ClientHello here, on the loop, without a slot: a
			// client that stalls mid-hello holds no handshake goroutine.
			r.mu.Unlock()
			return nil
		}
		c.st.Store(stQueued)
		if c.timer != nil {
			c.timer.Reset(max(c.srv.cfg.HandshakeTimeout-time.Since(c.born), 0))
		}
	}
	r.signalLocked()
	r.mu.Unlock()
	if st != stNew {
		return nil
	}
	if err := c.srv.start(c); err != nil {
		r.mu.Lock()
		defer r.mu.Unlock()
		if c.st.Load() != stQueued {
			return nil // the timer or Close got there first
		}
		c.st.Store(stFailed)
		r.closeLocked(err)
		c.stopTimerLocked()
		c.onHS = nil
		c.srv.failed.Add(1)
		return err
	}
	return nil
}

// handshake runs on a goroutine of its own (Server.start), which holds a
// CPU slot only while crypto/tls computes (rawConn.Read gives it back while
// the client thinks).
func (c *Conn) handshake() {
	r := &c.raw
	r.acquire()
	defer r.release()
	r.mu.Lock()
	if c.st.Load() != stQueued {
		r.mu.Unlock()
		return // timed out or closed while it waited for a slot
	}
	c.st.Store(stHandshake)
	r.mu.Unlock()

	// Blocking reads: the adapter waits for Feed. The timer unblocks it by
	// closing the adapter, which fails the handshake.
	err := c.tc.Handshake()
	r.release()

	r.mu.Lock()
	if c.st.Load() != stHandshake {
		r.mu.Unlock()
		return // Close, or Feed's input limit: nobody wants the outcome
	}
	if c.timedOut {
		err = ErrHandshakeTimeout
	}
	if err != nil {
		c.st.Store(stFailed)
		r.closeLocked(err)
	} else {
		c.st.Store(stOpen)
		r.blocking = false
		r.wake = nil
	}
	c.stopTimerLocked()
	onHS := c.takeCallbackLocked()
	r.mu.Unlock()
	if err != nil {
		c.srv.failed.Add(1)
	} else {
		c.srv.completed.Add(1)
	}
	onHS(err)
}

// expire runs on the timer's goroutine at HandshakeTimeout.
func (c *Conn) expire() {
	r := &c.raw
	r.mu.Lock()
	switch c.st.Load() {
	case stNew, stQueued:
		c.st.Store(stFailed)
		r.closeLocked(ErrHandshakeTimeout)
		c.timer = nil
		onHS := c.takeCallbackLocked()
		r.mu.Unlock()
		c.srv.failed.Add(1)
		onHS(ErrHandshakeTimeout)
		return
	case stHandshake:
		// The pool goroutine sees the closed adapter and reports.
		c.timedOut = true
		r.closeLocked(ErrHandshakeTimeout)
	}
	r.mu.Unlock()
}

// takeCallbackLocked hands out onHandshake once and forgets it, so that an
// idle connection does not keep the reactor's closure (and what it holds)
// alive.
func (c *Conn) takeCallbackLocked() func(error) {
	f := c.onHS
	c.onHS = nil
	if f == nil {
		f = func(error) {}
	}
	return f
}

func (c *Conn) stopTimerLocked() {
	if c.timer != nil {
		c.timer.Stop()
		c.timer = nil
	}
}

// Read returns plaintext, or ErrWouldBlock when no complete record is
// buffered (also before the handshake completes). Call it on the loop only,
// after Feed and after onHandshake(nil): ciphertext that came with the
// client's Finished is already inside crypto/tls and only Read will surface
// it. Any other error is final (io.EOF after the client's close_notify).
func (c *Conn) Read(p []byte) (int, error) {
	switch c.st.Load() {
	case stOpen:
	case stFailed, stClosed:
		return 0, net.ErrClosed
	default:
		return 0, ErrWouldBlock // calling tls.Conn.Read now would block on handshakeMutex
	}
	if c.idle() {
		// Nothing crypto/tls could make progress with: asking it anyway
		// costs its locks and two allocations (readFromUntil's
		// atLeastReader) per socket read only to learn ErrWouldBlock.
		c.reclaim()
		return 0, ErrWouldBlock
	}
	c.lend()
	// Read may write: a TLS 1.3 KeyUpdate is answered from inside it.
	c.omu.Lock()
	c.raw.loop = true
	n, err := c.tc.Read(p)
	c.raw.loop = false
	c.omu.Unlock()
	if err != nil && errors.Is(err, ErrWouldBlock) {
		c.reclaim()
		// Read can return data with a temporary error when it peeked at a
		// partial alert after the record (conn.go, Read's close-notify check).
		if n > 0 {
			return n, nil
		}
		return 0, ErrWouldBlock
	}
	return n, err
}

// Write encrypts p and passes the records to out with loop false, in order.
// It is safe from several goroutines at once (the records of one call stay
// together), and never waits for the socket. Before the handshake completes
// it fails with ErrNotEstablished rather than waiting.
func (c *Conn) Write(p []byte) (int, error) { return c.write(p, false) }

// WriteTwo is Write of a then b, with no other write between them (a
// frame header and a payload that stays where it is: no copy of a large
// reply just to put its header in front).
func (c *Conn) WriteTwo(a, b []byte) (int, error) {
	switch c.st.Load() {
	case stOpen:
		c.omu.Lock()
		defer c.omu.Unlock()
		c.raw.loop = false
		n, err := c.tc.Write(a)
		if err != nil {
			return n, err
		}
		m, err := c.tc.Write(b)
		return n + m, err
	case stFailed, stClosed:
		return 0, net.ErrClosed
	default:
		return 0, ErrNotEstablished
	}
}

// LoopWrite is Write for the connection's event loop: out is told so
// (loop true), and may then write to the socket at once, where a queued
// write would land after a close that follows it on the loop.
func (c *Conn) LoopWrite(p []byte) (int, error) { return c.write(p, true) }

func (c *Conn) write(p []byte, loop bool) (int, error) {
	switch c.st.Load() {
	case stOpen:
		c.omu.Lock()
		c.raw.loop = loop
		n, err := c.tc.Write(p)
		c.raw.loop = false
		c.omu.Unlock()
		return n, err
	case stFailed, stClosed:
		return 0, net.ErrClosed
	default:
		return 0, ErrNotEstablished
	}
}

// CloseNotify sends a close_notify alert through out (established
// connections only, loop true: call it on the loop); later Writes fail.
// Close the socket afterwards.
func (c *Conn) CloseNotify() error {
	if c.st.Load() != stOpen {
		return ErrNotEstablished
	}
	c.omu.Lock()
	c.raw.loop = true
	err := c.tc.CloseWrite()
	c.raw.loop = false
	c.omu.Unlock()
	return err
}

// Close releases the connection without sending anything: call it when the
// socket is gone (gnet OnClose) or is being closed. A handshake in progress
// is abandoned and onHandshake is not called, unless the outcome was decided
// before Close (then the callback may still be on its way: the reactor's
// callback must check that the connection is still there). Safe to call
// twice.
func (c *Conn) Close() {
	r := &c.raw
	r.mu.Lock()
	if c.st.Load() == stClosed {
		r.mu.Unlock()
		return
	}
	c.st.Store(stClosed)
	c.stopTimerLocked()
	c.onHS = nil
	r.closeLocked(net.ErrClosed)
	r.mu.Unlock()
}

// Established reports whether the handshake succeeded and Close has not been
// called.
func (c *Conn) Established() bool { return c.st.Load() == stOpen }

// Buffered is the ciphertext fed but not yet decrypted: still in the
// adapter, or in crypto/tls's record buffer. Call it on the loop.
func (c *Conn) Buffered() int {
	c.raw.mu.Lock()
	n := c.raw.pendingLocked()
	c.raw.mu.Unlock()
	if bufferFields.ok && c.st.Load() == stOpen {
		raw, _, _ := c.fields()
		n += raw.Len()
	}
	return n
}

// ConnectionState returns the negotiated parameters once established, and a
// zero value before: tls.Conn.ConnectionState takes the handshake mutex and
// would block the loop for the whole handshake.
func (c *Conn) ConnectionState() tls.ConnectionState {
	c.raw.mu.Lock()
	done := !c.raw.blocking // set on success only, under the same lock
	c.raw.mu.Unlock()
	if !done {
		return tls.ConnectionState{}
	}
	return c.tc.ConnectionState()
}
