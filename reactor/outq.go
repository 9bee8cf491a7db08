package reactor

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/panjf2000/gnet/v2"
	"golang.org/x/sys/unix"

	"github.com/mcpgate/gateway/frame"
)

// The outbound queue (why it is not gnet's): a slow reader makes the
// gateway hold what the kernel will not take, up to write_buffer_bytes
// plus one frame (SPEC 10, issue 15). gnet's outbound buffer held it on the
// Go heap, in a ring that doubles and list nodes rounded up to a power of
// two (a 1 MiB frame took a 2 MiB node), and once the reader left it stayed
// there: freed memory goes back to the OS only after a collection, and an
// idle gateway allocates nothing that would start one; gnet's buffer pool
// and the pace of the garbage collector (the heap may grow to twice what
// is live) doubled it again. Measured with 100 readers that read nothing
// (abuse TestSlowReaderRSS, 1 MiB write_buffer_bytes): +183 MiB of RSS on
// ws://, +320 MiB on wss://, none of it back 30 s after they left.
//
// So every byte the kernel does not take at once is copied to memory
// mapped outside the Go heap, in chunks of outChunk bytes, and unmapped as
// soon as it is written or the connection closes: a slow reader costs the
// bytes it holds (rounded up to a page, plus one partly sent chunk), the
// collector never sees them, and the RSS falls the moment they go.
//
// The socket is written directly (unix.Write on gnet's descriptor, on the
// connection's loop only), so gnet's outbound buffer stays empty. To learn
// when a full socket has room again, the queue arms a one-shot EPOLLOUT
// in the server's own epoll set (waker); the waker goroutine then runs the
// flush on the connection's loop. Replies from workers (and TLS records
// made off the loop) are appended under the queue's lock and flushed by a
// task on the loop; they wait there on the heap only until that task runs.
//
// Order: everything goes through the queue in lock order, so a close frame
// the loop queues after a reply a worker queued goes out after it.
const (
	outChunk   = 64 << 10 // bytes per off-heap chunk
	offReply   = 32 << 10 // a worker's reply this large is copied off the heap at once (pushFrame)
	outFreeMax = 16       // chunks kept mapped for reuse, all connections together (trimMemory drops them)
	outIOV     = 64       // segments per writev
)

// outSeg is a run of bytes waiting for the socket: a slice of an off-heap
// chunk (ch), a pooled reply buffer (ob) or a buffer that is ours to drop
// (neither).
type outSeg struct {
	b  []byte
	ob *outBuf
	ch *offChunk
}

// outQueue is what a connection has written and the kernel has not taken.
// Its byte count is c.sess.OutPending, kept under mu.
type outQueue struct {
	mu        sync.Mutex
	tmu       sync.Mutex // TLS: a worker's cap check and its write (pushFrame)
	segs      []outSeg   // FIFO: segs[head:]
	head      int
	scheduled bool // a flush task is queued on the loop
	armed     bool // waiting for EPOLLOUT
	added     bool // the socket is in the waker's epoll set
	gone      bool // OnClose ran, or a write failed: nothing more is queued
	tok       uint64
	iov       [][]byte // writev scratch
	task      atomic.Pointer[flushTask]
}

// flushTask is a connection's flushOut as a gnet.Runnable, made once, so
// that a reply queued from a worker costs no closure.
type flushTask struct{ c *conn }

func (t *flushTask) Run(context.Context) error {
	c := t.c
	if c.dead.Load() {
		return nil
	}
	defer func() {
		if r := recover(); r != nil {
			if c.onPanic(r) == gnet.Close {
				c.closeSocket()
			}
		}
	}()
	c.flushOut()
	return nil
}

// scheduleFlush has the loop run flushOut (runOnLoop without its closure).
func (c *conn) scheduleFlush() {
	if c.dead.Load() {
		return
	}
	t := c.out.task.Load()
	if t == nil {
		c.out.task.CompareAndSwap(nil, &flushTask{c: c})
		t = c.out.task.Load()
	}
	_ = c.gc.EventLoop().Execute(context.Background(), t)
}

