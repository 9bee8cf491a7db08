package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/mcpgate/gateway/conformance/wsraw"
)

// SPEC 10 / issue 13: while a ticket is looked up (Redis paused: up to its
// timeout), nothing is read, and a client that keeps sending is cut once
// more than an upgrade request and a pre-auth message wait in the inbound
// buffer, instead of being buffered without bound. The gateway serves on.
func TestInputCappedDuringTicketLookup(t *testing.T) {
	rd := startRedis(t)
	g := startGateway(t, with("redis", fmt.Sprintf("\n  url: %q", rd.URL())))
	_, body := postTicket(t, g, bobToken, "")
	var tk struct{ Ticket string }
	must(t, json.Unmarshal([]byte(body), &tk))

	must(t, rd.cmd.Process.Signal(syscall.SIGSTOP))
	defer func() { _ = rd.cmd.Process.Signal(syscall.SIGCONT) }()

	c, err := net.DialTimeout("tcp", g.Addr, 2*time.Second)
	must(t, err)
	defer c.Close()
	_, err = c.Write([]byte(wsraw.UpgradeRequest(g.Addr, "/mcp?ticket="+tk.Ticket)))
	must(t, err)
	time.Sleep(200 * time.Millisecond) // the lookup is under way, nothing is read
	junk := bytes.Repeat([]byte{0x81}, 8<<10)
	began := time.Now()
	sent := 0
	for sent < 1<<20 { // the kernel's socket buffers take most of it
		_ = c.SetWriteDeadline(time.Now().Add(2 * time.Second))
		n, err := c.Write(junk)
		sent += n
		if err != nil {
			break
		}
	}
	// The connection is closed long before the lookup could end (Redis is
	// paused): the read sees EOF or a reset, not a 101.
	_ = c.SetReadDeadline(time.Now().Add(3 * time.Second))
	buf := make([]byte, 64)
	n, rerr := c.Read(buf)
	if n > 0 && bytes.HasPrefix(buf[:n], []byte("HTTP/1.1 101")) {
		t.Fatalf("upgraded after %d bytes pipelined during the lookup", sent)
	}
	if ne, ok := rerr.(net.Error); ok && ne.Timeout() {
		t.Fatalf("still open after %d bytes sent during the lookup (%v)", sent, time.Since(began))
	}
	t.Logf("cut after %d bytes sent during the ticket lookup, in %v (read: %q %v)",
		sent, time.Since(began).Round(time.Millisecond), buf[:n], rerr)
	if v := g.Metric(t, `gateway_messages_rejected_total{reason="async_overflow"}`); v != 1 {
		t.Errorf(`rejected{reason="async_overflow"} = %v, want 1`, v)
	}
	must(t, rd.cmd.Process.Signal(syscall.SIGCONT))
	r := dialAuthed(t, g.Addr, aliceToken)
	r.sendText(`{"jsonrpc":"2.0","id":1,"method":"ping"}`)
	r.readText()
}
