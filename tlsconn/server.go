package tlsconn

import (
	"crypto/tls"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Errors reported by Feed, Write and onHandshake.
var (
	// ErrBusy: every handshake slot is taken and the wait queue is full.
	ErrBusy = errors.New("tlsconn: too many TLS handshakes in progress")
	// ErrHandshakeTimeout: the handshake did not finish within
	// Config.HandshakeTimeout of NewConn.
	ErrHandshakeTimeout = errors.New("tlsconn: TLS handshake timed out")
	// ErrInputLimit: more than Config.MaxHandshakeInput bytes of ciphertext
	// were waiting before the handshake completed.
	ErrInputLimit = errors.New("tlsconn: too much input before the TLS handshake completed")
	// ErrNotEstablished: Write before the handshake completed.
	ErrNotEstablished = errors.New("tlsconn: TLS handshake not complete")
)

// Config configures a Server. Zero fields take the defaults below.
type Config struct {
	// TLS is the server configuration (see ServerTLSConfig). Required.
	TLS *tls.Config
	// MaxHandshakes caps the goroutines running handshakes (default 64). A
	// slot is held for the client's round trips too, not only for the CPU.
	MaxHandshakes int
	// MaxQueued caps the connections waiting for a slot (default
	// 4*MaxHandshakes; negative: no queue). Beyond it, Feed returns ErrBusy.
	MaxQueued int
	// HandshakeTimeout caps the handshake, from NewConn, queueing included
	// (default 10s).
	HandshakeTimeout time.Duration
	// MaxHandshakeInput caps the ciphertext buffered before the handshake
	// completes (default 16 KiB, several times a post-quantum ClientHello).
	MaxHandshakeInput int
	// HelloTimeout caps the wait for a complete ClientHello, from NewConn
	// (default 3s, at most HandshakeTimeout). The ClientHello is gathered
	// without a handshake slot, so a client that sends part of one and
	// stalls holds a socket and a few KiB until then, never a slot.
	HelloTimeout time.Duration
}

// Stats is a snapshot of the handshake pool.
type Stats struct {
	Active    int    // handshake goroutines running now
	Queued    int    // connections waiting for a slot
	Peak      int    // highest Active seen
	Completed uint64 // handshakes that succeeded
	Failed    uint64 // handshakes that failed, timed out or were refused
}

// Server holds the TLS configuration and the handshake pool shared by all the
// connections of a listener (or of several).
type Server struct {
	cfg Config

	mu         sync.Mutex
	active     int
	peak       int
	head, tail *Conn // FIFO of connections waiting for a handshake slot
	queued     int

	completed atomic.Uint64
	failed    atomic.Uint64
}

// NewServer checks cfg and applies its defaults.
func NewServer(cfg Config) (*Server, error) {
	if cfg.TLS == nil {
		return nil, errors.New("tlsconn: Config.TLS is nil")
	}
	if cfg.MaxHandshakes <= 0 {
		cfg.MaxHandshakes = 64
	}
	if cfg.MaxQueued < 0 {
		cfg.MaxQueued = 0
	} else if cfg.MaxQueued == 0 {
		cfg.MaxQueued = 4 * cfg.MaxHandshakes
	}
	if cfg.HandshakeTimeout <= 0 {
		cfg.HandshakeTimeout = 10 * time.Second
	}
	if cfg.MaxHandshakeInput <= 0 {
		cfg.MaxHandshakeInput = 16 << 10
	}
	if cfg.HelloTimeout <= 0 {
		cfg.HelloTimeout = 3 * time.Second
	}
	cfg.HelloTimeout = min(cfg.HelloTimeout, cfg.HandshakeTimeout)
	return &Server{cfg: cfg}, nil
}

// Stats returns a snapshot of the handshake pool.
func (s *Server) Stats() Stats {
	s.mu.Lock()
	st := Stats{Active: s.active, Queued: s.queued, Peak: s.peak}
	s.mu.Unlock()
	st.Completed = s.completed.Load()
	st.Failed = s.failed.Load()
	return st
}

// NewConn starts a server-side TLS connection. out receives the ciphertext
// to send, in order; it is called from the loop (LoopWrite, Read,
// CloseNotify: loop true, and the slice is lent for the call only: copy what
// is kept), from the handshake goroutine and from Write's callers (loop
// false, the slice is out's to keep), never twice at once, and must not
// block. onHandshake is called at most once with the outcome of the
// handshake, from a goroutine of the pool or a timer, unless Feed returned
// an error or Close came first.
//
// The timers start now: a connection that has not sent a complete
// ClientHello within HelloTimeout, or finished within HandshakeTimeout,
// fails with ErrHandshakeTimeout; until its ClientHello is complete it takes
// no handshake slot.
func (s *Server) NewConn(out func(b []byte, loop bool), onHandshake func(err error)) *Conn {
	c := &Conn{srv: s, onHS: onHandshake, born: time.Now()}
	c.raw.out = out
	c.raw.blocking = true
	c.raw.wake = make(chan struct{}, 1)
	c.tc = tls.Server(&c.raw, s.cfg.TLS)
	c.raw.mu.Lock()
	c.timer = time.AfterFunc(s.cfg.HelloTimeout, c.expire)
	c.raw.mu.Unlock()
	return c
}

// enqueue gives c a handshake slot, or a place in the queue.
func (s *Server) enqueue(c *Conn) error {
	s.mu.Lock()
	if s.active < s.cfg.MaxHandshakes {
		s.active++
		if s.active > s.peak {
			s.peak = s.active
		}
		s.mu.Unlock()
		go s.work(c)
		return nil
	}
	if s.queued >= s.cfg.MaxQueued {
		s.mu.Unlock()
		return ErrBusy
	}
	c.inQueue = true
	c.qprev = s.tail
	if s.tail != nil {
		s.tail.qnext = c
	} else {
		s.head = c
	}
	s.tail = c
	s.queued++
	s.mu.Unlock()
	return nil
}

// dequeue drops c from the wait queue (timeout, Close), so that dead
// connections do not hold queue places.
func (s *Server) dequeue(c *Conn) {
	s.mu.Lock()
	s.unlinkLocked(c)
	s.mu.Unlock()
}

func (s *Server) unlinkLocked(c *Conn) {
	if !c.inQueue {
		return
	}
	if c.qprev != nil {
		c.qprev.qnext = c.qnext
	} else {
		s.head = c.qnext
	}
	if c.qnext != nil {
		c.qnext.qprev = c.qprev
	} else {
		s.tail = c.qprev
	}
	c.qprev, c.qnext, c.inQueue = nil, nil, false
	s.queued--
}

// work is one goroutine of the pool: it runs handshakes until the queue is
// empty, then exits, so an idle server has no handshake goroutine.
func (s *Server) work(c *Conn) {
	for c != nil {
		c.handshake()
		s.mu.Lock()
		c = s.head
		if c != nil {
			s.unlinkLocked(c)
		} else {
			s.active--
		}
		s.mu.Unlock()
	}
}

// SetAddrs records the socket addresses that crypto/tls exposes as
// ClientHelloInfo.Conn. Call it before the first Feed.
func (c *Conn) SetAddrs(local, remote net.Addr) {
	c.raw.mu.Lock()
	c.raw.local, c.raw.remote = local, remote
	c.raw.mu.Unlock()
}
