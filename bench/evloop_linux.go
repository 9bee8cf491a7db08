//go:build linux

package bench

import (
	"io"
	"os"
	"runtime"
	"slices"
	"strconv"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/gobwas/ws"
	"golang.org/x/sys/unix"
)

// The event-loop engine runs the call phase of plaintext (ws://) targets.
// The goroutine engine costs about 25 µs of generator CPU per call at 40,000
// calls/s over 1,000 connections (one core saturated, send_lag p99 92 ms):
// per call a reader goroutine wakes (futex and epoll traffic), reads the
// answer and then reads again to get EAGAIN, and the pacer sleeps in its own
// nanosleep. Here one locked OS thread per --pacers owns a level-triggered
// epoll set over its connections' sockets: it blocks in epoll_pwait2 (a
// nanosecond timeout) until the next call is due or a socket is readable,
// reads each readable socket once, parses the frames from that read, and
// writes requests straight to the socket. Connect, auth and initialize stay
// on net.Conn; the socket is then duplicated and the net.Conn closed, so the
// Go runtime's netpoller no longer watches it.

const evEvents = 256 // events taken per epoll wait

// evLoopSupported: the event-loop engine exists on this platform.
const evLoopSupported = true

// evEngine is the set of loops of one process.
type evEngine struct {
	e       *engine
	loops   []*evLoop
	restore func()
}

// evLoop is one thread's share of the connections. Everything in it is
// touched by its own thread only, except what other goroutines reach
// through post (commands, run on the loop) and the atomics.
type evLoop struct {
	e     *engine
	epfd  int
	efd   int // eventfd: wakes the loop for a command
	cmds  chan func()
	done  chan struct{} // closed when the loop has exited
	paced chan struct{} // closed when its open-loop schedule is sent (or stopped)

	inflight atomic.Int64 // calls awaiting an answer, for the drain

	conns  []*econn
	rbuf   []byte // shared read buffer
	ph     *callPhase
	pacer  *pacer
	order  []*econn // open loop: the connection of each pacer position
	begun  bool     // closed loop: the first --inflight calls went out
	quit   bool
	pwait2 bool // the kernel has epoll_pwait2
}

// econn is one connection on a loop.
type econn struct {
	fd      int
	slot    int32 // index in loop.conns: the epoll event's data
	idx     int   // global index
	in      inbox
	out     outbox
	wantOut bool // EPOLLOUT is in the interest set
	dead    bool // closed; nothing more is read or sent
	wfailed bool // a write failed: nothing more is sent (the read side reports the loss)
	pending map[int64]int64
	nextID  int64
	pbuf    []byte
	wbuf    []byte
	w       func([]byte) (int, error)
}

// write and sysRead are raw system calls: the socket is non-blocking, so
// the call returns at once and need not hand the P over as a blocking call
// (entersyscall/exitsyscall) would, once per call and per answer.
func (c *econn) write(p []byte) (int, error) { return rawRW(unix.SYS_WRITE, c.fd, p) }

func sysRead(fd int, p []byte) (int, error) { return rawRW(unix.SYS_READ, fd, p) }

func rawRW(trap uintptr, fd int, p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	n, _, e := unix.RawSyscall(trap, uintptr(fd), uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}

// newEvEngine starts p loops (the call phase starts later, on command).
func newEvEngine(e *engine, p int) (*evEngine, error) {
	ev := &evEngine{e: e}
	for range p {
		l, err := newEvLoop(e)
		if err != nil {
			ev.close()
			return nil, err
		}
		ev.loops = append(ev.loops, l)
		go l.run()
	}
	// A loop waking from epoll_pwait2 needs a P; when other goroutines hold
	// every P it waits for one, and that wait is counted as latency. One
	// spare P per loop (unless the user set GOMAXPROCS) keeps it short.
	if os.Getenv("GOMAXPROCS") == "" {
		prev := runtime.GOMAXPROCS(runtime.NumCPU() + p)
		ev.restore = func() { runtime.GOMAXPROCS(prev) }
	}
	return ev, nil
}

func newEvLoop(e *engine) (*evLoop, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, os.NewSyscallError("epoll_create1", err)
	}
	efd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		unix.Close(epfd)
		return nil, os.NewSyscallError("eventfd", err)
	}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, efd, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: -1}); err != nil {
		unix.Close(epfd)
		unix.Close(efd)
		return nil, os.NewSyscallError("epoll_ctl", err)
	}
	return &evLoop{
		e: e, epfd: epfd, efd: efd, cmds: make(chan func(), 1024),
		done: make(chan struct{}), paced: make(chan struct{}),
		rbuf: make([]byte, 64<<10), pwait2: true,
	}, nil
}

