package e2e

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mcpgate/gateway/conformance/wsraw"
)

// dialFrom opens an upgrade from a given loopback source address.
func dialFrom(t *testing.T, src, addr string) *raw {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 5 * time.Second}
	c, err := d.Dial("tcp", addr)
	must(t, err)
	t.Cleanup(func() { c.Close() })
	return dialOver(t, c, addr)
}

// HAProxy in TCP mode sends PROXY v2: the gateway logs and rate-limits by the
// real client address, not the balancer's.
func TestHAProxyProxyProtocol(t *testing.T) {
	bin := requireBinary(t, "haproxy")
	g := startGateway(t, with("proxy", `
  trusted_cidrs: ["127.0.0.1/32"]
  proxy_protocol: true`), with("ratelimit", `
  handshakes_per_ip: {count: 3, window: 10s}`))
	front := fmt.Sprintf("127.0.0.1:%d", wsraw.FreePort(t))
	cfg := filepath.Join(t.TempDir(), "haproxy.cfg")
	must(t, os.WriteFile(cfg, []byte(fmt.Sprintf(`global
  maxconn 100
defaults
  mode tcp
  timeout connect 2s
  timeout client 30s
  timeout server 30s
frontend fe
  bind %s
  default_backend gw
backend gw
  server g1 %s send-proxy-v2 source 127.0.0.1
`, front, g.Addr)), 0o600))
	cmd := exec.Command(bin, "-f", cfg, "-db")
	must(t, cmd.Start())
	t.Cleanup(func() { _ = cmd.Process.Kill(); _, _ = cmd.Process.Wait() })
	for i := 0; ; i++ {
		if c, err := net.Dial("tcp", front); err == nil {
			c.Close()
			break
		}
		if i > 100 {
			t.Fatal("haproxy did not start")
		}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond) // the probe above was one (empty) proxied connection

	for i := 0; i < 3; i++ {
		r := dialFrom(t, "127.0.0.2", front)
		if r.resp.StatusCode != 101 {
			t.Fatalf("client .2 handshake %d: %s", i, r.resp.Status)
		}
	}
	if r := dialFrom(t, "127.0.0.2", front); r.resp.StatusCode != 429 {
		t.Fatalf("client .2 4th handshake: %s (the limit must count the real client)", r.resp.Status)
	}
	r := dialFrom(t, "127.0.0.3", front)
	if r.resp.StatusCode != 101 {
		t.Fatalf("client .3 behind the same balancer: %s", r.resp.Status)
	}
	r.sendText(`{"type":"auth","token":"` + aliceToken + `"}`)
	r.readText()
	deadline := time.Now().Add(3 * time.Second)
	for !strings.Contains(g.Logs(), `"remote":"127.0.0.3","subject":"alice"`) {
		if time.Now().After(deadline) {
			t.Fatalf("no log line with the real client address:\n%s", wsraw.Truncate(g.Logs(), 3000))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

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
