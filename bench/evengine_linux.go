//go:build linux

package bench

import (
	"context"
	"net"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// The evEngine's side that other goroutines call: handing connections over
// to the loops, and driving the call phase through commands.

// adopt takes an established connection over: its socket is duplicated and
// the net.Conn closed (which removes the socket from the Go netpoller; the
// duplicate keeps it open), and bytes already buffered by the handshake
// reader are carried over. i is the local index.
func (ev *evEngine) adopt(i int, c *wsConn) error {
	tc, ok := c.nc.(*net.TCPConn)
	if !ok {
		return errNotTCP
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return err
	}
	fd := -1
	var derr error
	if err := rc.Control(func(s uintptr) { fd, derr = unix.FcntlInt(s, unix.F_DUPFD_CLOEXEC, 0) }); err != nil {
		return err
	}
	if derr != nil {
		return os.NewSyscallError("dup", derr)
	}
	ec := &econn{fd: fd, idx: c.idx, pending: make(map[int64]int64, 4)}
	ec.w = ec.write
	if n := c.br.Buffered(); n > 0 {
		b, _ := c.br.Peek(n)
		ec.in.buf = append(make([]byte, 0, n+inboxChunk), b...)
	}
	c.nc.Close()
	l := ev.loops[i%len(ev.loops)]
	l.post(func() { l.add(ec) })
	return nil
}

type evError string

func (e evError) Error() string { return string(e) }

const errNotTCP = evError("not a TCP connection")

// run is the call phase over the loops; the engine drains and counts after.
func (ev *evEngine) run(ctx context.Context, ph *callPhase, start, end time.Time) {
	for _, l := range ev.loops {
		l.call(func() { l.begin(ph) })
	}
	if ev.e.closedLoop {
		sleepUntil(ctx, end)
		return
	}
	for _, l := range ev.loops {
		select {
		case <-l.paced:
		case <-l.done:
		}
	}
}

func (ev *evEngine) inFlight() int {
	n := int64(0)
	for _, l := range ev.loops {
		n += l.inflight.Load()
	}
	return int(n)
}

func (ev *evEngine) clearPending() int {
	n := 0
	for _, l := range ev.loops {
		l.call(func() { n += l.clearPending() })
	}
	return n
}

// close closes every connection and stops the loops, waiting at most 5 s.
func (ev *evEngine) close() {
	var wg sync.WaitGroup
	for _, l := range ev.loops {
		wg.Add(1)
		go func() {
			defer wg.Done()
			l.post(l.closeAll)
			select {
			case <-l.done:
			case <-time.After(5 * time.Second):
			}
		}()
	}
	wg.Wait()
	if ev.restore != nil {
		ev.restore()
		ev.restore = nil
	}
}