// post runs fn on the loop's thread.
func (l *evLoop) post(fn func()) {
	select {
	case l.cmds <- fn:
	case <-l.done:
		return
	}
	var one [8]byte
	one[0] = 1
	unix.Write(l.efd, one[:])
}

// call runs fn on the loop's thread and waits for it; false if the loop has
// exited.
func (l *evLoop) call(fn func()) bool {
	ran := make(chan struct{})
	l.post(func() { fn(); close(ran) })
	select {
	case <-ran:
		return true
	case <-l.done:
		return false
	}
}

// add registers a connection with the loop (on the loop).
func (l *evLoop) add(c *econn) {
	c.slot = int32(len(l.conns))
	l.conns = append(l.conns, c)
	if err := unix.EpollCtl(l.epfd, unix.EPOLL_CTL_ADD, c.fd, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: c.slot}); err != nil {
		l.fail(c, os.NewSyscallError("epoll_ctl", err))
		return
	}
	if len(c.in.buf) > 0 {
		// Bytes read with the handshake: handle them now, the socket may
		// not become readable again.
		l.feed(c, 0)
	}
}

// run is the loop's thread.
func (l *evLoop) run() {
	defer close(l.done)
	lockPacerThread() // 1 ns timer slack: epoll_pwait2 wakes on time
	defer func() {
		unix.Close(l.epfd)
		unix.Close(l.efd)
	}()
	events := make([]unix.EpollEvent, evEvents)
	nextSweep := mono() + sweepEvery
	for !l.quit {
		now := mono()
		due := l.sendDue(now)
		if now >= nextSweep {
			l.sweep(now)
			nextSweep = now + sweepEvery
		}
		n := l.wait(events, loopWait(mono(), due, nextSweep))
		for _, ev := range events[:n] {
			if ev.Fd < 0 {
				l.commands()
				continue
			}
			c := l.conns[ev.Fd]
			if c.dead {
				continue
			}
			if ev.Events&(unix.EPOLLIN|unix.EPOLLERR|unix.EPOLLHUP) != 0 {
				l.readable(c)
			}
			if ev.Events&unix.EPOLLOUT != 0 && !c.dead {
				pending, err := c.out.flush(c.w)
				l.afterWrite(c, pending, err)
			}
		}
	}
}

// wait blocks in epoll for at most ns nanoseconds.
func (l *evLoop) wait(events []unix.EpollEvent, ns int64) int {
	for {
		var n int
		var err error
		if l.pwait2 {
			ts := unix.NsecToTimespec(ns)
			r, _, e := unix.Syscall6(unix.SYS_EPOLL_PWAIT2, uintptr(l.epfd),
				uintptr(unsafe.Pointer(&events[0])), uintptr(len(events)), uintptr(unsafe.Pointer(&ts)), 0, 0)
			n = int(r)
			if e != 0 {
				err = e
			}
			if err == unix.ENOSYS {
				l.pwait2 = false
				continue
			}
		} else {
			ms, sleep := splitWait(ns)
			if sleep > 0 {
				preciseSleep(time.Duration(sleep))
			}
			n, err = unix.EpollWait(l.epfd, events, ms)
		}
		if err == unix.EINTR {
			return 0
		}
		if err != nil {
			panic("bench: epoll wait: " + err.Error()) // a bad epfd: a bug
		}
		return n
	}
}

