package reactor

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"runtime"
	"testing"
	"time"

	"github.com/mcpgate/gateway/auth"
	"github.com/mcpgate/gateway/fdbudget"
	gwmetrics "github.com/mcpgate/gateway/metrics"
	"github.com/mcpgate/gateway/session"
	"github.com/mcpgate/gateway/upstream/builtin"
)

// upgradeStatus dials addr, asks for an upgrade and returns the status
// and Retry-After of the answer; the connection stays open (closed at
// cleanup).
func upgradeStatus(t *testing.T, addr string) (int, string) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprintf(c, "GET /mcp HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header.Get("Retry-After")
}

// Client sockets count against the descriptor budget: once admitting one
// more would leave less than the client margin free, a client gets 503
// with Retry-After; descriptors given back by others let clients in again.
// The listen backlog is lowered to the budget's, and the accept burst it
// allows is kept free.
func TestDescriptorBudget(t *testing.T) {
	for _, reuse := range []bool{true, false} {
		t.Run(fmt.Sprintf("reuse_port=%v", reuse), func(t *testing.T) { testDescriptorBudget(t, reuse) })
	}
}

func testDescriptorBudget(t *testing.T, reusePort bool) {
	cfg := testConfig(t)
	cfg.ReusePort = reusePort
	b := fdbudget.New(fdbudget.Options{Limit: 1000, Count: func() (int, error) { return 0, nil }})
	v, err := auth.New(cfg.Auth)
	if err != nil {
		t.Fatal(err)
	}
	up := builtin.New("demo", 1, 64)
	t.Cleanup(func() { up.Close() })
	s, err := New(Options{
		Config: cfg, Verifier: v, Routes: []Route{{Path: "/mcp", Upstream: up}},
		Table: session.NewTable(), Metrics: gwmetrics.New(),
		Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Descriptors: b,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx) }()
	<-s.Ready()
	t.Cleanup(func() { cancel(); <-done })

	// reuse_port: one listener per loop, each accepting one connection
	// before OnOpen. Else one listener, backlog 1000/16 = 62: (62+1)*5/4,
	// plus one per loop.
	burst := int64(runtime.NumCPU())
	if !reusePort {
		burst = fdbudget.AcceptBurst(1, 62, burst)
	}
	if want := burst + 16 + 1000/128; b.Headroom() != want {
		t.Fatalf("headroom %d, want %d", b.Headroom(), want)
	}
	room := b.Free() - b.Margin() - 2 // two clients fit
	b.Acquire(fdbudget.Other, int(room))
	for i := range 2 {
		if code, _ := upgradeStatus(t, cfg.Listen[0]); code != 101 {
			t.Fatalf("client %d: %d", i, code)
		}
	}
	if code, retry := upgradeStatus(t, cfg.Listen[0]); code != 503 || retry != "1" {
		t.Fatalf("third client: %d, Retry-After %q", code, retry)
	}
	if b.Refused(fdbudget.Client) == 0 || b.Count(fdbudget.Client) < 2 {
		t.Fatalf("refused %d, clients %d", b.Refused(fdbudget.Client), b.Count(fdbudget.Client))
	}
	b.Release(fdbudget.Other, int(room))
	if code, _ := upgradeStatus(t, cfg.Listen[0]); code != 101 {
		t.Fatalf("with descriptors free again: %d", code)
	}
}
