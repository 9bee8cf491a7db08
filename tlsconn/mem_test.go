package tlsconn

import (
	"bufio"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"os"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// memPipe connects a client tls.Conn to a server Conn in memory, with no
// file descriptor: the client's writes are fed to the Conn under loopMu
// (standing in for the event loop) and the Conn's out appends to the
// client's inbound buffer. It lets the memory test hold 10,000 server
// connections while the clients are gone.
type memPipe struct {
	mu     sync.Mutex
	cond   *sync.Cond
	in     []byte
	closed bool

	loopMu sync.Mutex
	srv    *Conn
	rbuf   []byte
	echo   bool
	tap    *[][]byte // benchmarks: collect the client's records instead
}

// memSink is all that a server Conn's out keeps once the client is dropped.
type memSink struct{ p atomic.Pointer[memPipe] }

func (s *memSink) out(b []byte, loop bool) {
	if p := s.p.Load(); p != nil {
		p.deliver(append([]byte(nil), b...)) // lent for the call only
	}
}

func newMemPipe(srv *Server) (*memPipe, *memSink, chan error) {
	p := &memPipe{rbuf: make([]byte, 4096), echo: true}
	p.cond = sync.NewCond(&p.mu)
	sink := &memSink{}
	sink.p.Store(p)
	hs := make(chan error, 1)
	p.srv = srv.NewConn(sink.out, func(err error) {
		if err == nil {
			p.loopMu.Lock()
			p.drain()
			p.loopMu.Unlock()
		}
		hs <- err
	})
	return p, sink, hs
}

func (p *memPipe) deliver(b []byte) {
	p.mu.Lock()
	p.in = append(p.in, b...)
	p.cond.Broadcast()
	p.mu.Unlock()
}

func (p *memPipe) drain() {
	for {
		n, err := p.srv.Read(p.rbuf)
		if n > 0 && p.echo {
			p.srv.Write(p.rbuf[:n])
		}
		if err != nil {
			return
		}
	}
}

// Read and Write make memPipe the client's net.Conn.
func (p *memPipe) Read(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for len(p.in) == 0 && !p.closed {
		p.cond.Wait()
	}
	if len(p.in) == 0 {
		return 0, io.EOF
	}
	n := copy(b, p.in)
	p.in = p.in[n:]
	if len(p.in) == 0 {
		p.in = nil
	}
	return n, nil
}

func (p *memPipe) Write(b []byte) (int, error) {
	p.loopMu.Lock()
	defer p.loopMu.Unlock()
	if p.tap != nil {
		*p.tap = append(*p.tap, append([]byte(nil), b...))
		return len(b), nil
	}
	if err := p.srv.Feed(b); err != nil {
		return 0, err
	}
	p.drain()
	return len(b), nil
}

func (p *memPipe) Close() error {
	p.mu.Lock()
	p.closed = true
	p.cond.Broadcast()
	p.mu.Unlock()
	return nil
}

func (p *memPipe) LocalAddr() net.Addr                { return noAddr{} }
func (p *memPipe) RemoteAddr() net.Addr               { return noAddr{} }
func (p *memPipe) SetDeadline(t time.Time) error      { return nil }
func (p *memPipe) SetReadDeadline(t time.Time) error  { return nil }
func (p *memPipe) SetWriteDeadline(t time.Time) error { return nil }

// idleConn makes one established server Conn that has echoed one small
// message, then drops the client side.
func idleConn(srv *Server, ccfg *tls.Config) (*Conn, error) {
	return idleConnMsg(srv, ccfg, []byte(`{"type":"auth","token":"0123456789abcdef"}`))
}

func idleConnMsg(srv *Server, ccfg *tls.Config, msg []byte) (*Conn, error) {
	p, sink, hs := newMemPipe(srv)
	c := tls.Client(p, ccfg)
	if err := c.Handshake(); err != nil {
		return nil, err
	}
	if err := <-hs; err != nil {
		return nil, err
	}
	if _, err := c.Write(msg); err != nil {
		return nil, err
	}
	if _, err := io.ReadFull(c, make([]byte, len(msg))); err != nil {
		return nil, err
	}
	sink.p.Store(nil)
	return p.srv, nil
}

func heapNow() (heap, stack uint64) {
	var m runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&m)
	return m.HeapAlloc, m.StackInuse
}

