package fdbudget

import (
	"context"
	"errors"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/mcpgate/gateway/metrics"
)

// fixed is a budget with a given limit and a count the test sets.
func fixed(t *testing.T, limit, burst int64, measured *atomic.Int64) *Budget {
	t.Helper()
	return New(Options{Limit: limit, AcceptBurst: burst, Count: func() (int, error) {
		return int(measured.Load()), nil
	}})
}

func TestHeadroomAndMargin(t *testing.T) {
	var m atomic.Int64
	b := fixed(t, 1000, 100, &m)
	// 100 burst + 16 + 1000/128 = 123; margin max(16, 877/64) = 16.
	if b.Headroom() != 123 || b.Margin() != 16 {
		t.Fatalf("headroom %d margin %d", b.Headroom(), b.Margin())
	}
	b = fixed(t, 20000, AcceptBurst(1, int64(Backlog(20000)), 2), &m)
	// backlog 1250: burst 1251*5/4+2 = 1565; headroom 1565+16+156 = 1737.
	if Backlog(20000) != 1250 || b.Headroom() != 1737 || b.Margin() != (20000-1737)/64 {
		t.Fatalf("backlog %d headroom %d margin %d", Backlog(20000), b.Headroom(), b.Margin())
	}
	if Backlog(256) != 16 || Backlog(1<<20) != 4096 {
		t.Fatalf("backlog %d %d", Backlog(256), Backlog(1<<20))
	}
	// A burst that does not fit: headroom capped at half the limit.
	b = fixed(t, 256, 4097*5/4, &m)
	if b.Headroom() != 128 {
		t.Fatalf("capped headroom %d", b.Headroom())
	}
}

func TestTryAcquireKeepsHeadroom(t *testing.T) {
	var m atomic.Int64
	m.Store(10) // the process's own descriptors, untracked
	b := fixed(t, 200, 50, &m)
	// headroom 50+16+1 = 67: 200-67-10 = 123 free.
	if b.Untracked() != 10 || b.Free() != 123 {
		t.Fatalf("untracked %d free %d", b.Untracked(), b.Free())
	}
	if !b.TryAcquire(Stdio, 120) {
		t.Fatal("120 of 123 refused")
	}
	if b.TryAcquire(Stdio, 4) {
		t.Fatal("4 granted with 3 free")
	}
	if b.Count(Stdio) != 120 || b.Refused(Stdio) != 1 {
		t.Fatalf("count %d refused %d", b.Count(Stdio), b.Refused(Stdio))
	}
	if !b.TryAcquire(HTTP, 3) {
		t.Fatal("3 of 3 refused")
	}
	b.Release(Stdio, 120)
	b.Release(HTTP, 3)
	if b.Tracked() != 0 || b.Free() != 123 {
		t.Fatalf("after release: tracked %d free %d", b.Tracked(), b.Free())
	}
}

func TestReconcileCountsUntracked(t *testing.T) {
	var m atomic.Int64
	b := fixed(t, 1000, 10, &m)
	var clients atomic.Int64
	b.Track(Client, clients.Load)
	clients.Store(100)
	b.Acquire(Stdio, 40)
	// The process holds 30 more than it counts (listeners, epoll, files).
	m.Store(170)
	b.Reconcile()
	if b.Untracked() != 30 || b.InUse() != 170 {
		t.Fatalf("untracked %d in use %d", b.Untracked(), b.InUse())
	}
	// Tracked counts move at once; untracked waits for the next count.
	clients.Store(50)
	if b.InUse() != 120 {
		t.Fatalf("in use %d after 50 clients left", b.InUse())
	}
	// Counted more than is open (a grant not yet opened): untracked is 0,
	// never negative.
	m.Store(60)
	b.Reconcile()
	if b.Untracked() != 0 || b.InUse() != 90 {
		t.Fatalf("untracked %d in use %d", b.Untracked(), b.InUse())
	}
	// A failed count keeps the last figures.
	b.count = func() (int, error) { return 0, errors.New("EMFILE") }
	b.Reconcile()
	if b.Measured() != 60 {
		t.Fatalf("measured %d after a failed count", b.Measured())
	}
}

func TestClientVerdict(t *testing.T) {
	var m atomic.Int64
	b := fixed(t, 1000, 84, &m) // headroom 84+16+7 = 107, margin 16
	var clients atomic.Int64
	b.Track(Client, clients.Load)
	for _, c := range []struct {
		n    int64
		want Verdict
	}{{0, Admit}, {877, Admit}, {878, Refuse}, {889, Refuse}, {890, Close}, {893, Close}, {2000, Close}} {
		clients.Store(c.n)
		if got := b.ClientVerdict(); got != c.want {
			t.Errorf("%d clients (free %d): %v, want %v", c.n, b.Free(), got, c.want)
		}
	}
	// Clients stop a margin before the others: with clients at the margin,
	// a worker still gets its descriptors.
	clients.Store(878)
	if !b.TryAcquire(Stdio, 9) {
		t.Fatal("a worker was refused within the client margin")
	}
	// Clients closed at once below the reserve leave it to the others: an
	// admin connection still fits.
	b.Release(Stdio, 9)
	clients.Store(890)
	if b.ClientVerdict() != Close || !b.TryAcquire(Admin, 1) {
		t.Fatalf("free %d, reserve %d: the admin connection did not fit", b.Free(), b.Reserve())
	}
}

