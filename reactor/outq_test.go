package reactor

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/panjf2000/gnet/v2"
	"golang.org/x/sys/unix"
)

// A loop of one goroutine, and a gnet.Conn that is only a descriptor: enough
// for the outbound queue (outq.go), which writes the socket itself.
type testLoop struct {
	gnet.EventLoop
	tasks chan gnet.Runnable
}

func (l *testLoop) Execute(ctx context.Context, r gnet.Runnable) error {
	l.tasks <- r
	return nil
}

type testGC struct {
	gnet.Conn
	fd   int
	loop *testLoop
}

func (g *testGC) Fd() int                   { return g.fd }
func (g *testGC) OutboundBuffered() int     { return 0 }
func (g *testGC) EventLoop() gnet.EventLoop { return g.loop }
func (g *testGC) Write([]byte) (int, error) { panic("gnet's Write is not used") }

// queuePair is a connection whose socket's peer is r; its loop runs tasks
// until stop.
func queuePair(t testing.TB, sndbuf int) (c *conn, r *os.File, stop func()) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.SetsockoptInt(fds[0], unix.SOL_SOCKET, unix.SO_SNDBUF, sndbuf); err != nil {
		t.Fatal(err)
	}
	if err := unix.SetNonblock(fds[1], false); err != nil {
		t.Fatal(err)
	}
	loop := &testLoop{tasks: make(chan gnet.Runnable, 1024)}
	srv := &Server{}
	srv.limp.Store(&limits{writeCap: 64 << 20})
	c = &conn{srv: srv, gc: &testGC{fd: fds[0], loop: loop}}
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case task := <-loop.tasks:
				_ = task.Run(context.Background())
			case <-done:
				return
			}
		}
	}()
	r = os.NewFile(uintptr(fds[1]), "peer")
	return c, r, func() {
		close(done)
		wg.Wait()
		c.closeOut()
		srv.waker.close()
		_ = unix.Close(fds[0])
		r.Close()
	}
}

// onLoop runs f on c's loop and waits for it.
func onLoop(c *conn, f func()) {
	done := make(chan struct{})
	c.runOnLoop(func() { f(); close(done) })
	<-done
}

// What the loop writes and what workers queue reach the peer whole and in
// the order they were queued, through a socket far smaller than what is
// written (so most of it waits in the queue, off the heap, and goes out on
// EPOLLOUT); once it is all read nothing stays mapped but the spare chunks.
func TestOutQueueOrder(t *testing.T) {
	before := offHeld.Load()
	c, r, stop := queuePair(t, 4096)
	defer stop()

	var want bytes.Buffer
	var wmu sync.Mutex
	msg := func(i, n int) []byte {
		b := bytes.Repeat([]byte{byte('a' + i%26)}, n)
		copy(b, fmt.Sprintf("<%d>", i))
		return b
	}
	// One writer at a time (the loop or a worker), as the queue's lock
	// orders them: want records that order.
	for i := range 200 {
		b := msg(i, 1000+i*97%70000)
		wmu.Lock()
		want.Write(b)
		switch i % 3 {
		case 0:
			onLoop(c, func() { c.writeLoop(b) })
		case 1:
			if !c.pushOut(append([]byte(nil), b...), nil, 0) {
				t.Fatal("pushOut refused")
			}
		default:
			c.pushCopy(b)
		}
		wmu.Unlock()
	}
	if c.sess.OutPending.Load() == 0 {
		t.Fatal("nothing queued behind a 4 KiB socket buffer")
	}
	if mapped := offHeld.Load() - before; mapped < int64(outChunk) {
		t.Errorf("%d bytes mapped for a backlog of %d", mapped, c.sess.OutPending.Load())
	}
	got := make([]byte, want.Len())
	_ = r.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(r, got); err != nil {
		t.Fatalf("read %v (pending %d)", err, c.sess.OutPending.Load())
	}
	if !bytes.Equal(got, want.Bytes()) {
		t.Fatal("the peer read other bytes than were written, or in another order")
	}
	for end := time.Now().Add(2 * time.Second); c.sess.OutPending.Load() != 0 && time.Now().Before(end); {
		time.Sleep(time.Millisecond)
	}
	if n := c.sess.OutPending.Load(); n != 0 {
		t.Errorf("OutPending %d after everything was read", n)
	}
	if held := offHeld.Load() - before; held > outFreeMax*outChunk {
		t.Errorf("%d bytes still mapped once the queue is empty (spares at most %d)", held, outFreeMax*outChunk)
	}
}

// A worker's reply that would take the queue past the cap is refused; what
// is queued is dropped and unmapped at close.
func TestOutQueueCapAndClose(t *testing.T) {
	c, _, stop := queuePair(t, 4096)
	defer stop()
	big := make([]byte, 256<<10)
	if !c.pushFrame(big, 1<<20) {
		t.Fatal("a first 256 KiB reply refused under a 1 MiB cap")
	}
	for end := time.Now().Add(2 * time.Second); c.sess.OutPending.Load() < 200<<10 && time.Now().Before(end); {
		time.Sleep(time.Millisecond) // the loop writes what the socket takes
	}
	n := 1
	for c.pushFrame(big, 1<<20) {
		n++
	}
	if p := c.sess.OutPending.Load(); p > 1<<20 {
		t.Errorf("%d bytes queued past a %d-byte cap", p, 1<<20)
	}
	if n > 5 {
		t.Errorf("%d replies of 256 KiB accepted under a 1 MiB cap", n)
	}
	onLoop(c, func() {})
	c.closeOut()
	if c.sess.OutPending.Load() != 0 || !c.out.closed() {
		t.Fatal("the queue was not dropped at close")
	}
	if c.pushFrame([]byte("x"), 1<<20) || c.pushOut([]byte("x"), nil, 0) {
		t.Fatal("a closed queue took more")
	}
}

// A write to a peer that is gone drops the queue instead of failing later.
func TestOutQueuePeerGone(t *testing.T) {
	c, r, stop := queuePair(t, 4096)
	defer stop()
	r.Close()
	onLoop(c, func() { c.writeLoop(make([]byte, 64<<10)) })
	if c.sess.OutPending.Load() != 0 || !c.out.closed() {
		t.Fatalf("pending %d after writing to a closed peer", c.sess.OutPending.Load())
	}
}

// BenchmarkDeliverSmall is a worker's small reply going to a socket that
// takes it: queued, flushed on the loop, written.
func BenchmarkDeliverSmall(b *testing.B) {
	c, r, stop := queuePair(b, 1<<20)
	defer stop()
	go func() { _, _ = io.Copy(io.Discard, r) }()
	reply := bytes.Repeat([]byte("x"), 200)
	b.ReportAllocs()
	b.SetBytes(int64(len(reply)))
	for b.Loop() {
		ob := outPool.Get().(*outBuf)
		ob.b = append(ob.b[:0], reply...)
		if !c.pushOut(ob.b, ob, 1<<30) {
			b.Fatal("refused")
		}
		onLoop(c, func() {})
	}
}