// commands runs the posted commands.
func (l *evLoop) commands() {
	var b [8]byte
	unix.Read(l.efd, b[:])
	for {
		select {
		case fn := <-l.cmds:
			fn()
		default:
			return
		}
	}
}

// begin starts the call phase on this loop (a command).
func (l *evLoop) begin(ph *callPhase) {
	l.ph = ph
	if l.e.closedLoop {
		close(l.paced)
		return
	}
	var idx []int
	for _, c := range l.conns {
		if !c.dead {
			idx = append(idx, c.idx)
		}
	}
	// Connections are added in the order their handshakes finished.
	slices.Sort(idx)
	l.pacer = newPacer(idx, l.e.total, l.e.o.Rate, ph.start, ph.end)
	byIdx := make(map[int]*econn, len(idx))
	for _, c := range l.conns {
		byIdx[c.idx] = c
	}
	l.order = make([]*econn, len(idx))
	for k, g := range idx {
		l.order[k] = byIdx[g]
	}
}

// sendDue sends the calls that are due at now and returns when the next
// one is (far in the future when none is).
func (l *evLoop) sendDue(now int64) int64 {
	const never = int64(1) << 62
	ph := l.ph
	if ph == nil {
		return never
	}
	if ph.stopped.Load() {
		l.endPacing()
		return never
	}
	if l.e.closedLoop {
		if l.begun {
			return never
		}
		if now < ph.start {
			return ph.start
		}
		l.begun = true
		for _, c := range l.conns {
			for range l.e.o.Inflight {
				l.send(c, mono())
			}
		}
		return never
	}
	p := l.pacer
	if p == nil {
		return never
	}
	// At most a batch before the sockets are read again, so that a
	// generator far behind its schedule still takes answers in.
	for range 512 {
		if p.done {
			l.endPacing()
			return never
		}
		if p.at > now {
			return p.at
		}
		l.send(l.order[p.pos], p.at)
		p.next()
	}
	return now
}

func (l *evLoop) endPacing() {
	if l.pacer != nil || l.e.closedLoop {
		l.pacer = nil
		select {
		case <-l.paced:
		default:
			close(l.paced)
		}
	}
}

// send issues one call due at `at` (mono ns).
func (l *evLoop) send(c *econn, at int64) {
	if c.dead || c.wfailed {
		return
	}
	e := l.e
	if !e.closedLoop {
		e.hists[hLag].record(c.idx, (mono()-at)/1000)
	}
	c.nextID++
	id := c.nextID
	p := append(c.pbuf[:0], e.callHead...)
	p = strconv.AppendInt(p, id, 10)
	p = append(p, e.callTail...)
	c.pbuf = p
	c.wbuf = appendFrame(c.wbuf[:0], ws.OpText, p)
	pending, err := c.out.write(c.wbuf, c.w)
	if err == errOutboxFull {
		e.errs.add("call/send buffer full", 1)
		return
	}
	c.pending[id] = at
	l.inflight.Add(1)
	e.sent.Add(1)
	if err != nil {
		delete(c.pending, id)
		l.inflight.Add(-1)
	}
	l.afterWrite(c, pending, err)
}

// afterWrite watches for writability while bytes are queued, and stops
// sending on a connection whose write failed.
func (l *evLoop) afterWrite(c *econn, pending bool, err error) {
	if err != nil && err != errOutboxFull {
		if !c.wfailed && !l.e.closing.Load() {
			l.e.errs.add(errKind("call", err), 1)
		}
		c.wfailed = true
		pending = false
	}
	if pending != c.wantOut {
		ev := uint32(unix.EPOLLIN)
		if pending {
			ev |= unix.EPOLLOUT
		}
		c.wantOut = pending
		unix.EpollCtl(l.epfd, unix.EPOLL_CTL_MOD, c.fd, &unix.EpollEvent{Events: ev, Fd: c.slot})
	}
}