func (q *outQueue) empty() bool { return q.head == len(q.segs) }

// writeLoop writes b from the loop, in order after anything queued: at
// once when nothing is (what the socket does not take is copied off the
// heap and the socket armed), else behind the queue. b is only lent.
func (c *conn) writeLoop(b []byte) {
	q := &c.out
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.gone || len(b) == 0 {
		return
	}
	if !q.empty() {
		c.appendOffLocked(b)
		return
	}
	if c.gc.OutboundBuffered() > 0 {
		// gnet holds bytes it wrote itself (an answer returned by OnOpen):
		// behind them.
		_, _ = c.gc.Write(b)
		return
	}
	rest, ok := writeSock(c.gc.Fd(), b)
	if !ok {
		c.brokenLocked()
		return
	}
	if len(rest) > 0 {
		c.appendOffLocked(rest)
		c.armLocked()
	}
}

// pushOut queues a buffer from any goroutine (a worker's reply, a TLS
// record made off the loop) and has the loop flush it. ob, when set, is
// put back once b is written or dropped; otherwise b is the queue's to
// drop. With limit > 0 a push that would take the queue past limit is
// refused (ob put back) and reports false, as does a push to a closed
// connection.
func (c *conn) pushOut(b []byte, ob *outBuf, limit int64) bool {
	q := &c.out
	q.mu.Lock()
	if q.gone || limit > 0 && c.sess.OutPending.Load()+int64(len(b)) > limit {
		q.mu.Unlock()
		if ob != nil {
			ob.release()
		}
		return false
	}
	if q.armed {
		// The socket is full: straight off the heap, where it waits.
		c.appendOffLocked(b)
		q.mu.Unlock()
		if ob != nil {
			ob.release()
		}
		return true
	}
	q.segs = append(q.segs, outSeg{b: b, ob: ob})
	c.sess.OutPending.Add(int64(len(b)))
	schedule := !q.scheduled
	q.scheduled = q.scheduled || schedule
	q.mu.Unlock()
	if schedule {
		c.scheduleFlush()
	}
	return true
}

// pushFrame queues msg as one text frame from any goroutine, copied
// straight off the heap: a large reply costs no heap buffer on its way
// (a pooled one would stay in the pool, a fresh one would be garbage, and
// either counts twice against the heap until a collection). Like pushOut
// it refuses a frame that would take the queue past limit.
func (c *conn) pushFrame(msg []byte, limit int64) bool {
	var h [frame.MaxHeaderSize]byte
	hdr := frame.AppendTextHeader(h[:0], len(msg))
	q := &c.out
	if c.tc != nil {
		// crypto/tls encrypts from where the bytes are; its records come
		// back through tlsOut, which copies them off the heap. Checked and
		// written under tmu, so that two workers' replies cannot both pass
		// the cap before either is queued.
		q.tmu.Lock()
		defer q.tmu.Unlock()
		if q.closed() || c.sess.OutPending.Load()+int64(len(hdr)+len(msg)) > limit {
			return false
		}
		if len(msg) >= offReply {
			_, _ = c.tc.WriteTwo(hdr, msg)
			return true
		}
		ob := outPool.Get().(*outBuf) // one record for a small reply
		ob.b = frame.AppendText(ob.b[:0], msg)
		_, _ = c.tc.Write(ob.b)
		ob.release()
		return true
	}
	q.mu.Lock()
	if q.gone || c.sess.OutPending.Load()+int64(len(hdr)+len(msg)) > limit {
		q.mu.Unlock()
		return false
	}
	c.appendOffLocked(hdr)
	c.appendOffLocked(msg)
	schedule := !q.scheduled && !q.armed
	q.scheduled = q.scheduled || schedule
	q.mu.Unlock()
	if schedule {
		c.scheduleFlush()
	}
	return true
}

// pushCopy queues a copy of b, off the heap, from any goroutine (a TLS
// record made off the loop), and has the loop flush it.
func (c *conn) pushCopy(b []byte) {
	q := &c.out
	q.mu.Lock()
	if q.gone {
		q.mu.Unlock()
		return
	}
	c.appendOffLocked(b)
	schedule := !q.scheduled && !q.armed
	q.scheduled = q.scheduled || schedule
	q.mu.Unlock()
	if schedule {
		c.scheduleFlush()
	}
}

