package tlsconn

import (
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// ErrWouldBlock is returned by [Conn.Read] when no complete record is
// buffered. It is also what the adapter answers crypto/tls when it has no
// ciphertext left: Temporary() must be true so that crypto/tls neither makes
// the error sticky nor drops the partial record it holds (conn.go,
// readRecordOrCCS).
var ErrWouldBlock net.Error = wouldBlock{}

type wouldBlock struct{}

func (wouldBlock) Error() string   { return "tlsconn: would block" }
func (wouldBlock) Timeout() bool   { return true }
func (wouldBlock) Temporary() bool { return true }

// feedChunk is the size of the pooled inbound buffers. Most feeds are small
// (a ClientHello, a few WebSocket frames); larger ones get a buffer of their
// own that is dropped once consumed.
const feedChunk = 4096

var feedPool = sync.Pool{New: func() any { b := make([]byte, 0, feedChunk); return &b }}

// feedBig is the size of the pooled buffers for larger feeds, up to one
// socket read of the reactor (gnet reads 64 KiB at a time): a client
// sending large messages fed a fresh buffer of its own on every read, as
// many bytes allocated as received (abuse TestSlowReaderRSS, wss://).
const feedBig = 64 << 10

var feedBigPool = sync.Pool{New: func() any { b := make([]byte, 0, feedBig); return &b }}

// rawConn is the net.Conn that crypto/tls sits on. Inbound it serves the
// ciphertext the loop fed it; outbound it hands every write to out.
type rawConn struct {
	mu       sync.Mutex
	buf      *[]byte // pending ciphertext is (*buf)[off:]; nil when empty
	off      int
	blocking bool          // handshake mode: Read waits for Feed instead of ErrWouldBlock
	wake     chan struct{} // Feed/close signal a blocked Read; nil once non-blocking
	closed   bool
	closeErr error

	// The handshake goroutine's slot (Server.slots): held while crypto/tls
	// computes, given back while Read waits for the client. held belongs
	// to the handshake goroutine.
	srv  *Server
	held bool

	wmu     sync.Mutex // orders the calls to out, whatever crypto/tls does
	wclosed atomic.Bool
	out     func(b []byte, loop bool)
	// loop says the write in progress comes from the connection's event
	// loop (Conn.LoopWrite, Read, CloseNotify). Written and read only under
	// Conn.omu, which those methods and Write hold around crypto/tls.
	loop bool

	local, remote net.Addr
}

func (r *rawConn) pendingLocked() int {
	if r.buf == nil {
		return 0
	}
	return len(*r.buf) - r.off
}

// appendLocked copies b into the inbound buffer; the loop's slice (a gnet
// Peek result) is only valid until it discards it.
func (r *rawConn) appendLocked(b []byte) {
	if r.buf == nil {
		switch {
		case len(b) <= feedChunk:
			r.buf = feedPool.Get().(*[]byte)
		case len(b) <= feedBig:
			r.buf = feedBigPool.Get().(*[]byte)
		default:
			nb := make([]byte, 0, len(b))
			r.buf = &nb
		}
		r.off = 0
	} else if r.off > 0 && r.off == len(*r.buf) {
		*r.buf = (*r.buf)[:0]
		r.off = 0
	}
	*r.buf = append(*r.buf, b...)
}

// releaseLocked returns the inbound buffer to the pool once it is empty, so
// that an idle connection holds none.
func (r *rawConn) releaseLocked() {
	if r.buf == nil {
		return
	}
	b := r.buf
	r.buf, r.off = nil, 0
	switch cap(*b) {
	case feedChunk:
		*b = (*b)[:0]
		feedPool.Put(b)
	case feedBig:
		*b = (*b)[:0]
		feedBigPool.Put(b)
	}
}

func (r *rawConn) signalLocked() {
	if r.wake != nil {
		select {
		case r.wake <- struct{}{}:
		default:
		}
	}
}

// closeLocked makes every later Read and Write fail with err, and wakes a
// handshake goroutine blocked in Read.
func (r *rawConn) closeLocked(err error) {
	if r.closed {
		return
	}
	r.closed = true
	r.closeErr = err
	r.wclosed.Store(true)
	r.signalLocked()
	r.releaseLocked()
}

// Read never returns (n > 0, err != nil): crypto/tls's atLeastReader turns
// (n, nil) into io.EOF once it has enough, and would pass an error on even
// when the bytes were sufficient.
func (r *rawConn) Read(p []byte) (int, error) {
	r.mu.Lock()
	for {
		if n := r.pendingLocked(); n > 0 {
			if r.blocking && !r.held {
				// The client answered: compute again, once a slot is free.
				r.mu.Unlock()
				r.acquire()
				r.mu.Lock()
				continue
			}
			n = copy(p, (*r.buf)[r.off:])
			r.off += n
			if r.off == len(*r.buf) {
				r.releaseLocked()
			}
			r.mu.Unlock()
			return n, nil
		}
		if r.closed {
			err := r.closeErr
			r.mu.Unlock()
			return 0, err
		}
		if !r.blocking {
			r.mu.Unlock()
			return 0, ErrWouldBlock
		}
		wake := r.wake
		r.mu.Unlock()
		r.release() // nothing to compute until the client answers
		<-wake
		r.mu.Lock()
	}
}

// Write hands b to out, lent for the call: crypto/tls reuses its record
// buffer (outBufPool in writeRecordLocked), so out copies what it keeps.
// (It used to be copied here for writes from other goroutines: a fresh
// heap buffer per record, 16 KiB each for large replies, which out then
// copied again to hold it off the heap for a slow reader.)
func (r *rawConn) Write(b []byte) (int, error) {
	r.wmu.Lock()
	defer r.wmu.Unlock()
	if r.wclosed.Load() {
		return 0, net.ErrClosed
	}
	if len(b) == 0 {
		return 0, nil
	}
	r.out(b, r.loop)
	return len(b), nil
}

// Close is called by tls.Conn.Close and by the handshake context; the state
// machine in Conn decides what it means.
func (r *rawConn) Close() error {
	r.mu.Lock()
	r.closeLocked(net.ErrClosed)
	r.mu.Unlock()
	return nil
}

func (r *rawConn) LocalAddr() net.Addr {
	if r.local == nil {
		return noAddr{}
	}
	return r.local
}

func (r *rawConn) RemoteAddr() net.Addr {
	if r.remote == nil {
		return noAddr{}
	}
	return r.remote
}

// Deadlines are the Server's business (HandshakeTimeout); crypto/tls only
// sets a write deadline around close_notify, and our writes never block.
func (r *rawConn) SetDeadline(time.Time) error      { return nil }
func (r *rawConn) SetReadDeadline(time.Time) error  { return nil }
func (r *rawConn) SetWriteDeadline(time.Time) error { return nil }

// noAddr stands in when the reactor gave no address, so that a GetCertificate
// calling hello.Conn.RemoteAddr().String() does not panic.
type noAddr struct{}

func (noAddr) Network() string { return "tcp" }
func (noAddr) String() string  { return "unknown" }
