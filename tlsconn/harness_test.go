package tlsconn

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// ---- certificates ----

type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool
}

func newCA(t testing.TB) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "tlsconn test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &testCA{cert: cert, key: key, pool: pool}
}

// leaf returns PEM cert and key for localhost/127.0.0.1 with the serial.
func (ca *testCA) leaf(t testing.TB, serial int64) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial),
		Subject:      pkix.Name{CommonName: "localhost"},
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})
}

// writePair writes the files through a rename, as a careful operator would.
func writePair(t testing.TB, dir string, certPEM, keyPEM []byte) (certFile, keyFile string) {
	t.Helper()
	certFile, keyFile = filepath.Join(dir, "server.crt"), filepath.Join(dir, "server.key")
	for _, f := range []struct {
		name string
		b    []byte
	}{{certFile, certPEM}, {keyFile, keyPEM}} {
		tmp := f.name + ".tmp"
		if err := os.WriteFile(tmp, f.b, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, f.name); err != nil {
			t.Fatal(err)
		}
	}
	return certFile, keyFile
}

func quietLog() *slog.Logger { return slog.New(slog.DiscardHandler) }

// newTestServer builds a reloader, the TLS config and a Server.
func newTestServer(t testing.TB, ca *testCA, minVersion string, cfg Config) (*Server, *CertReloader, string) {
	t.Helper()
	dir := t.TempDir()
	c, k := ca.leaf(t, 100)
	certFile, keyFile := writePair(t, dir, c, k)
	r, err := NewCertReloader(certFile, keyFile, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Close)
	tc, err := ServerTLSConfig(r, minVersion)
	if err != nil {
		t.Fatal(err)
	}
	cfg.TLS = tc
	s, err := NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s, r, dir
}

// ---- the event-loop harness ----

// testLoop stands in for a gnet event loop: one goroutine runs every call on
// Conn (Feed, Read, Close and the echo Write), taking tasks from a channel
// the way gnet runs Execute tasks. Per-socket reader goroutines play the
// kernel's part: they read ciphertext and post it as a "traffic" task, in
// chunks of at most feedChunk bytes (7 in the slow-drip test). out queues
// ciphertext to a per-socket writer goroutine, as AsyncWrite would.
type testLoop struct {
	t         testing.TB
	srv       *Server
	ln        net.Listener
	tasks     chan func()
	stop      chan struct{}
	wg        sync.WaitGroup
	feedChunk int
	// app handles plaintext on the loop; nil means echo.
	app func(hc *hconn, p []byte)

	established chan *hconn
	hsErrs      chan error
	feedErrs    chan error
	conns       map[*hconn]struct{} // loop only
}

type hconn struct {
	l      *testLoop
	sock   net.Conn
	c      *Conn
	w      *asyncWriter
	closed bool // loop only
	buf    []byte
}

func startLoop(t testing.TB, srv *Server, feedChunk int) *testLoop {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if feedChunk <= 0 {
		feedChunk = 64 << 10
	}
	l := &testLoop{t: t, srv: srv, ln: ln, tasks: make(chan func(), 4096), stop: make(chan struct{}),
		feedChunk: feedChunk, established: make(chan *hconn, 1024),
		hsErrs: make(chan error, 1024), feedErrs: make(chan error, 1024),
		conns: map[*hconn]struct{}{}}
	l.wg.Add(2)
	go l.run()
	go l.accept()
	t.Cleanup(l.close)
	return l
}

func (l *testLoop) addr() string { return l.ln.Addr().String() }

func (l *testLoop) close() {
	l.ln.Close()
	close(l.stop)
	l.wg.Wait()
}

func (l *testLoop) exec(f func()) {
	select {
	case l.tasks <- f:
	case <-l.stop:
	}
}

func (l *testLoop) run() {
	defer l.wg.Done()
	for {
		select {
		case f := <-l.tasks:
			f()
		case <-l.stop:
			for hc := range l.conns {
				hc.close()
			}
			return
		}
	}
}

func (l *testLoop) accept() {
	defer l.wg.Done()
	for {
		sock, err := l.ln.Accept()
		if err != nil {
			return
		}
		hc := &hconn{l: l, sock: sock, w: newAsyncWriter(sock), buf: make([]byte, 32<<10)}
		hc.c = l.srv.NewConn(hc.w.push, func(err error) {
			l.exec(func() { hc.onHandshake(err) })
		})
		hc.c.SetAddrs(sock.LocalAddr(), sock.RemoteAddr())
		l.exec(func() { l.conns[hc] = struct{}{} })
		go hc.readLoop()
	}
}

