package e2e

import (
	"io"
	"strings"
	"testing"
	"time"

	"github.com/mcpgate/gateway/conformance/wsraw"
)

// SPEC 4.1 over every transport, one gateway per transport for the rows
// that share a config.
func TestUpgradeRows(t *testing.T) {
	eachTransport(t, func(t *testing.T, tr wsraw.Transport) {
		g := startGatewayOn(t, tr)

		t.Run("subprotocol mcp is selected", func(t *testing.T) {
			r := g.raw(t, "/mcp", "Sec-WebSocket-Protocol: other, mcp")
			if r.resp.StatusCode != 101 || r.resp.Header.Get("Sec-WebSocket-Protocol") != "mcp" {
				t.Fatalf("%s protocol %q", r.resp.Status, r.resp.Header.Get("Sec-WebSocket-Protocol"))
			}
		})
		t.Run("no subprotocol offered, none selected", func(t *testing.T) {
			r := g.raw(t, "/mcp")
			if r.resp.StatusCode != 101 || r.resp.Header.Get("Sec-WebSocket-Protocol") != "" {
				t.Fatalf("%s protocol %q", r.resp.Status, r.resp.Header.Get("Sec-WebSocket-Protocol"))
			}
		})
		t.Run("unlisted Origin is 403 before upgrade", func(t *testing.T) {
			r := g.raw(t, "/mcp", "Origin: https://evil.example.net")
			if r.resp.StatusCode != 403 {
				t.Fatalf("got %s", r.resp.Status)
			}
			_, _ = io.Copy(io.Discard, r.resp.Body)
			r.expectEOF(2 * time.Second)
		})
		t.Run("listed Origin upgrades", func(t *testing.T) {
			r := g.raw(t, "/mcp", "Origin: https://app.example.com")
			if r.resp.StatusCode != 101 {
				t.Fatalf("got %s", r.resp.Status)
			}
		})
		t.Run("Origin matching is exact", func(t *testing.T) {
			for _, o := range []string{"https://app.example.com.evil.net", "http://app.example.com", "https://app.example.com:444", "null"} {
				r := g.raw(t, "/mcp", "Origin: "+o)
				if r.resp.StatusCode != 403 {
					t.Fatalf("%s: got %s", o, r.resp.Status)
				}
			}
		})
		t.Run("more than one Origin header is 403", func(t *testing.T) {
			// Never "the last one wins" (nor the first).
			for _, pair := range [][2]string{{"https://evil.example.net", "https://app.example.com"}, {"https://app.example.com", "https://evil.example.net"}} {
				r := g.raw(t, "/mcp", "Origin: "+pair[0], "Origin: "+pair[1])
				if r.resp.StatusCode != 403 {
					t.Errorf("Origin %s then Origin %s: got %s", pair[0], pair[1], r.resp.Status)
				}
			}
		})
		t.Run("not a websocket upgrade is 400", func(t *testing.T) {
			r := g.rawRequest(t, "GET /mcp HTTP/1.1\r\nHost: x\r\n\r\n")
			if r.resp.StatusCode != 400 {
				t.Fatalf("got %s", r.resp.Status)
			}
			r = g.rawRequest(t, "GET /mcp HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\r\n")
			if r.resp.StatusCode != 400 {
				t.Fatalf("missing key: got %s", r.resp.Status)
			}
		})
		t.Run("unknown path is 404", func(t *testing.T) {
			r := g.raw(t, "/other")
			if r.resp.StatusCode != 404 {
				t.Fatalf("got %s", r.resp.Status)
			}
		})
		t.Run("headers over max_header_bytes get 431", func(t *testing.T) {
			c := g.conn(t, "")
			// One 1 MiB header line, written in the background: the gateway
			// answers after max_header_bytes and closes without reading on.
			go func() {
				_ = c.SetWriteDeadline(time.Now().Add(10 * time.Second))
				_, _ = c.Write([]byte("GET /mcp HTTP/1.1\r\nHost: x\r\nX-Big: "))
				_, _ = c.Write([]byte(strings.Repeat("a", 1<<20)))
			}()
			_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
			buf := make([]byte, 128)
			n, err := io.ReadAtLeast(c, buf, len("HTTP/1.1 431 "))
			if !strings.HasPrefix(string(buf[:n]), "HTTP/1.1 431 ") {
				t.Fatalf("got %q (%v)", buf[:n], err)
			}
		})
		t.Run("handshake not complete within handshake_timeout: TCP closed", func(t *testing.T) {
			// Timed from before the connect (and the TLS handshake): the
			// gateway's deadline starts at its accept.
			start := time.Now()
			c := g.conn(t, "")
			_, _ = c.Write([]byte("GET /mcp HTTP/1.1\r\nHost: x\r\n"))
			_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
			n, err := c.Read(make([]byte, 64))
			el := time.Since(start)
			if n != 0 || err == nil {
				t.Fatalf("read %d bytes, want EOF", n)
			}
			if wsraw.IsTimeout(err) {
				t.Fatalf("still open after %v", el)
			}
			if el < 900*time.Millisecond || el > 1500*time.Millisecond {
				t.Fatalf("closed after %v, handshake_timeout is 1s", el)
			}
		})
		t.Run("a Cookie never authenticates", func(t *testing.T) {
			r := g.raw(t, "/mcp", "Cookie: token="+aliceToken+"; session="+aliceToken)
			if r.resp.StatusCode != 101 {
				t.Fatalf("got %s", r.resp.Status)
			}
			// Still pending auth: an MCP request is never answered, only closed.
			r.sendText(`{"jsonrpc":"2.0","id":1,"method":"tools/list"}`)
			r.expectClose(1008, "Invalid credentials", 3*time.Second)
		})
	})
}

