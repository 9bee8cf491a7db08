package e2e

import (
	"net"
	"strings"
	"testing"
	"time"

	"github.com/mcpgate/gateway/conformance/wsraw"
)

// HAProxy in TCP mode sending PROXY v2 is a transport of the wire matrix
// (wsraw.WSHAProxy, wsraw.WSSHAProxy): every row runs behind it, and
// TestHandshakeRatePerIP checks the gateway limits and logs the real client
// address there. The rows here are about the proxy settings themselves.

// A PROXY header from a peer outside trusted_cidrs is refused; the same peer
// without one is an ordinary client.
func TestUntrustedProxyHeaderRefused(t *testing.T) {
	g := startGateway(t, with("proxy", `
  trusted_cidrs: ["10.0.0.0/8"]
  proxy_protocol: true`))
	c, err := net.Dial("tcp", g.Addr)
	must(t, err)
	defer c.Close()
	_, _ = c.Write([]byte("PROXY TCP4 203.0.113.7 127.0.0.1 4444 80\r\n" + wsraw.UpgradeRequest(g.Addr, "/mcp")))
	_ = c.SetReadDeadline(time.Now().Add(3 * time.Second))
	buf := make([]byte, 64)
	n, _ := c.Read(buf)
	if strings.Contains(string(buf[:n]), "101") {
		t.Fatalf("untrusted PROXY header accepted: %q", buf[:n])
	}
	if g.Metric(t, `gateway_handshakes_total{result="untrusted_proxy"}`) != 1 {
		t.Fatal("refusal not counted")
	}
	if r := dialRaw(t, g.Addr, "/mcp"); r.resp.StatusCode != 101 {
		t.Fatalf("plain client: %s", r.resp.Status)
	}
}

// X-Forwarded-For counts only from a trusted peer.
func TestForwardedFor(t *testing.T) {
	g := startGateway(t, with("proxy", `
  trusted_cidrs: ["127.0.0.1/32"]`), with("ratelimit", `
  handshakes_per_ip: {count: 2, window: 10s}`))
	// The readiness probe used one of 127.0.0.1's handshakes; XFF clients
	// have their own budget.
	for i := 0; i < 2; i++ {
		if r := dialRaw(t, g.Addr, "/mcp", "X-Forwarded-For: 198.51.100.1, 203.0.113.9"); r.resp.StatusCode != 101 {
			t.Fatalf("xff client %d: %s", i, r.resp.Status)
		}
	}
	if r := dialRaw(t, g.Addr, "/mcp", "X-Forwarded-For: 203.0.113.9"); r.resp.StatusCode != 429 {
		t.Fatalf("3rd for 203.0.113.9: %s", r.resp.Status)
	}
	r := dialRaw(t, g.Addr, "/mcp", "X-Forwarded-For: 203.0.113.10")
	if r.resp.StatusCode != 101 {
		t.Fatalf("other client: %s", r.resp.Status)
	}
	r.sendText(`{"type":"auth","token":"` + bobToken + `"}`)
	r.readText()
	deadline := time.Now().Add(3 * time.Second)
	for !strings.Contains(g.Logs(), `"remote":"203.0.113.10","subject":"bob"`) {
		if time.Now().After(deadline) {
			t.Fatal("no log line with the forwarded client address")
		}
		time.Sleep(50 * time.Millisecond)
	}
}
