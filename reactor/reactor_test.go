package reactor

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"runtime"
	"runtime/metrics"
	"strings"
	"testing"
	"time"

	"github.com/mcpgate/gateway/auth"
	"github.com/mcpgate/gateway/config"
	gwmetrics "github.com/mcpgate/gateway/metrics"
	"github.com/mcpgate/gateway/session"
	"github.com/mcpgate/gateway/upstream/builtin"
)

const testToken = "reactor-test-token-0123456789"

func testConfig(t testing.TB) *config.Config {
	cfg := config.Default()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg.Listen = config.Listeners{ln.Addr().String()}
	ln.Close()
	cfg.Origins.Allowed = []string{"https://app.example.com"}
	cfg.Auth.ExtraTokens = []config.StaticToken{{SHA256Hex: auth.HashToken(testToken), Subject: "tester"}}
	cfg.Limits.MaxConnectionsPerIP = 100000
	cfg.RateLimit.HandshakesPerIP.Count = 100000
	return cfg
}

func newServer(t testing.TB, cfg *config.Config) *Server {
	t.Helper()
	v, err := auth.New(cfg.Auth)
	if err != nil {
		t.Fatal(err)
	}
	up := builtin.New("demo", 1, 64)
	t.Cleanup(func() { up.Close() })
	s, err := New(Options{
		Config: cfg, Verifier: v, Routes: []Route{{Path: "/mcp", Upstream: up}},
		Table: session.NewTable(), Metrics: gwmetrics.New(),
		Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func startServer(t testing.TB, cfg *config.Config) *Server {
	s := newServer(t, cfg)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx) }()
	select {
	case <-s.Ready():
	case err := <-done:
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); <-done })
	return s
}

func heapBytes() uint64 {
	runtime.GC()
	runtime.GC()
	sample := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	metrics.Read(sample)
	return sample[0].Value.Uint64()
}

// A frame header declaring 2 GiB is refused with 1009 as soon as the header
// is in, and costs no payload memory: 100 such frames leave the heap where it was.
func TestTwoGiBHeaderCostsNothing(t *testing.T) {
	cfg := testConfig(t)
	s := startServer(t, cfg)
	addr := cfg.Listen[0]
	// Warm up: one full connection cycle, so lazily built state is in place.
	hugeHeaderConn(t, addr)
	before := heapBytes()
	for i := 0; i < 100; i++ {
		hugeHeaderConn(t, addr)
	}
	after := heapBytes()
	growth := int64(after) - int64(before)
	t.Logf("heap before %d after %d growth %d bytes", before, after, growth)
	if growth > 1<<20 {
		t.Fatalf("heap grew by %d bytes after 100 frames declaring 2 GiB", growth)
	}
	deadline := time.Now().Add(2 * time.Second)
	for s.Stats().Open != 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if st := s.Stats(); st.Open != 0 || st.PendingAuth != 0 {
		t.Fatalf("connections left: %+v", st)
	}
}

func hugeHeaderConn(t *testing.T, addr string) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprintf(c, "GET /mcp HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != 101 {
		t.Fatalf("upgrade: %v %v", err, resp)
	}
	writeText(t, c, `{"type":"auth","token":"`+testToken+`"}`)
	if op, p := readFrame(t, br); op != 1 || !strings.Contains(string(p), "auth_ok") {
		t.Fatalf("auth: %d %s", op, p)
	}
	h := []byte{0x81, 0x80 | 127}
	h = binary.BigEndian.AppendUint64(h, 2<<30)
	h = append(h, 1, 2, 3, 4)
	if _, err := c.Write(h); err != nil {
		t.Fatal(err)
	}
	op, p := readFrame(t, br)
	if op != 8 || len(p) < 2 || binary.BigEndian.Uint16(p) != 1009 {
		t.Fatalf("want close 1009, got op %d %q", op, p)
	}
}