// flushOut runs on the loop: write what is queued, as far as the socket
// takes it.
func (c *conn) flushOut() {
	q := &c.out
	q.mu.Lock()
	q.scheduled, q.armed = false, false
	ok := q.gone || c.flushLocked()
	q.mu.Unlock()
	if !ok {
		c.closeSocket() // the peer is gone; nothing can be delivered
	}
}

// flushLocked writes the queue until it is empty or the socket is full;
// then what is left moves off the heap and the socket is armed. It
// reports false when a write failed (the queue is dropped).
func (c *conn) flushLocked() bool {
	q := &c.out
	fd := c.gc.Fd()
	for !q.empty() {
		var n int
		var err error
		if len(q.segs)-q.head == 1 {
			n, err = unix.Write(fd, q.segs[q.head].b)
		} else {
			q.iov = q.iov[:0]
			for i := q.head; i < len(q.segs) && len(q.iov) < outIOV; i++ {
				q.iov = append(q.iov, q.segs[i].b)
			}
			n, err = unix.Writev(fd, q.iov)
			clear(q.iov)
		}
		if n > 0 {
			q.consumeLocked(c, n)
		}
		switch err {
		case nil:
			continue
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			c.offloadLocked()
			c.armLocked()
			return true
		default:
			c.brokenLocked()
			return false
		}
	}
	q.segs, q.head = q.segs[:0], 0
	if cap(q.segs) > 64 {
		q.segs = nil // a burst's backing array is not kept
	}
	return true
}

// consumeLocked drops n written bytes from the front of the queue.
func (q *outQueue) consumeLocked(c *conn, n int) {
	c.sess.OutPending.Add(-int64(n))
	for n > 0 {
		s := &q.segs[q.head]
		if n < len(s.b) {
			s.b = s.b[n:]
			return
		}
		n -= len(s.b)
		s.release()
		q.head++
	}
	if q.head >= 64 && q.head*2 >= len(q.segs) {
		// A reader that never catches up: the written entries go, so the
		// array does not grow for as long as the connection lives.
		k := copy(q.segs, q.segs[q.head:])
		clear(q.segs[k:])
		q.segs, q.head = q.segs[:k], 0
	}
}

func (s *outSeg) release() {
	if s.ob != nil {
		s.ob.release()
	}
	if s.ch != nil {
		putChunk(s.ch)
	}
	*s = outSeg{}
}

// appendOffLocked copies b to the end of the queue, off the heap.
func (c *conn) appendOffLocked(b []byte) {
	q := &c.out
	c.sess.OutPending.Add(int64(len(b)))
	for len(b) > 0 {
		if !q.empty() {
			if s := &q.segs[len(q.segs)-1]; s.ch != nil && len(s.b) < cap(s.b) {
				k := copy(s.b[len(s.b):cap(s.b)], b)
				s.b = s.b[:len(s.b)+k]
				b = b[k:]
				continue
			}
		}
		ch := getChunk()
		k := copy(ch.mem, b)
		q.segs = append(q.segs, outSeg{b: ch.mem[:k], ch: ch})
		b = b[k:]
	}
}

// offloadLocked moves the heap buffers still queued off the heap, in
// place, so that a reader that stalls holds no Go memory (the pooled
// reply buffers go back at once).
func (c *conn) offloadLocked() {
	q := &c.out
	heap := false
	for i := q.head; i < len(q.segs); i++ {
		if q.segs[i].ch == nil {
			heap = true
			break
		}
	}
	if !heap {
		return
	}
	old := q.segs[q.head:]
	q.segs, q.head = make([]outSeg, 0, len(old)), 0
	n := c.sess.OutPending.Load()
	for i := range old {
		s := &old[i]
		if s.ch != nil {
			q.segs = append(q.segs, *s)
			continue
		}
		c.appendOffLocked(s.b)
		s.release()
	}
	c.sess.OutPending.Store(n) // appendOffLocked counted the moved bytes again
}

