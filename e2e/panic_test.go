package e2e

import (
	"os"
	"strings"
	"testing"
	"time"

	"github.com/mcpgate/gateway/conformance/wsraw"
)

// SPEC 10: a panic while handling one connection or one upstream message
// closes that connection (1011) and counts gateway_panics_total; the
// process lives on. These tests run a gateway built with -tags faultinject
// (package fault) and make it panic with GATEWAY_FAULT at one point of
// each path, on the second message that passes there: the connection
// that sent it gets close 1011 "Internal error", a connection opened
// before and one opened after are still answered, and the metric counts
// the panic under the path's site.

// startFaultGateway is startGateway on the faultinject binary with
// GATEWAY_FAULT=spec.
func startFaultGateway(t *testing.T, bin, spec string, opts ...option) *gateway {
	t.Helper()
	return &gateway{wsraw.LaunchOnFreePorts(t, bin, func(addr, admin string) wsraw.Spec {
		cfg := baseConfig(addr, admin)
		for _, o := range opts {
			o(cfg)
		}
		return wsraw.Spec{
			Addr: addr, Admin: admin, Config: cfg,
			Env: []string{"GATEWAY_FAULT=" + spec},
			Files: map[string]string{
				"tokens.txt":  "# sha256 subject\n" + sha(aliceToken) + " alice\n" + sha(bobToken) + " bob\n",
				"jwt.key":     jwtSecret + "\n",
				"admin.token": adminToken + "\n",
			},
			LogLimit: -1,
		}
	})}
}

// panicSecret is in every message the clients send: the panic log must
// not hold message bytes (they may carry tokens).
const panicSecret = "panic-secret-7f3a"

func TestPanicClosesOneConnection(t *testing.T) {
	bin, dir, err := wsraw.BuildTagged(os.Getenv("E2E_RACE") == "1", "faultinject")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	echo := `{"jsonrpc":"2.0","id":"%s","method":"tools/call","params":{"name":"echo","arguments":{"message":"` + panicSecret + `"}}}`
	for _, tc := range []struct {
		name  string
		fault string // GATEWAY_FAULT: the second hit of the point panics
		site  string // gateway_panics_total's label
		path  string
		// first is what each connection sends first (the message that
		// passes the point), with %s its id; answered checks the reply.
		first string
		// stack, when set, must be in the logged stack (the path taken).
		stack string
		// skip, when set, is why the row does not run yet.
		skip string
	}{
		// The builtin server answers the message (inline on the loop: an
		// echo is small).
		{name: "builtin", fault: "builtin.handle:2", site: "builtin", path: "/mcp", first: echo,
			stack: "builtin.(*session).HandleInline"},
		// The same on a builtin worker goroutine: a message over
		// builtin.InlineMax is not answered on the loop.
		{name: "builtin-worker", fault: "builtin.handle:2", site: "builtin", path: "/mcp",
			first: strings.Replace(echo, panicSecret, panicSecret+strings.Repeat("x", 20<<10), 1),
			stack: "builtin.(*Server).serve"},
		// A stdio worker's line (the answer to initialize) is handled by
		// the reader of that connection's child.
		{name: "stdio", fault: "stdio.line:2", site: "upstream", path: "/sh",
			first: strings.Replace(shInitialize, `"id":0`, `"id":"%s"`, 1),
			stack: "stdio.(*child).route"},
		// The event loop handles a text message (reactor; site "loop").
		// Auth messages are text too: before's auth and echo are hits 1
		// and 2, hit's auth is 3, its echo the 4th.
		{name: "loop", fault: "loop.text:4", site: "loop", path: "/mcp", first: echo,
			stack: "reactor.(*conn).onText"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.skip != "" {
				t.Skip(tc.skip)
			}
			g := startFaultGateway(t, bin, tc.fault, shUpstream(t, 8))
			open := func(token, id string) *raw {
				t.Helper()
				r := authOver(t, g.raw(t, tc.path), token)
				r.sendText(strings.Replace(tc.first, "%s", id, 1))
				return r
			}
			answered := func(r *raw, id string) {
				t.Helper()
				if got := r.readText(); !strings.Contains(got, `"id":"`+id+`"`) || !strings.Contains(got, `"result"`) {
					t.Fatalf("%s: %s", id, got)
				}
			}

			before := open(aliceToken, "before") // hit 1
			answered(before, "before")
			hit := open(bobToken, "hit") // hit 2: panics
			hit.expectClose(1011, "Internal error", 10*time.Second)

			before.sendText(`{"jsonrpc":"2.0","id":"again","method":"ping"}`)
			answered(before, "again")
			after := open(aliceToken, "after")
			answered(after, "after")

			if !g.Alive() {
				t.Fatalf("the gateway exited:\n%s", g.Logs())
			}
			sample := `gateway_panics_total{site="` + tc.site + `"}`
			if v := g.Metric(t, sample); v < 1 {
				t.Fatalf("%s = %v, want >= 1", sample, v)
			}
			if !g.waitLog(`"panic recovered"`, 5*time.Second) {
				t.Fatalf("no panic logged:\n%s", g.Logs())
			}
			if !strings.Contains(g.Logs(), tc.stack) {
				t.Fatalf("the logged stack lacks %s:\n%s", tc.stack, g.Logs())
			}
			if strings.Contains(g.Logs(), panicSecret) {
				t.Fatalf("the log holds message bytes:\n%s", g.Logs())
			}
		})
	}
}

// Production binaries contain no fault injection: without the faultinject
// tag fault.Hit is an empty function and GATEWAY_FAULT is never read.
func TestNoFaultInjectionInRelease(t *testing.T) {
	for _, bin := range []string{gatewayBin, gatewayBinFast} {
		b, err := os.ReadFile(bin)
		must(t, err)
		if strings.Contains(string(b), "GATEWAY_FAULT") {
			t.Fatalf("%s reads GATEWAY_FAULT: it was built with fault injection", bin)
		}
	}
}
