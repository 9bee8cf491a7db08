package tlsconn

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

func versions() []struct {
	name string
	v    uint16
} {
	return []struct {
		name string
		v    uint16
	}{{"TLS1.2", tls.VersionTLS12}, {"TLS1.3", tls.VersionTLS13}}
}

func TestEcho(t *testing.T) {
	ca := newCA(t)
	srv, _, _ := newTestServer(t, ca, "1.2", Config{})
	l := startLoop(t, srv, 0)
	for _, ver := range versions() {
		t.Run(ver.name, func(t *testing.T) {
			c := dialTLS(t, l.addr(), clientConfig(ca, ver.v, ver.v))
			st := c.ConnectionState()
			if st.Version != ver.v || st.NegotiatedProtocol != "http/1.1" {
				t.Fatalf("version %x alpn %q", st.Version, st.NegotiatedProtocol)
			}
			hc := <-l.established
			sst := hc.c.ConnectionState()
			if sst.Version != ver.v || !sst.HandshakeComplete || sst.NegotiatedProtocol != "http/1.1" {
				t.Fatalf("server state %+v", sst)
			}
			echo(t, c, []byte("hello"))
			big := bytes.Repeat([]byte("0123456789abcdef"), 5000) // 80 KB: several full records
			echo(t, c, big)
			for i := range 50 {
				echo(t, c, []byte("msg "+strconv.Itoa(i)))
			}
		})
	}
}

// TestDefaultsPreferTLS13: a client that allows both gets 1.3.
func TestDefaultsPreferTLS13(t *testing.T) {
	ca := newCA(t)
	srv, _, _ := newTestServer(t, ca, "", Config{})
	l := startLoop(t, srv, 0)
	c := dialTLS(t, l.addr(), clientConfig(ca, tls.VersionTLS12, tls.VersionTLS13))
	if v := c.ConnectionState().Version; v != tls.VersionTLS13 {
		t.Fatalf("negotiated %x", v)
	}
	echo(t, c, []byte("x"))
}

// TestSevenBytes: every Feed is at most 7 bytes, handshake included, and
// the client also writes 7 bytes per segment.
func TestSevenBytes(t *testing.T) {
	ca := newCA(t)
	srv, _, _ := newTestServer(t, ca, "1.2", Config{})
	l := startLoop(t, srv, 7)
	for _, ver := range versions() {
		t.Run(ver.name, func(t *testing.T) {
			raw, err := net.Dial("tcp", l.addr())
			if err != nil {
				t.Fatal(err)
			}
			raw.(*net.TCPConn).SetNoDelay(true)
			c := tls.Client(dripConn{raw, 7}, clientConfig(ca, ver.v, ver.v))
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(20 * time.Second))
			if err := c.Handshake(); err != nil {
				t.Fatal(err)
			}
			echo(t, c, []byte("seven bytes at a time"))
			echo(t, c, bytes.Repeat([]byte{'z'}, 3000))
		})
	}
}

// holdFinished delays the client's second flight (TLS 1.3 Finished) until
// its first application write, so that the server gets Finished and data in
// one Feed and must find the data inside crypto/tls after the handshake.
type holdFinished struct {
	net.Conn
	mu     sync.Mutex
	writes int
	held   []byte
}

func (h *holdFinished) Write(b []byte) (int, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.writes++
	switch {
	case h.writes == 2:
		h.held = append([]byte(nil), b...)
		return len(b), nil
	case h.held != nil:
		n := len(b)
		all := append(h.held, b...)
		h.held = nil
		_, err := h.Conn.Write(all)
		return n, err
	}
	return h.Conn.Write(b)
}

func TestDataWithFinished(t *testing.T) {
	ca := newCA(t)
	srv, _, _ := newTestServer(t, ca, "1.2", Config{})
	l := startLoop(t, srv, 0)
	raw, err := net.Dial("tcp", l.addr())
	if err != nil {
		t.Fatal(err)
	}
	h := &holdFinished{Conn: raw}
	c := tls.Client(h, clientConfig(ca, tls.VersionTLS13, tls.VersionTLS13))
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if err := c.Handshake(); err != nil {
		t.Fatal(err)
	}
	msg := []byte("first request rides with Finished")
	if _, err := c.Write(msg); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatalf("echo: %v", err)
	}
	if h.writes < 3 {
		t.Fatalf("client made %d writes; the test did not hold Finished", h.writes)
	}
}