// brokenLocked drops the queue after a failed write: the peer is gone.
func (c *conn) brokenLocked() {
	q := &c.out
	q.gone = true
	for i := q.head; i < len(q.segs); i++ {
		q.segs[i].release()
	}
	q.segs, q.head = nil, 0
	c.sess.OutPending.Store(0)
}

// closeOut runs in OnClose: the queue's memory goes back now, and
// whatever is queued later is dropped.
func (c *conn) closeOut() {
	q := &c.out
	q.mu.Lock()
	c.brokenLocked()
	if q.tok != 0 {
		c.srv.waker.forget(q.tok)
		q.tok = 0
	}
	q.mu.Unlock()
}

// outPending reports bytes written and not yet handed to the kernel.
func (c *conn) outPending() bool {
	return c.sess.OutPending.Load() > 0 || c.gc.OutboundBuffered() > 0
}

// writeSock writes b to a non-blocking socket until it is all written or
// the socket is full, and returns what is left; ok is false when the
// write failed.
func writeSock(fd int, b []byte) (rest []byte, ok bool) {
	for len(b) > 0 {
		n, err := unix.Write(fd, b)
		if n > 0 {
			b = b[n:]
		}
		switch err {
		case nil, unix.EINTR:
		case unix.EAGAIN:
			return b, true
		default:
			return nil, false
		}
	}
	return nil, true
}

// armLocked asks the waker to flush the queue once the socket has room.
func (c *conn) armLocked() {
	q := &c.out
	if q.armed {
		return
	}
	w := &c.srv.waker
	if q.tok == 0 {
		q.tok = w.register(c)
	}
	if w.arm(c.gc.Fd(), q.tok, q.added) {
		q.added, q.armed = true, true
		return
	}
	// No epoll (out of descriptors): poll instead.
	q.armed = true
	time.AfterFunc(sweepEvery/10, func() { c.scheduleFlush() })
}

// waker runs the flush of a connection whose full socket has room again:
// one epoll set of its own for the whole server, one-shot EPOLLOUT
// registrations keyed by a token (never a descriptor, which gnet may close
// and reuse: an event for a token that is gone is ignored).
type waker struct {
	once  sync.Once
	epfd  int
	ok    bool
	stop  atomic.Bool
	mu    sync.Mutex
	conns map[uint64]*conn
	next  uint64
}

func (w *waker) start() {
	w.once.Do(func() {
		w.conns = make(map[uint64]*conn)
		fd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
		if err != nil {
			return
		}
		w.epfd, w.ok = fd, true
		go w.run()
	})
}

func (w *waker) register(c *conn) uint64 {
	w.start()
	w.mu.Lock()
	defer w.mu.Unlock()
	w.next++
	w.conns[w.next] = c
	return w.next
}

func (w *waker) forget(tok uint64) {
	w.mu.Lock()
	delete(w.conns, tok)
	w.mu.Unlock()
}

// arm registers (or re-arms) fd for one EPOLLOUT.
func (w *waker) arm(fd int, tok uint64, added bool) bool {
	if !w.ok {
		return false
	}
	ev := unix.EpollEvent{Events: unix.EPOLLOUT | unix.EPOLLONESHOT, Fd: int32(uint32(tok)), Pad: int32(uint32(tok >> 32))}
	op := unix.EPOLL_CTL_ADD
	if added {
		op = unix.EPOLL_CTL_MOD
	}
	err := unix.EpollCtl(w.epfd, op, fd, &ev)
	switch {
	case err == unix.EEXIST:
		err = unix.EpollCtl(w.epfd, unix.EPOLL_CTL_MOD, fd, &ev)
	case err == unix.ENOENT:
		err = unix.EpollCtl(w.epfd, unix.EPOLL_CTL_ADD, fd, &ev)
	}
	return err == nil
}