// readable reads a ready socket once and handles what came.
func (l *evLoop) readable(c *econn) {
	buf := c.in.space(l.rbuf)
	n, err := sysRead(c.fd, buf)
	switch {
	case err == unix.EAGAIN || err == unix.EINTR:
		return
	case err != nil:
		l.fail(c, err)
		return
	case n == 0:
		l.fail(c, io.EOF)
		return
	}
	l.feed(c, n)
}

func (l *evLoop) feed(c *econn, n int) {
	if err := c.in.feed(l.rbuf, n, func(op ws.OpCode, p []byte) error { return l.message(c, op, p) }); err != nil {
		l.fail(c, err)
	}
}

// message handles one message or control frame (the goroutine engine's
// readMessage and onMessage).
func (l *evLoop) message(c *econn, op ws.OpCode, p []byte) error {
	e := l.e
	switch op {
	case ws.OpPing:
		pending, err := c.out.write(appendFrame(nil, ws.OpPong, p), c.w)
		l.afterWrite(c, pending, err)
		return nil
	case ws.OpPong:
		return nil
	case ws.OpClose:
		code, reason := ws.ParseCloseFrameData(p)
		if code == 0 {
			code = ws.StatusNoStatusRcvd
		}
		return &closeError{code: code, reason: reason}
	case ws.OpText:
	default:
		e.errs.add("hold/binary message", 1)
		return nil
	}
	now := mono()
	answered := e.account(c.idx, p, now, func(id int64) (int64, bool, int64) {
		at, ok := c.pending[id]
		if ok {
			delete(c.pending, id)
			l.inflight.Add(-1)
		}
		return at, ok, c.nextID
	})
	if ph := l.ph; answered && e.closedLoop && ph != nil && now < ph.end && !ph.stopped.Load() {
		l.send(c, mono())
	}
	return nil
}

// fail closes a connection that the server or the network ended, and
// counts the loss unless the run is closing it.
func (l *evLoop) fail(c *econn, err error) {
	if c.dead {
		return
	}
	c.dead = true
	unix.Close(c.fd) // also leaves the epoll set: the fd was the socket's only one
	n := int64(len(c.pending))
	clear(c.pending)
	l.inflight.Add(-n)
	if l.e.closing.Load() {
		return
	}
	l.e.lost.Add(1)
	l.e.errs.add(errKind("hold", err), 1)
	l.e.errs.add("call/lost in flight", n)
}

// sweep expires calls older than --timeout; in closed loop each expired
// call is replaced so that the connection keeps its --inflight.
func (l *evLoop) sweep(now int64) {
	limit := int64(l.e.o.Timeout)
	ph := l.ph
	for _, c := range l.conns {
		if c.dead || len(c.pending) == 0 {
			continue
		}
		expired := 0
		for id, at := range c.pending {
			if now-at > limit {
				delete(c.pending, id)
				expired++
			}
		}
		if expired == 0 {
			continue
		}
		l.inflight.Add(-int64(expired))
		l.e.errs.add("call/timeout", int64(expired))
		if l.e.closedLoop && ph != nil && now < ph.end && !ph.stopped.Load() {
			for range expired {
				l.send(c, mono())
			}
		}
	}
}

// clearPending forgets the unanswered calls and returns how many (a command).
func (l *evLoop) clearPending() int {
	n := 0
	for _, c := range l.conns {
		n += len(c.pending)
		clear(c.pending)
	}
	l.inflight.Store(0)
	return n
}

// closeAll sends close 1000 on every connection, without waiting for the
// socket (as wsConn.closeNow), closes them and ends the loop (a command).
func (l *evLoop) closeAll() {
	for _, c := range l.conns {
		if c.dead {
			continue
		}
		c.dead = true
		if !c.wfailed {
			c.out.write(appendFrame(nil, ws.OpClose, ws.NewCloseFrameBody(ws.StatusNormalClosure, "")), c.w)
		}
		unix.Close(c.fd)
	}
	l.quit = true
}