func TestOriginRequired(t *testing.T) {
	eachTransport(t, func(t *testing.T, tr wsraw.Transport) {
		g := startGatewayOn(t, tr, with("origins", `
  allowed: ["https://app.example.com"]
  allow_absent: false`))
		r := g.raw(t, "/mcp")
		if r.resp.StatusCode != 403 {
			t.Fatalf("absent Origin: got %s", r.resp.Status)
		}
		r = g.raw(t, "/mcp", "Origin: https://app.example.com")
		if r.resp.StatusCode != 101 {
			t.Fatalf("allowed Origin: got %s", r.resp.Status)
		}
	})
}

// The per-IP handshake rate counts the real client: its own loopback
// address, or behind HAProxy the address the PROXY header names (HAProxy's
// own connections all come from 127.0.0.1). The gateway logs the same
// address.
func TestHandshakeRatePerIP(t *testing.T) {
	eachTransport(t, func(t *testing.T, tr wsraw.Transport) {
		g := startGatewayOn(t, tr, with("ratelimit", `
  handshakes_per_ip: {count: 5, window: 10s}`))
		// 127.0.0.2 has made no other connection (the readiness probes come
		// from 127.0.0.1).
		for i := 0; i < 5; i++ {
			r := g.rawFrom(t, "127.0.0.2", "/mcp")
			if r.resp.StatusCode != 101 {
				t.Fatalf("handshake %d: %s", i+1, r.resp.Status)
			}
			r.c.Close()
		}
		r := g.rawFrom(t, "127.0.0.2", "/mcp")
		if r.resp.StatusCode != 429 || r.resp.Header.Get("Retry-After") == "" {
			t.Fatalf("6th handshake: %s Retry-After %q (the limit must count the real client)",
				r.resp.Status, r.resp.Header.Get("Retry-After"))
		}
		// Another loopback address is another client.
		r = g.rawFrom(t, "127.0.0.3", "/mcp")
		if r.resp.StatusCode != 101 {
			t.Fatalf("other IP: %s", r.resp.Status)
		}
		authOver(t, r, aliceToken)
		if !g.waitLog(`"remote":"127.0.0.3","subject":"alice"`, 3*time.Second) {
			t.Fatalf("no log line with the real client address:\n%s", wsraw.Truncate(g.Logs(), 3000))
		}
		if v := g.Metric(t, `gateway_handshakes_total{result="429"}`); v != 1 {
			t.Fatalf("429 metric %v", v)
		}
	})
}