func (w *waker) run() {
	var evs [128]unix.EpollEvent
	for !w.stop.Load() {
		n, err := unix.EpollWait(w.epfd, evs[:], 500)
		if err != nil {
			if err == unix.EINTR {
				continue
			}
			return
		}
		for i := range n {
			tok := uint64(uint32(evs[i].Fd)) | uint64(uint32(evs[i].Pad))<<32
			w.mu.Lock()
			c := w.conns[tok]
			w.mu.Unlock()
			if c != nil {
				c.scheduleFlush()
			}
		}
	}
	_ = unix.Close(w.epfd)
}

// close stops the waker goroutine (within its 500 ms wait).
func (w *waker) close() { w.stop.Store(true) }

// offChunk is outChunk bytes mapped outside the Go heap (or, if mapping
// failed, a heap slice).
type offChunk struct {
	mem    []byte
	mapped bool
}

var chunkFree struct {
	sync.Mutex
	list []*offChunk
}

// offHeld counts the bytes mapped for outbound chunks, free ones included.
var offHeld atomic.Int64

func getChunk() *offChunk {
	chunkFree.Lock()
	if n := len(chunkFree.list); n > 0 {
		ch := chunkFree.list[n-1]
		chunkFree.list = chunkFree.list[:n-1]
		chunkFree.Unlock()
		return ch
	}
	chunkFree.Unlock()
	p, err := unix.MmapPtr(-1, 0, nil, outChunk, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return &offChunk{mem: make([]byte, outChunk)}
	}
	offHeld.Add(outChunk)
	return &offChunk{mem: unsafe.Slice((*byte)(p), outChunk), mapped: true}
}

func putChunk(ch *offChunk) {
	if !ch.mapped {
		return
	}
	chunkFree.Lock()
	if len(chunkFree.list) < outFreeMax {
		chunkFree.list = append(chunkFree.list, ch)
		chunkFree.Unlock()
		return
	}
	chunkFree.Unlock()
	_ = unix.MunmapPtr(unsafe.Pointer(unsafe.SliceData(ch.mem)), outChunk)
	offHeld.Add(-outChunk)
	ch.mem = nil
}

// closed reports a queue that takes nothing more.
func (q *outQueue) closed() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.gone
}

// Requests in flight are inbound memory too: a client that asks faster
// than the upstream answers (or than it reads the answers) has its
// messages copied and queued for the upstream. relayRoom holds what one
// connection has in flight, with what it has not read, within
// write_buffer_bytes: a request past it is refused as a busy upstream
// would refuse it, unless it is the only one (a message is never larger
// than max_message_bytes). The bytes of a
// request are known when it is relayed, not when it is answered, so an
// answer takes back the average of those in flight; the count is exact
// again whenever nothing is in flight.
func (c *conn) relayRoom(requests int32, n int) bool {
	if requests <= 0 {
		return true // notifications and responses are not held for an answer
	}
	if c.inflight.Load() > 0 && c.relayed.Load()+c.backlog()+int64(n) > c.srv.lim().writeCap {
		return false
	}
	c.relayed.Add(int64(n))
	return true
}

// relayAnswered takes back the bytes of answered requests, left still in
// flight (Deliver).
func (c *conn) relayAnswered(answered, left int32) {
	if left <= 0 {
		c.relayed.Store(0)
		return
	}
	r := c.relayed.Load()
	c.relayed.Add(-r * int64(answered) / int64(left+answered))
}

// dropFreeChunks unmaps the chunks kept for reuse (trimMemory).
func dropFreeChunks() {
	chunkFree.Lock()
	list := chunkFree.list
	chunkFree.list = nil
	chunkFree.Unlock()
	for _, ch := range list {
		_ = unix.MunmapPtr(unsafe.Pointer(unsafe.SliceData(ch.mem)), outChunk)
		offHeld.Add(-outChunk)
	}
}

// refusedOut follows a reply refused by the queue (Deliver): over the cap
// it is a slow consumer; on a closed connection nothing is to be done.
func (c *conn) refusedOut() {
	if c.out.closed() {
		return
	}
	c.runOnLoop(func() {
		if c.failSlow() == gnet.Close {
			_ = c.gc.EventLoop().Close(c.gc)
		}
	})
}