// TestIdleMemory measures the Go heap held per idle established connection
// (TLSCONN_IDLE_CONNS of them, 1000 by default; the report used 10000), and
// for comparison the heap plus stack of crypto/tls served the net/http way:
// a goroutine blocked in Read with 4 KiB bufio reader and writer.
func TestIdleMemory(t *testing.T) {
	if raceEnabled || testing.Short() {
		t.Skip("memory figures are meaningless under -race; skipped with -short")
	}
	n := 1000
	if s := os.Getenv("TLSCONN_IDLE_CONNS"); s != "" {
		n, _ = strconv.Atoi(s)
	}
	ca := newCA(t)
	srv, _, _ := newTestServer(t, ca, "1.2", Config{MaxHandshakes: 8})
	small := []byte(`{"type":"auth","token":"0123456789abcdef"}`)
	cases := []struct {
		name   string
		cfg    *tls.Config
		msg    []byte
		budget bool // held to the heap budget below
	}{
		{"TLS1.3 X25519MLKEM768 (Go default)", clientConfig(ca, tls.VersionTLS13, tls.VersionTLS13), small, true},
		{"TLS1.3 X25519", func() *tls.Config {
			c := clientConfig(ca, tls.VersionTLS13, tls.VersionTLS13)
			c.CurvePreferences = []tls.CurveID{tls.X25519}
			return c
		}(), small, true},
		{"TLS1.2", clientConfig(ca, tls.VersionTLS12, tls.VersionTLS12), small, true},
		// crypto/tls would keep rawInput at its high-water mark (16 KiB
		// after one full-size record); buffers.go hands it back.
		{"TLS1.3 after one 64 KiB message", clientConfig(ca, tls.VersionTLS13, tls.VersionTLS13),
			make([]byte, 64<<10), true},
	}
	for _, tc := range cases {
		// Warm up shared state (ticket keys, pools) outside the measurement.
		if _, err := idleConnMsg(srv, tc.cfg, tc.msg); err != nil {
			t.Fatal(err)
		}
		g0 := runtime.NumGoroutine()
		h0, _ := heapNow()
		conns := make([]*Conn, n)
		var wg sync.WaitGroup
		var failed atomic.Int32
		for w := range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := w; i < n; i += 4 {
					c, err := idleConnMsg(srv, tc.cfg.Clone(), tc.msg)
					if err != nil {
						failed.Add(1)
						continue
					}
					conns[i] = c
				}
			}()
		}
		wg.Wait()
		if failed.Load() > 0 {
			t.Fatalf("%d handshakes failed", failed.Load())
		}
		h1, _ := heapNow()
		g1 := runtime.NumGoroutine()
		per := float64(h1-h0) / float64(n)
		t.Logf("%-36s %d idle conns: %.0f B heap each (%.2f KiB), goroutines %+d",
			tc.name, n, per, per/1024, g1-g0)
		// The product target is 10 KiB of RSS per TLS connection; RSS is
		// about 1.5x the live heap (GC percent 50), so the heap budget is 6 KiB
		// (measured: 3.2 KiB with buffers.go, 6.7 KiB without).
		if tc.budget && per > 6*1024 {
			t.Errorf("%s: %.0f B per idle connection, budget 6 KiB", tc.name, per)
		}
		for _, c := range conns {
			c.Close()
		}
		runtime.KeepAlive(conns)
	}

	// Baseline: goroutine per connection, as net/http serves TLS.
	h0, s0 := heapNow()
	srvCfg := srv.cfg.TLS
	var held []net.Conn
	for range n {
		a, b := net.Pipe()
		sc := tls.Server(a, srvCfg)
		ready := make(chan struct{})
		go func() {
			br := bufio.NewReaderSize(sc, 4096)
			bw := bufio.NewWriterSize(sc, 4096)
			buf := make([]byte, 64)
			for {
				k, err := br.Read(buf)
				if err != nil {
					return
				}
				bw.Write(buf[:k])
				bw.Flush()
				select {
				case <-ready:
				default:
					close(ready)
				}
			}
		}()
		cc := tls.Client(b, clientConfig(ca, tls.VersionTLS13, tls.VersionTLS13))
		msg := []byte(`{"type":"auth","token":"0123456789abcdef"}`)
		go func() { cc.Write(msg) }()
		if _, err := io.ReadFull(cc, make([]byte, len(msg))); err != nil {
			t.Fatal(err)
		}
		<-ready
		held = append(held, a, b)
	}
	h1, s1 := heapNow()
	per := float64(h1-h0+s1-s0) / float64(n)
	t.Logf("%-36s %d idle conns: %.0f B heap+stack each (%.2f KiB) [goroutine per conn, net.Pipe]",
		"baseline TLS1.3 default", n, per, per/1024)
	for _, c := range held {
		c.Close() // the pipes, not the tls.Conns: close_notify would wait for a reader
	}
}

// TestReadEmptyAfterIdle: the adapter holds no buffer once drained.
func TestReadEmptyAfterIdle(t *testing.T) {
	ca := newCA(t)
	srv, _, _ := newTestServer(t, ca, "1.2", Config{})
	c, err := idleConn(srv, clientConfig(ca, tls.VersionTLS13, tls.VersionTLS13))
	if err != nil {
		t.Fatal(err)
	}
	c.raw.mu.Lock()
	buf, wake := c.raw.buf, c.raw.wake
	c.raw.mu.Unlock()
	if buf != nil || wake != nil || c.timer != nil || c.onHS != nil {
		t.Fatalf("idle conn holds buf=%v wake=%v timer=%v cb=%v", buf != nil, wake != nil, c.timer != nil, c.onHS != nil)
	}
	if _, err := c.Read(make([]byte, 10)); !errors.Is(err, ErrWouldBlock) {
		t.Fatalf("read: %v", err)
	}
	raw, hand, in := c.fields()
	if raw.Cap() != 0 || hand.Cap() != 0 || in.Size() != 0 {
		t.Fatalf("idle conn keeps crypto/tls buffers: rawInput %d B, hand %d B, input %d B", raw.Cap(), hand.Cap(), in.Size())
	}
}

// TestBufferFieldsFound: the crypto/tls fields that buffers.go releases
// still exist with the expected types. When a Go release renames them,
// idle TLS connections silently keep ~3.5 KiB more each: this test is the
// alarm.
func TestBufferFieldsFound(t *testing.T) {
	if !bufferFields.ok {
		t.Fatal("crypto/tls.Conn has no rawInput/hand (bytes.Buffer) or input (bytes.Reader) field: update tlsconn/buffers.go")
	}
}