func TestCountFDs(t *testing.T) {
	b := New(Options{})
	if b.Limit() != SoftLimit() {
		t.Fatalf("limit %d, soft limit %d", b.Limit(), SoftLimit())
	}
	dir, err := openFDDir()
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(dir)
	n0, err := countFDs(dir, make([]byte, 256)) // a small buffer: several getdents calls
	if err != nil {
		t.Fatal(err)
	}
	var files []*os.File
	for range 50 {
		f, err := os.Open(os.DevNull)
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, f)
	}
	n1, _ := countFDs(dir, make([]byte, 256))
	for _, f := range files {
		f.Close()
	}
	ents, _ := os.ReadDir("/proc/self/fd")
	if n1-n0 != 50 {
		t.Fatalf("50 files opened: count went %d -> %d", n0, n1)
	}
	if n0 < 3 || n0 != len(ents)-1 {
		t.Fatalf("count %d, /proc/self/fd lists %d (ReadDir's own among them)", n0, len(ents))
	}
	if allocs := testing.AllocsPerRun(10, func() { b.Reconcile() }); allocs > 0 {
		t.Fatalf("Reconcile allocates %.0f times", allocs)
	}
}

func TestMetricsAndRun(t *testing.T) {
	mm := metrics.New()
	var n atomic.Int64
	n.Store(42)
	b := New(Options{Limit: 500, Metrics: mm, Interval: 20 * time.Millisecond,
		Count: func() (int, error) { return int(n.Load()), nil }})
	done := make(chan struct{})
	defer close(done)
	go b.Run(done)
	if got := testutil.ToFloat64(mm.DescriptorsLimit); got != 500 {
		t.Fatalf("limit gauge %v", got)
	}
	n.Store(77)
	deadline := time.Now().Add(2 * time.Second)
	for testutil.ToFloat64(mm.DescriptorsOpen) != 77 {
		if time.Now().After(deadline) {
			t.Fatalf("open gauge %v", testutil.ToFloat64(mm.DescriptorsOpen))
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestDialAndListener(t *testing.T) {
	var m atomic.Int64
	b := fixed(t, 100, 10, &m) // headroom 10+16+0 = 26: 74 free
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	wl := b.Listener(Admin, ln)
	accepted := make(chan net.Conn, 100)
	go func() {
		for {
			c, err := wl.Accept()
			if err != nil {
				close(accepted)
				return
			}
			accepted <- c
		}
	}()
	dial := b.Dial(HTTP, (&net.Dialer{}).DialContext)
	var conns, server []net.Conn
	for range 30 {
		c, err := dial(context.Background(), "tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
		server = append(server, <-accepted) // counted as admin
	}
	if _, ok := conns[0].(syscall.Conn); !ok {
		t.Fatal("a TCP connection lost its SyscallConn")
	}
	if b.Count(HTTP) != 30 || b.Count(Admin) != 30 || b.Free() != 14 {
		t.Fatalf("http %d admin %d free %d", b.Count(HTTP), b.Count(Admin), b.Free())
	}
	b.Acquire(Other, 13)
	// One left: the dial takes it, and its accepted end does not fit: it is
	// closed at once (the client reads EOF).
	c, err := dial(context.Background(), "tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	conns = append(conns, c)
	_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("over budget, the admin side was not closed: %v", err)
	}
	if b.Count(Admin) != 30 || b.Refused(Admin) != 1 {
		t.Fatalf("admin %d refused %d", b.Count(Admin), b.Refused(Admin))
	}
	if _, err := dial(context.Background(), "tcp", ln.Addr().String()); !errors.Is(err, ErrNoDescriptor) {
		t.Fatalf("dial over budget: %v", err)
	}
	var wg sync.WaitGroup
	for _, c := range conns {
		wg.Add(1)
		go func() { defer wg.Done(); c.Close(); c.Close() }() // twice: released once
	}
	wg.Wait()
	if b.Count(HTTP) != 0 {
		t.Fatalf("http %d after close", b.Count(HTTP))
	}
	for _, c := range server {
		c.Close()
	}
	if b.Count(Admin) != 0 {
		t.Fatalf("admin %d after close", b.Count(Admin))
	}
}