func TestOldVersionsRefused(t *testing.T) {
	ca := newCA(t)
	srv, _, _ := newTestServer(t, ca, "1.2", Config{})
	l := startLoop(t, srv, 0)
	for _, v := range []uint16{tls.VersionTLS10, tls.VersionTLS11} {
		raw, err := net.Dial("tcp", l.addr())
		if err != nil {
			t.Fatal(err)
		}
		c := tls.Client(raw, clientConfig(ca, v, v))
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		err = c.Handshake()
		c.Close()
		if err == nil {
			t.Fatalf("version %x accepted", v)
		}
		t.Logf("client %x: %v", v, err)
		select {
		case serr := <-l.hsErrs:
			if !strings.Contains(serr.Error(), "version") {
				t.Fatalf("server error %v", serr)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("server reported no handshake error")
		}
	}
	// min_version 1.3 refuses a 1.2-only client.
	srv13, _, _ := newTestServer(t, ca, "1.3", Config{})
	l13 := startLoop(t, srv13, 0)
	raw, err := net.Dial("tcp", l13.addr())
	if err != nil {
		t.Fatal(err)
	}
	c := tls.Client(raw, clientConfig(ca, tls.VersionTLS12, tls.VersionTLS12))
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if err := c.Handshake(); err == nil {
		t.Fatal("TLS 1.2 client accepted with min_version 1.3")
	}
	c.Close()
}

func TestPlaintextClient(t *testing.T) {
	ca := newCA(t)
	srv, _, _ := newTestServer(t, ca, "1.2", Config{})
	l := startLoop(t, srv, 0)
	raw, err := net.Dial("tcp", l.addr())
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	fmt.Fprintf(raw, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	select {
	case err := <-l.hsErrs:
		var rh tls.RecordHeaderError
		if !errors.As(err, &rh) || rh.Conn == nil {
			t.Fatalf("want a RecordHeaderError with Conn (to answer 400), got %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no handshake error")
	}
}

func TestHandshakeTimeout(t *testing.T) {
	ca := newCA(t)
	srv, _, _ := newTestServer(t, ca, "1.2", Config{HandshakeTimeout: 300 * time.Millisecond})
	l := startLoop(t, srv, 0)
	for _, partial := range []bool{false, true} {
		raw, err := net.Dial("tcp", l.addr())
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		if partial { // a record header promising 512 bytes, then silence
			raw.Write([]byte{0x16, 0x03, 0x01, 0x02, 0x00, 0x01})
		}
		select {
		case err := <-l.hsErrs:
			if !errors.Is(err, ErrHandshakeTimeout) {
				t.Fatalf("got %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("no timeout")
		}
		if d := time.Since(start); d < 250*time.Millisecond || d > 3*time.Second {
			t.Fatalf("timed out after %v", d)
		}
		_ = raw.SetReadDeadline(time.Now().Add(3 * time.Second))
		if _, err := raw.Read(make([]byte, 1)); err != io.EOF {
			t.Fatalf("socket not closed: %v", err)
		}
		raw.Close()
	}
	// The goroutine leaves the pool just after reporting.
	waitFor(t, func() bool { st := srv.Stats(); return st.Active == 0 && st.Queued == 0 })
}

// TestHandshakePoolCap floods the server with N+10 handshakes that send a
// complete ClientHello and never finish: N+MaxQueued are in flight (each
// waiting for its client, holding no slot), the rest are refused, and an
// established connection keeps being served throughout.
func TestHandshakePoolCap(t *testing.T) {
	const N, Q = 4, 3
	ca := newCA(t)
	srv, _, _ := newTestServer(t, ca, "1.2", Config{MaxHandshakes: N, MaxQueued: Q, HandshakeTimeout: 2 * time.Second})
	l := startLoop(t, srv, 0)
	good := dialTLS(t, l.addr(), clientConfig(ca, tls.VersionTLS13, tls.VersionTLS13))
	<-l.established
	echo(t, good, []byte("before"))

	var stalled []net.Conn
	for range N + 10 {
		raw, err := net.Dial("tcp", l.addr())
		if err != nil {
			t.Fatal(err)
		}
		stalled = append(stalled, raw)
		raw.Write(clientHello(t, clientConfig(ca, tls.VersionTLS12, tls.VersionTLS13)))
	}
	defer func() {
		for _, c := range stalled {
			c.Close()
		}
	}()
	refused := 0
	deadline := time.After(5 * time.Second)
	for refused < 10-Q {
		select {
		case err := <-l.feedErrs:
			if !errors.Is(err, ErrBusy) {
				t.Fatalf("feed error %v", err)
			}
			refused++
		case <-deadline:
			t.Fatalf("refused %d, stats %+v", refused, srv.Stats())
		}
	}
	waitFor(t, func() bool { st := srv.Stats(); return st.InFlight == N+Q && st.Active == 0 && st.Queued == 0 })
	if st := srv.Stats(); st.Peak > N {
		t.Fatalf("stats %+v", st)
	}
	// The loop is not held up: the established connection answers at once.
	for i := range 20 {
		start := time.Now()
		echo(t, good, []byte("during "+strconv.Itoa(i)))
		if d := time.Since(start); d > 200*time.Millisecond {
			t.Fatalf("echo took %v during the flood", d)
		}
	}
	// After the timeout everything is released and handshakes work again.
	time.Sleep(2 * time.Second)
	waitFor(t, func() bool { st := srv.Stats(); return st.Active == 0 && st.Queued == 0 })
	if st := srv.Stats(); st.Peak > N {
		t.Fatalf("after timeout: %+v", st)
	}
	c2 := dialTLS(t, l.addr(), clientConfig(ca, tls.VersionTLS12, tls.VersionTLS13))
	echo(t, c2, []byte("after"))
	echo(t, good, []byte("still here"))
}

// TestWriteOrdering: many goroutines write at once; the client checks that
// every record decrypts (any reordering breaks TLS sequence numbers) and that
// each writer's messages arrive in order.
func TestWriteOrdering(t *testing.T) {
	ca := newCA(t)
	srv, _, _ := newTestServer(t, ca, "1.2", Config{})
	l := startLoop(t, srv, 0)
	l.app = func(*hconn, []byte) {}
	for _, ver := range versions() {
		t.Run(ver.name, func(t *testing.T) {
			c := dialTLS(t, l.addr(), clientConfig(ca, ver.v, ver.v))
			hc := <-l.established
			const writers, each = 16, 300
			var wg sync.WaitGroup
			for g := range writers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					pad := strings.Repeat("p", g*37%200)
					for i := range each {
						line := fmt.Sprintf("%d %d %s\n", g, i, pad)
						if _, err := hc.c.Write([]byte(line)); err != nil {
							t.Errorf("write: %v", err)
							return
						}
					}
				}()
			}
			next := make([]int, writers)
			br := bufio.NewReader(c)
			_ = c.SetDeadline(time.Now().Add(20 * time.Second))
			for range writers * each {
				line, err := br.ReadString('\n')
				if err != nil {
					t.Fatalf("read: %v", err)
				}
				var g, i int
				if _, err := fmt.Sscanf(line, "%d %d", &g, &i); err != nil {
					t.Fatalf("bad line %q", line)
				}
				if i != next[g] {
					t.Fatalf("writer %d: got %d, want %d", g, i, next[g])
				}
				next[g]++
			}
			wg.Wait()
		})
	}
}

// TestCloseNotify: the client's close_notify surfaces as io.EOF on Read, and
// the server's CloseNotify as EOF at the client.
func TestCloseNotify(t *testing.T) {
	ca := newCA(t)
	srv, _, _ := newTestServer(t, ca, "1.2", Config{})
	l := startLoop(t, srv, 0)
	got := make(chan error, 1)
	l.app = func(hc *hconn, p []byte) {
		if string(p) == "bye" {
			got <- hc.c.CloseNotify()
		}
	}
	c := dialTLS(t, l.addr(), clientConfig(ca, tls.VersionTLS13, tls.VersionTLS13))
	<-l.established
	c.Write([]byte("bye"))
	if err := <-got; err != nil {
		t.Fatal(err)
	}
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 10)); err != io.EOF {
		t.Fatalf("client read: %v", err)
	}
}

// TestConnUnit exercises the state machine without sockets.
func TestConnUnit(t *testing.T) {
	ca := newCA(t)
	srv, _, _ := newTestServer(t, ca, "1.2", Config{MaxHandshakeInput: 1000, HandshakeTimeout: time.Minute})
	called := make(chan error, 1)
	c := srv.NewConn(func([]byte, bool) {}, func(err error) { called <- err })
	if _, err := c.Read(make([]byte, 10)); err != ErrWouldBlock {
		t.Fatalf("read before handshake: %v", err)
	}
	if _, err := c.Write([]byte("x")); err != ErrNotEstablished {
		t.Fatalf("write before handshake: %v", err)
	}
	if st := c.ConnectionState(); st.HandshakeComplete {
		t.Fatal("state before handshake")
	}
	if err := c.Feed(make([]byte, 1001)); err != ErrInputLimit {
		t.Fatalf("feed over limit: %v", err)
	}
	if err := c.Feed([]byte{1}); err != net.ErrClosed {
		t.Fatalf("feed after failure: %v", err)
	}
	c.Close()
	c.Close()
	select {
	case err := <-called:
		t.Fatalf("onHandshake called after Feed error: %v", err)
	case <-time.After(50 * time.Millisecond):
	}

	// Close during a handshake: no callback, the goroutine goes back.
	c2 := srv.NewConn(func([]byte, bool) {}, func(err error) { called <- err })
	if err := c2.Feed([]byte{0x16, 3, 1, 0, 200}); err != nil {
		t.Fatal(err)
	}
	c2.Close()
	waitFor(t, func() bool { return srv.Stats().Active == 0 })
	select {
	case err := <-called:
		t.Fatalf("onHandshake after Close: %v", err)
	case <-time.After(50 * time.Millisecond):
	}
}

func waitFor(t testing.TB, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); {
		if cond() {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatal("condition not reached")
}

// clientHello is the first flight of a real crypto/tls client: a complete
// ClientHello (post-quantum key share included, about 1.5 KiB).
func clientHello(t testing.TB, cfg *tls.Config) []byte {
	t.Helper()
	a, b := net.Pipe()
	defer a.Close()
	go func() { _ = tls.Client(b, cfg).Handshake(); b.Close() }()
	buf := make([]byte, 64<<10)
	_ = a.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, err := a.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	return buf[:n]
}

// TestStalledHelloHoldsNoSlot: clients that send part of a ClientHello and
// stall take no handshake slot and no queue place, however many; a real
// client is served at once meanwhile; the stalled ones fail at HelloTimeout.
func TestStalledHelloHoldsNoSlot(t *testing.T) {
	const N, stalledN = 2, 50
	ca := newCA(t)
	srv, _, _ := newTestServer(t, ca, "1.2", Config{MaxHandshakes: N, MaxQueued: -1,
		HandshakeTimeout: 10 * time.Second, HelloTimeout: time.Second})
	l := startLoop(t, srv, 0)
	hello := clientHello(t, clientConfig(ca, tls.VersionTLS12, tls.VersionTLS13))
	var stalled []net.Conn
	defer func() {
		for _, c := range stalled {
			c.Close()
		}
	}()
	start := time.Now()
	for i := range stalledN {
		raw, err := net.Dial("tcp", l.addr())
		if err != nil {
			t.Fatal(err)
		}
		stalled = append(stalled, raw)
		cut := 1 + i*(len(hello)-2)/stalledN // every prefix length, from 1 byte up
		if _, err := raw.Write(hello[:cut]); err != nil {
			t.Fatal(err)
		}
	}
	for range 3 {
		c := dialTLS(t, l.addr(), clientConfig(ca, tls.VersionTLS12, tls.VersionTLS13))
		<-l.established
		echo(t, c, []byte("served"))
		c.Close()
	}
	if st := srv.Stats(); st.Queued != 0 || st.Peak > N {
		t.Fatalf("stalled hellos took slots: %+v", st)
	}
	timedOut := 0
	for timedOut < stalledN {
		select {
		case err := <-l.hsErrs:
			if !errors.Is(err, ErrHandshakeTimeout) {
				t.Fatalf("got %v", err)
			}
			timedOut++
		case err := <-l.feedErrs:
			t.Fatalf("feed error %v", err)
		case <-time.After(5 * time.Second):
			t.Fatalf("%d of %d stalled hellos timed out", timedOut, stalledN)
		}
	}
	if d := time.Since(start); d < 900*time.Millisecond || d > 5*time.Second {
		t.Fatalf("hello timeout after %v, want about 1s", d)
	}
}

func TestHelloReady(t *testing.T) {
	ca := newCA(t)
	hello := clientHello(t, clientConfig(ca, tls.VersionTLS12, tls.VersionTLS13))
	for i := 0; i < len(hello); i++ {
		if helloReady(hello[:i]) {
			t.Fatalf("ready after %d of %d bytes", i, len(hello))
		}
	}
	if !helloReady(hello) {
		t.Fatal("complete hello not ready")
	}
	// The same hello split over three handshake records is ready only at the end.
	body := hello[5:]
	var split []byte
	for _, part := range [][]byte{body[:3], body[3:100], body[100:]} {
		split = append(split, 0x16, 0x03, 0x01, byte(len(part)>>8), byte(len(part)))
		split = append(split, part...)
	}
	for i := 0; i < len(split); i++ {
		if helloReady(split[:i]) {
			t.Fatalf("split: ready after %d of %d bytes", i, len(split))
		}
	}
	if !helloReady(split) {
		t.Fatal("split hello not ready")
	}
	for name, b := range map[string][]byte{
		"plaintext HTTP":   []byte("GET / HTTP/1.1\r\n"),
		"alert record":     {0x15, 0x03, 0x01, 0x00, 0x02, 0x02, 0x28},
		"oversized record": {0x16, 0x03, 0x01, 0x50, 0x00},
		"not a hello":      {0x16, 0x03, 0x01, 0x00, 0x04, 0x02, 0x00, 0x00, 0x00},
		"bad version":      {0x16, 0x07, 0x01, 0x00, 0x04},
		"empty record":     {0x16, 0x03, 0x01, 0x00, 0x00},
	} {
		if !helloReady(b) {
			t.Errorf("%s: not handed over", name)
		}
	}
}

func FuzzHelloReady(f *testing.F) {
	f.Add([]byte{0x16, 0x03, 0x01, 0x00, 0x04, 0x01, 0x00, 0x00, 0x00})
	f.Add([]byte{0x16, 0x03, 0x01, 0x00, 0x02, 0x01, 0x00, 0x16, 0x03, 0x01, 0x00, 0x02, 0x00, 0x05})
	f.Fuzz(func(t *testing.T, b []byte) {
		ready := helloReady(b)
		// A prefix of something ready-or-not is never "ready" unless it
		// already shows why: ready is monotone in the bytes received.
		if !ready {
			for i := range b {
				if helloReady(b[:i]) {
					t.Fatalf("prefix %d ready, whole not", i)
				}
			}
		}
	})
}

// TestSlotFreeWhileClientThinks: with one handshake slot, clients that sent
// a complete ClientHello and then stall (as a busy or slow client does
// between its flights) do not hold it: a fresh client completes at once.
func TestSlotFreeWhileClientThinks(t *testing.T) {
	ca := newCA(t)
	srv, _, _ := newTestServer(t, ca, "1.2", Config{MaxHandshakes: 1, MaxQueued: 10, HandshakeTimeout: 10 * time.Second})
	l := startLoop(t, srv, 0)
	hello := clientHello(t, clientConfig(ca, tls.VersionTLS12, tls.VersionTLS13))
	for range 3 {
		raw, err := net.Dial("tcp", l.addr())
		if err != nil {
			t.Fatal(err)
		}
		defer raw.Close()
		if _, err := raw.Write(hello); err != nil {
			t.Fatal(err)
		}
		// The server's flight comes back: the handshake computed, and now
		// waits for this client, which never answers.
		_ = raw.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := raw.Read(make([]byte, 1)); err != nil {
			t.Fatalf("no server flight: %v", err)
		}
	}
	waitFor(t, func() bool { st := srv.Stats(); return st.InFlight == 3 && st.Active == 0 })
	start := time.Now()
	c := dialTLS(t, l.addr(), clientConfig(ca, tls.VersionTLS12, tls.VersionTLS13))
	<-l.established
	echo(t, c, []byte("served"))
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("a fresh handshake took %v with three stalled ones and one slot", d)
	}
	if st := srv.Stats(); st.Peak > 1 {
		t.Fatalf("more than one handshake computed at once: %+v", st)
	}
}
