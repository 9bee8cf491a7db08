package fdbudget

import (
	"context"
	"net"
	"sync"
	"syscall"
)

// DialFunc is the shape of net.Dialer.DialContext, http.Transport's
// DialContext and go-redis's Dialer.
type DialFunc func(ctx context.Context, network, addr string) (net.Conn, error)

// Dial wraps dial so that each connection acquires one descriptor of kind
// k before it is dialed (refused: ErrNoDescriptor, nothing dialed) and
// releases it on its first Close. A nil budget returns dial unchanged.
func (b *Budget) Dial(k Kind, dial DialFunc) DialFunc {
	if b == nil {
		return dial
	}
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		if !b.TryAcquire(k, 1) {
			// Not a net.OpError: the peer did not refuse anything, and
			// callers that mark a refusing peer down must not.
			return nil, ErrNoDescriptor
		}
		c, err := dial(ctx, network, addr)
		if err != nil {
			b.Release(k, 1)
			return nil, err
		}
		return b.wrap(k, c), nil
	}
}

func (b *Budget) wrap(k Kind, c net.Conn) net.Conn {
	cc := &conn{Conn: c, b: b, k: k}
	if sc, ok := c.(syscall.Conn); ok {
		// go-redis checks an idle connection's health through
		// syscall.Conn; keep it visible.
		return &sysConn{conn: cc, sc: sc}
	}
	return cc
}

// conn releases its descriptor once, on the first Close.
type conn struct {
	net.Conn
	b    *Budget
	k    Kind
	once sync.Once
}

func (c *conn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { c.b.Release(c.k, 1) })
	return err
}

// NetConn returns the wrapped connection (as crypto/tls.Conn.NetConn does).
func (c *conn) NetConn() net.Conn { return c.Conn }

type sysConn struct {
	*conn
	sc syscall.Conn
}

func (c *sysConn) SyscallConn() (syscall.RawConn, error) { return c.sc.SyscallConn() }

// Listener wraps ln so that each accepted connection acquires one
// descriptor of kind k; over budget, it is closed at once and Accept
// waits for the next. Errors from ln pass through (net/http retries
// temporary ones, EMFILE among them). A nil budget returns ln unchanged.
func (b *Budget) Listener(k Kind, ln net.Listener) net.Listener {
	if b == nil {
		return ln
	}
	return &listener{Listener: ln, b: b, k: k}
}

type listener struct {
	net.Listener
	b *Budget
	k Kind
}

func (l *listener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		// The descriptor exists already: the question is whether
		// counting it leaves the accept headroom free.
		if l.b.TryAcquire(l.k, 1) {
			return l.b.wrap(l.k, c), nil
		}
		_ = c.Close()
	}
}
