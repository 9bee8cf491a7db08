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
	// MaxHandshakes caps the handshakes computing at once (default 64): a
	// slot is held while crypto/tls works on the handshake, and given back
	// while the client thinks (its round trips), so that slow or busy
	// clients cannot hold the server's CPU idle.
	MaxHandshakes int
	// MaxQueued caps the handshakes in progress beyond MaxHandshakes
	// (default 4*MaxHandshakes; negative: none): each has a goroutine,
	// waiting for its client or for a slot. Beyond it, Feed returns ErrBusy.
	MaxQueued int
	// HandshakeTimeout caps the handshake, from NewConn, queueing included
	// (default 10s).
	HandshakeTimeout time.Duration
	// MaxHandshakeInput caps the ciphertext buffered before the handshake
	// completes (default 16 KiB, several times a post-quantum ClientHello).
	MaxHandshakeInput int
	// HelloTimeout caps the wait for a complete ClientHello, from NewConn
	// (default 3s, at most HandshakeTimeout). The ClientHello is gathered
	// without a handshake goroutine, so a client that sends part of one and
	// stalls holds a socket and a few KiB until then, never a slot.
	HelloTimeout time.Duration
}

// Stats is a snapshot of the handshakes.
type Stats struct {
	Active    int    // handshakes computing now (slots held, at most MaxHandshakes)
	Queued    int    // handshakes ready to compute, waiting for a slot
	InFlight  int    // handshake goroutines: computing, waiting for a slot or for their client
	Peak      int    // highest Active seen
	Completed uint64 // handshakes that succeeded
	Failed    uint64 // handshakes that failed, timed out or were refused
}

// Server holds the TLS configuration and the handshake slots shared by all
// the connections of a listener (or of several).
type Server struct {
	cfg Config

	slots   chan struct{} // a token per handshake computing
	waiting atomic.Int32  // handshakes waiting for a slot

	mu       sync.Mutex
	inflight int
	peak     int
	idle     int        // workers waiting for a handshake (work)
	jobs     chan *Conn // hands a handshake to an idle worker

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
	return &Server{cfg: cfg, slots: make(chan struct{}, cfg.MaxHandshakes), jobs: make(chan *Conn)}, nil
}

// Stats returns a snapshot of the handshakes.
func (s *Server) Stats() Stats {
	s.mu.Lock()
	st := Stats{Active: len(s.slots), Queued: int(s.waiting.Load()), InFlight: s.inflight, Peak: s.peak}
	s.mu.Unlock()
	st.Completed = s.completed.Load()
	st.Failed = s.failed.Load()
	return st
}

// NewConn starts a server-side TLS connection. out receives the ciphertext
// to send, in order; it is called from the loop (LoopWrite, Read,
// CloseNotify: loop true) and from the handshake goroutine and Write's
// callers (loop false), never twice at once, and must not block. The slice
// is lent for the call only: out copies what it keeps. onHandshake is called at most once with the outcome of the
// handshake, from a handshake goroutine or a timer, unless Feed returned
// an error or Close came first.
//
// The timers start now: a connection that has not sent a complete
// ClientHello within HelloTimeout, or finished within HandshakeTimeout,
// fails with ErrHandshakeTimeout; until its ClientHello is complete it has
// no handshake goroutine.
func (s *Server) NewConn(out func(b []byte, loop bool), onHandshake func(err error)) *Conn {
	c := &Conn{srv: s, onHS: onHandshake, born: time.Now()}
	c.raw.out = out
	c.raw.blocking = true
	c.raw.wake = make(chan struct{}, 1)
	c.raw.srv = s
	c.tc = tls.Server(&c.raw, s.cfg.TLS)
	c.raw.mu.Lock()
	c.timer = time.AfterFunc(s.cfg.HelloTimeout, c.expire)
	c.raw.mu.Unlock()
	return c
}

// start gives c a handshake goroutine, unless MaxHandshakes+MaxQueued are
// in flight already.
func (s *Server) start(c *Conn) error {
	s.mu.Lock()
	if s.inflight >= s.cfg.MaxHandshakes+s.cfg.MaxQueued {
		s.mu.Unlock()
		return ErrBusy
	}
	s.inflight++
	s.mu.Unlock()
	select {
	case s.jobs <- c: // an idle worker, its stack already grown for crypto
	default:
		go s.work(c)
	}
	return nil
}

// workerIdle is how long a handshake goroutine waits for the next one
// before it exits: a storm reuses them, an idle server has none.
const workerIdle = time.Second

// work runs handshakes, one at a time, as long as they keep coming. Reusing
// the goroutine saves growing a fresh stack to the depth crypto/tls needs.
func (s *Server) work(c *Conn) {
	t := time.NewTimer(workerIdle)
	defer t.Stop()
	for {
		c.handshake()
		s.mu.Lock()
		s.inflight--
		if s.idle >= s.cfg.MaxHandshakes {
			s.mu.Unlock()
			return
		}
		s.idle++
		s.mu.Unlock()
		t.Reset(workerIdle)
		select {
		case c = <-s.jobs:
			s.mu.Lock()
			s.idle--
			s.mu.Unlock()
		case <-t.C:
			s.mu.Lock()
			s.idle--
			s.mu.Unlock()
			return
		}
	}
}

// acquire takes a slot for the calling handshake goroutine, waiting for one.
func (r *rawConn) acquire() {
	if r.held {
		return
	}
	s := r.srv
	select {
	case s.slots <- struct{}{}:
	default:
		s.waiting.Add(1)
		s.slots <- struct{}{}
		s.waiting.Add(-1)
	}
	r.held = true
	if n := len(s.slots); n > 0 {
		s.mu.Lock()
		s.peak = max(s.peak, n)
		s.mu.Unlock()
	}
}

// release gives the slot back (handshake goroutine only).
func (r *rawConn) release() {
	if r.held {
		r.held = false
		<-r.srv.slots
	}
}

// SetAddrs records the socket addresses that crypto/tls exposes as
// ClientHelloInfo.Conn. Call it before the first Feed.
func (c *Conn) SetAddrs(local, remote net.Addr) {
	c.raw.mu.Lock()
	c.raw.local, c.raw.remote = local, remote
	c.raw.mu.Unlock()
}
