package e2e

import (
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mcpgate/gateway/conformance/wsraw"
)

// SPEC 4.2 over every transport: first-message authentication, header mode,
// tokens.
func TestFirstMessageAuth(t *testing.T) {
	eachTransport(t, func(t *testing.T, tr wsraw.Transport) {
		g := startGatewayOn(t, tr)

		t.Run("static token gets auth_ok then MCP", func(t *testing.T) {
			r := g.authed(t, aliceToken)
			r.sendText(`{"jsonrpc":"2.0","id":"abc-1","method":"tools/call","params":{"name":"echo","arguments":{"message":"hi"}}}`)
			got := r.readText()
			if !strings.Contains(got, `"id":"abc-1"`) || !strings.Contains(got, `Echo: hi`) {
				t.Fatalf("reply %s", got)
			}
		})
		t.Run("timeout closes 1008 at auth.timeout", func(t *testing.T) {
			r := g.raw(t, "/mcp")
			start := time.Now()
			at := r.expectClose(1008, "Authentication timeout", 5*time.Second)
			if el := at.Sub(start); el < time.Second-50*time.Millisecond || el > time.Second+300*time.Millisecond {
				t.Fatalf("closed after %v, auth.timeout is 1s (allowed 300 ms late)", el)
			}
		})
		t.Run("wrong token closes 1008", func(t *testing.T) {
			r := g.raw(t, "/mcp")
			r.sendText(`{"type":"auth","token":"not-a-real-token"}`)
			r.expectClose(1008, "Invalid credentials", 3*time.Second)
		})
		t.Run("other JSON closes 1008", func(t *testing.T) {
			r := g.raw(t, "/mcp")
			r.sendText(`{"type":"hello"}`)
			r.expectClose(1008, "Invalid credentials", 3*time.Second)
		})
		t.Run("not JSON closes 1007", func(t *testing.T) {
			r := g.raw(t, "/mcp")
			r.sendText(`auth please`)
			r.expectClose(1007, "Invalid message format", 3*time.Second)
		})
		t.Run("auth keys are exactly type and token", func(t *testing.T) {
			for _, msg := range []string{
				`{"Type":"auth","token":"` + aliceToken + `"}`,
				`{"type":"auth","Token":"` + aliceToken + `"}`,
				`{"type":"Auth","token":"` + aliceToken + `"}`,
				`{"type":"auth","token":"` + aliceToken + `","extra":1}`,
			} {
				r := g.raw(t, "/mcp")
				r.sendText(msg)
				f, err := r.readFrame(3 * time.Second)
				if err != nil {
					t.Fatalf("%s: %v", msg, err)
				}
				if code, reason := wsraw.ParseClose(f.payload); f.op != 8 || code != 1008 || reason != "Invalid credentials" {
					t.Errorf("%s: got opcode %d %q, want close 1008 \"Invalid credentials\"", strings.Replace(msg, aliceToken, "<token>", 1), f.op, f.payload)
				}
			}
		})
		t.Run("a request before auth is never answered", func(t *testing.T) {
			r := g.raw(t, "/mcp")
			r.sendText(`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"message":"x"}}}`)
			r.expectClose(1008, "Invalid credentials", 3*time.Second)
		})
		t.Run("JWT from gateway token", func(t *testing.T) {
			out, errOut, code := runGateway(t, g.Dir, "token", "-c", filepath.Join(g.Dir, "gateway.yaml"), "--sub", "carol", "--ttl", "5m")
			if code != 0 {
				t.Fatalf("token exit %d: %s", code, errOut)
			}
			r := g.authed(t, strings.TrimSpace(out))
			r.sendText(`{"jsonrpc":"2.0","id":2,"method":"ping"}`)
			if got := r.readText(); got != `{"jsonrpc":"2.0","id":2,"result":{}}` {
				t.Fatalf("ping reply %s", got)
			}
			if !g.waitLog(`"subject":"carol"`, 3*time.Second) {
				t.Fatal("log has no line with the JWT subject")
			}
		})
		t.Run("expired JWT closes 1008", func(t *testing.T) {
			out, _, code := runGateway(t, g.Dir, "token", "-c", filepath.Join(g.Dir, "gateway.yaml"), "--sub", "dave", "--ttl", "1s")
			if code != 0 {
				t.Fatal("token failed")
			}
			time.Sleep(7 * time.Second) // past exp plus the verifier's leeway
			r := g.raw(t, "/mcp")
			r.sendText(`{"type":"auth","token":"` + strings.TrimSpace(out) + `"}`)
			r.expectClose(1008, "Invalid credentials", 3*time.Second)
			if g.Metric(t, `gateway_auth_failures_total{reason="expired"}`) < 1 {
				t.Fatal("expired not counted")
			}
		})
		if strings.Contains(g.Logs(), aliceToken) || strings.Contains(g.Logs(), "not-a-real-token") {
			t.Fatal("a token reached the log")
		}
	})
}

func TestHeaderAuth(t *testing.T) {
	eachTransport(t, func(t *testing.T, tr wsraw.Transport) {
		g := startGatewayOn(t, tr)
		t.Run("bearer without Origin authenticates at the upgrade", func(t *testing.T) {
			r := g.raw(t, "/mcp", "Authorization: Bearer "+bobToken)
			if r.resp.StatusCode != 101 {
				t.Fatalf("got %s", r.resp.Status)
			}
			// No auth_ok: the first message is MCP.
			r.sendText(`{"jsonrpc":"2.0","id":"s","method":"ping"}`)
			if got := r.readText(); got != `{"jsonrpc":"2.0","id":"s","result":{}}` {
				t.Fatalf("got %s", got)
			}
		})
		t.Run("bad bearer is 401", func(t *testing.T) {
			r := g.raw(t, "/mcp", "Authorization: Bearer wrong-token")
			if r.resp.StatusCode != http.StatusUnauthorized {
				t.Fatalf("got %s", r.resp.Status)
			}
		})
		t.Run("bearer with an Origin does not authenticate", func(t *testing.T) {
			r := g.raw(t, "/mcp", "Authorization: Bearer "+bobToken, "Origin: https://app.example.com")
			if r.resp.StatusCode != 101 {
				t.Fatalf("got %s", r.resp.Status)
			}
			r.sendText(`{"jsonrpc":"2.0","id":1,"method":"ping"}`)
			r.expectClose(1008, "Invalid credentials", 3*time.Second)
		})
	})
}

func TestHeaderAuthOff(t *testing.T) {
	eachTransport(t, func(t *testing.T, tr wsraw.Transport) {
		g := startGatewayOn(t, tr, with("auth", `
  timeout: 1s
  header: false
  static_tokens_file: tokens.txt`))
		r := g.raw(t, "/mcp", "Authorization: Bearer "+bobToken)
		if r.resp.StatusCode != 101 {
			t.Fatalf("got %s", r.resp.Status)
		}
		r.sendText(`{"jsonrpc":"2.0","id":1,"method":"ping"}`)
		r.expectClose(1008, "Invalid credentials", 3*time.Second)
	})
}