// readLoop is the kernel: it reads the socket and posts traffic to the loop.
func (hc *hconn) readLoop() {
	buf := make([]byte, hc.l.feedChunk)
	for {
		n, err := hc.sock.Read(buf)
		if n > 0 {
			b := append([]byte(nil), buf[:n]...)
			hc.l.exec(func() { hc.onTraffic(b) })
		}
		if err != nil {
			hc.l.exec(hc.close)
			return
		}
	}
}

func (hc *hconn) onTraffic(b []byte) {
	if hc.closed {
		return
	}
	if err := hc.c.Feed(b); err != nil {
		select {
		case hc.l.feedErrs <- err:
		default:
		}
		hc.close()
		return
	}
	hc.drain()
}

func (hc *hconn) onHandshake(err error) {
	if err != nil {
		// Reported even when the socket closed first: the client may hang
		// up as soon as it reads our alert, before this task runs.
		select {
		case hc.l.hsErrs <- err:
		default:
		}
		hc.close()
		return
	}
	if hc.closed {
		return
	}
	select {
	case hc.l.established <- hc:
	default:
	}
	hc.drain() // bytes that came with the client's Finished
}

func (hc *hconn) drain() {
	for !hc.closed {
		n, err := hc.c.Read(hc.buf)
		if n > 0 {
			if hc.l.app != nil {
				hc.l.app(hc, hc.buf[:n])
			} else if _, werr := hc.c.Write(hc.buf[:n]); werr != nil {
				hc.l.t.Errorf("echo write: %v", werr)
			}
		}
		if errors.Is(err, ErrWouldBlock) {
			return
		}
		if err != nil {
			hc.close()
			return
		}
	}
}

func (hc *hconn) close() {
	if hc.closed {
		return
	}
	hc.closed = true
	delete(hc.l.conns, hc)
	hc.c.Close()
	hc.w.close()
}

// asyncWriter writes out's slices to the socket in order, off the caller's
// goroutine, like gnet's AsyncWrite queue.
type asyncWriter struct {
	mu     sync.Mutex
	cond   *sync.Cond
	q      [][]byte
	done   bool
	sock   net.Conn
	closed chan struct{}
}

func newAsyncWriter(sock net.Conn) *asyncWriter {
	w := &asyncWriter{sock: sock, closed: make(chan struct{})}
	w.cond = sync.NewCond(&w.mu)
	go w.run()
	return w
}

func (w *asyncWriter) push(b []byte, loop bool) {
	b = append([]byte(nil), b...) // lent for the call only
	w.mu.Lock()
	if !w.done {
		w.q = append(w.q, b)
		w.cond.Signal()
	}
	w.mu.Unlock()
}

func (w *asyncWriter) run() {
	defer close(w.closed)
	for {
		w.mu.Lock()
		for len(w.q) == 0 && !w.done {
			w.cond.Wait()
		}
		q := w.q
		w.q = nil
		done := w.done
		w.mu.Unlock()
		for _, b := range q {
			if _, err := w.sock.Write(b); err != nil {
				break
			}
		}
		if done {
			w.sock.Close()
			return
		}
	}
}

// close flushes what is queued, then closes the socket.
func (w *asyncWriter) close() {
	w.mu.Lock()
	w.done = true
	w.cond.Signal()
	w.mu.Unlock()
}

// ---- clients ----

func clientConfig(ca *testCA, minV, maxV uint16) *tls.Config {
	return &tls.Config{RootCAs: ca.pool, ServerName: "localhost", MinVersion: minV, MaxVersion: maxV,
		NextProtos: []string{"http/1.1"}}
}

func dialTLS(t testing.TB, addr string, cfg *tls.Config) *tls.Conn {
	t.Helper()
	raw, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c := tls.Client(raw, cfg)
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if err := c.Handshake(); err != nil {
		raw.Close()
		t.Fatalf("client handshake: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// echo writes msg and reads the same number of bytes back.
func echo(t testing.TB, c net.Conn, msg []byte) {
	t.Helper()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write(msg); err != nil {
		t.Fatalf("write: %v", err)
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatalf("read echo: %v", err)
	}
	if string(got) != string(msg) {
		t.Fatalf("echo mismatch: %d bytes", len(msg))
	}
}

// dripConn writes in pieces of n bytes, each its own TCP segment.
type dripConn struct {
	net.Conn
	n int
}

func (d dripConn) Write(b []byte) (int, error) {
	total := 0
	for len(b) > 0 {
		k := min(d.n, len(b))
		m, err := d.Conn.Write(b[:k])
		total += m
		if err != nil {
			return total, err
		}
		b = b[k:]
		time.Sleep(50 * time.Microsecond)
	}
	return total, nil
}