func writeText(t *testing.T, c net.Conn, s string) {
	t.Helper()
	mask := [4]byte{9, 8, 7, 6}
	f := []byte{0x81, 0x80 | byte(len(s))}
	f = append(f, mask[:]...)
	for i := 0; i < len(s); i++ {
		f = append(f, s[i]^mask[i%4])
	}
	if _, err := c.Write(f); err != nil {
		t.Fatal(err)
	}
}

func readFrame(t *testing.T, br *bufio.Reader) (byte, []byte) {
	t.Helper()
	var h [2]byte
	if _, err := io.ReadFull(br, h[:]); err != nil {
		t.Fatal(err)
	}
	n := int(h[1] & 0x7f)
	if n == 126 {
		var l [2]byte
		io.ReadFull(br, l[:])
		n = int(binary.BigEndian.Uint16(l[:]))
	}
	p := make([]byte, n)
	if _, err := io.ReadFull(br, p); err != nil {
		t.Fatal(err)
	}
	return h[0] & 0x0f, p
}

func TestUpgradeStatuses(t *testing.T) {
	s := newServer(t, testConfig(t))
	base := "Host: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
	cases := []struct {
		req    string
		status string
	}{
		{"GET /mcp HTTP/1.1\r\n" + base + "\r\n", "101"},
		{"GET /mcp?x=1 HTTP/1.1\r\n" + base + "\r\n", "101"},
		{"GET /nope HTTP/1.1\r\n" + base + "\r\n", "404"},
		{"GET /mcp HTTP/1.1\r\n" + base + "Origin: https://evil.example\r\n\r\n", "403"},
		{"GET /mcp HTTP/1.1\r\n" + base + "Authorization: Bearer bad\r\n\r\n", "401"},
		{"GET /mcp HTTP/1.1\r\n" + base + "Authorization: Bearer " + testToken + "\r\n\r\n", "101"},
		{"POST /mcp HTTP/1.1\r\n" + base + "\r\n", "405"},
		{"GET /mcp HTTP/1.1\r\nHost: x\r\n\r\n", "400"},
		{"garbage\r\n\r\n", "400"},
	}
	for _, c := range cases {
		resp, _, _ := s.upgrade([]byte(c.req), false, "")
		if !strings.HasPrefix(string(resp), "HTTP/1.1 "+c.status) {
			t.Errorf("%q: got %q", c.req, firstLine(resp))
		}
	}
}

func firstLine(b []byte) string {
	s := string(b)
	if i := strings.Index(s, "\r\n"); i >= 0 {
		return s[:i]
	}
	return s
}

// FuzzUpgrade feeds arbitrary request heads to the handshake: it must never
// panic, and always answer with an HTTP/1.1 status line (101 or a refusal).
func FuzzUpgrade(f *testing.F) {
	base := "Host: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
	for _, seed := range []string{
		"GET /mcp HTTP/1.1\r\n" + base + "\r\n",
		"GET /mcp HTTP/1.1\r\n" + base + "Origin: https://app.example.com\r\nSec-WebSocket-Protocol: mcp\r\n\r\n",
		"GET /mcp HTTP/1.1\r\n" + base + "Authorization: Bearer " + testToken + "\r\n\r\n",
		"GET /mcp?ticket=abc HTTP/1.0\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: \r\n\r\n",
		"\r\n\r\n",
	} {
		f.Add([]byte(seed))
	}
	s := newServer(f, testConfig(f))
	f.Fuzz(func(t *testing.T, head []byte) {
		if len(head) > 8<<10 {
			return
		}
		resp, hs, err := s.upgrade(head, false, "")
		if !strings.HasPrefix(string(resp), "HTTP/1.1 ") {
			t.Fatalf("response %q", firstLine(resp))
		}
		if err == nil && !strings.HasPrefix(string(resp), "HTTP/1.1 101 ") {
			t.Fatalf("accepted with %q", firstLine(resp))
		}
		if err == nil && (hs.route < 0 || hs.route >= len(s.opt.Routes)) {
			t.Fatalf("accepted with route %d", hs.route)
		}
	})
}