func TestConnectionCaps(t *testing.T) {
	eachTransport(t, func(t *testing.T, tr wsraw.Transport) {
		t.Run("max_connections_per_ip", func(t *testing.T) {
			g := startGatewayOn(t, tr, with("limits", `
  handshake_timeout: 2s
  max_connections_per_ip: 3`))
			g.waitNoConnections(t)
			// From 127.0.0.2: the real client behind HAProxy too.
			for i := 0; i < 3; i++ {
				if r := g.rawFrom(t, "127.0.0.2", "/mcp"); r.resp.StatusCode != 101 {
					t.Fatalf("conn %d: %s", i, r.resp.Status)
				}
			}
			r := g.rawFrom(t, "127.0.0.2", "/mcp")
			if r.resp.StatusCode != 503 || r.resp.Header.Get("Retry-After") == "" {
				t.Fatalf("4th: %s", r.resp.Status)
			}
			if r := g.rawFrom(t, "127.0.0.3", "/mcp"); r.resp.StatusCode != 101 {
				t.Fatalf("another client: %s", r.resp.Status)
			}
		})
		t.Run("max_connections", func(t *testing.T) {
			g := startGatewayOn(t, tr, with("limits", `
  handshake_timeout: 2s
  max_connections: 2`))
			g.waitNoConnections(t)
			for i := 0; i < 2; i++ {
				if r := g.raw(t, "/mcp"); r.resp.StatusCode != 101 {
					t.Fatalf("conn %d: %s", i, r.resp.Status)
				}
			}
			r := g.rawFrom(t, "127.0.0.4", "/mcp")
			if r.resp.StatusCode != 503 || r.resp.Header.Get("Retry-After") == "" {
				t.Fatalf("3rd: %s Retry-After %q", r.resp.Status, r.resp.Header.Get("Retry-After"))
			}
		})
		t.Run("max_pending_auth", func(t *testing.T) {
			g := startGatewayOn(t, tr, with("limits", `
  handshake_timeout: 2s
  max_pending_auth: 2`))
			g.waitNoConnections(t)
			a := g.raw(t, "/mcp")
			b := g.raw(t, "/mcp")
			if a.resp.StatusCode != 101 || b.resp.StatusCode != 101 {
				t.Fatal("first two refused")
			}
			r := g.raw(t, "/mcp")
			if r.resp.StatusCode != 503 {
				t.Fatalf("3rd pending: %s", r.resp.Status)
			}
			// Authenticating one frees its pending slot.
			a.sendText(`{"type":"auth","token":"` + aliceToken + `"}`)
			a.readText()
			time.Sleep(50 * time.Millisecond)
			c := g.raw(t, "/mcp")
			if c.resp.StatusCode != 101 {
				t.Fatalf("after auth: %s", c.resp.Status)
			}
			// Connections closed while pending (auth timeout) free their slots.
			b.expectClose(1008, "Authentication timeout", 3*time.Second)
			c.expectClose(1008, "Authentication timeout", 3*time.Second)
			time.Sleep(100 * time.Millisecond)
			for i := 0; i < 2; i++ {
				if r := g.raw(t, "/mcp"); r.resp.StatusCode != 101 {
					t.Fatalf("after timeouts, pending %d: %s", i, r.resp.Status)
				}
			}
			if v := g.Metric(t, "gateway_connections_pending_auth"); v != 2 {
				t.Fatalf("pending gauge %v, want 2", v)
			}
		})
	})
}
