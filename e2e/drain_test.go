package e2e

import (
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mcpgate/gateway/conformance/wsraw"
)

// SPEC 4.4 over every transport, SIGTERM: /readyz turns 503, new
// connections get 503, requests that arrive meanwhile a JSON-RPC error;
// open connections get close 1001 once their in-flight requests are
// answered; the process exits 0.
func TestDrainOnSIGTERM(t *testing.T) {
	eachTransport(t, func(t *testing.T, tr wsraw.Transport) {
		g := startGatewayOn(t, tr, with("drain_timeout", "5s"), shUpstream(t, 2))
		a := g.authed(t, aliceToken)
		b := g.raw(t, "/mcp") // still pending auth
		busy := shSession(t, g, bobToken)
		busy.sendText(`{"jsonrpc":"2.0","id":"slow","method":"tools/call","params":{"name":"slow","arguments":{}}}`)
		// The worker says it has the request: it is in flight.
		if got := busy.readText(); !strings.Contains(got, "slow started") {
			t.Fatalf("before the answer to slow: %s", got)
		}
		must(t, g.Signal(syscall.SIGTERM))
		a.expectClose(1001, "Going away", 10*time.Second)
		b.expectClose(1001, "Going away", 10*time.Second)

		// busy's request (two seconds long) is still in flight: the gateway
		// drains.
		resp, err := http.Get("http://" + g.Admin + "/readyz")
		must(t, err)
		resp.Body.Close()
		if resp.StatusCode != 503 {
			t.Fatalf("/readyz while draining: %s", resp.Status)
		}
		if r := g.raw(t, "/mcp"); r.resp.StatusCode != 503 || r.resp.Header.Get("Retry-After") == "" {
			t.Fatalf("new connection while draining: %s Retry-After %q", r.resp.Status, r.resp.Header.Get("Retry-After"))
		}
		busy.sendText(`{"jsonrpc":"2.0","id":"late","method":"ping"}`)
		var late, slow string
		for late == "" || slow == "" {
			got := busy.readText()
			switch {
			case strings.Contains(got, `"id":"late"`):
				late = got
			case strings.Contains(got, `"id":"slow"`):
				slow = got
			default:
				t.Fatalf("while draining: %s", got)
			}
		}
		if !strings.Contains(late, `"error":{"code":-31000`) {
			t.Fatalf("request sent while draining: %s", late)
		}
		if !strings.Contains(slow, "slow done") {
			t.Fatalf("request in flight at SIGTERM: %s", slow)
		}
		busy.expectClose(1001, "Going away", 10*time.Second)

		select {
		case <-g.Exited():
		case <-time.After(10 * time.Second):
			t.Fatal("gateway did not exit after drain")
		}
		if g.ExitErr() != nil {
			t.Fatalf("exit: %v\n%s", g.ExitErr(), g.Logs())
		}
		if _, err := http.Get("http://" + g.Admin + "/readyz"); err == nil {
			t.Fatal("admin still answering after exit")
		}
	})
}
