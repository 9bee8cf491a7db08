package e2e

import (
	"crypto/rand"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/mcpgate/gateway/conformance/wsraw"
)

// Issue 14 item 7 end to end, on the four transports: the maps and labels a
// client can grow stay bounded, and JWT time claims are JSON numbers only.

// metricsText is the whole /metrics page.
func metricsText(t testing.TB, g *gateway) string {
	t.Helper()
	resp, err := http.Get("http://" + g.Admin + "/metrics")
	must(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	must(t, err)
	return string(b)
}

// waitMetric waits until sample reaches at least want; it returns the value.
func waitMetric(t testing.TB, g *gateway, sample string, want float64, timeout time.Duration) float64 {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		v := g.Metric(t, sample)
		if v >= want || time.Now().After(deadline) {
			return v
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// SPEC 10: a close code a client chooses (3000-4999) is counted as "other",
// never as a label of its own; a registered code keeps its number.
func TestCloseCodeLabelsBounded(t *testing.T) {
	eachTransport(t, func(t *testing.T, tr wsraw.Transport) {
		g := startGatewayOn(t, tr)
		for _, code := range []int{3999, 4321, 1001} {
			r := g.authed(t, aliceToken)
			r.write(wsraw.CloseFrame(code, []byte("bye")))
			r.expectClose(code, "", 3*time.Second) // the gateway echoes the code
		}
		// Before authentication too.
		r := g.raw(t, "/mcp")
		r.write(wsraw.CloseFrame(4000, nil))
		r.expectClose(4000, "", 3*time.Second)

		if v := waitMetric(t, g, `gateway_closes_total{code="other"}`, 3, 5*time.Second); v != 3 {
			t.Fatalf(`gateway_closes_total{code="other"} = %v, want 3 (3999, 4321, 4000)`, v)
		}
		if v := waitMetric(t, g, `gateway_closes_total{code="1001"}`, 1, 5*time.Second); v != 1 {
			t.Fatalf(`gateway_closes_total{code="1001"} = %v, want 1`, v)
		}
		page := metricsText(t, g)
		for _, code := range []string{"3999", "4321", "4000"} {
			if strings.Contains(page, `code="`+code+`"`) {
				t.Errorf("client-chosen close code %s became a label", code)
			}
		}
	})
}

// hs256 signs claims with the e2e gateway's secret.
func hs256(t testing.TB, claims jwt.MapClaims) string {
	t.Helper()
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString([]byte(jwtSecret))
	must(t, err)
	return s
}

// RFC 7519: exp, nbf and iat are JSON numbers. A correctly signed token whose
// exp is a numeric string is refused: close 1008 on the auth message, 401 on
// a bearer upgrade; the same claims with a number pass both ways.
func TestJWTNumericClaims(t *testing.T) {
	eachTransport(t, func(t *testing.T, tr wsraw.Transport) {
		g := startGatewayOn(t, tr)
		now := time.Now().Unix()
		stringExp := hs256(t, jwt.MapClaims{"sub": "erin", "exp": "9999999999", "iat": now, "nbf": now})
		stringNbf := hs256(t, jwt.MapClaims{"sub": "erin", "exp": now + 3600, "nbf": fmt.Sprint(now)})
		numberExp := hs256(t, jwt.MapClaims{"sub": "erin", "exp": 9999999999, "iat": now, "nbf": now})

		for name, tok := range map[string]string{"exp": stringExp, "nbf": stringNbf} {
			t.Run(name+" as a string closes 1008", func(t *testing.T) {
				r := g.raw(t, "/mcp")
				r.sendText(`{"type":"auth","token":"` + tok + `"}`)
				r.expectClose(1008, "Invalid credentials", 3*time.Second)
			})
			t.Run(name+" as a string is 401 as a bearer", func(t *testing.T) {
				r := g.raw(t, "/mcp", "Authorization: Bearer "+tok)
				if r.resp.StatusCode != http.StatusUnauthorized {
					t.Fatalf("got %s, want 401", r.resp.Status)
				}
			})
		}
		t.Run("exp as a number authenticates", func(t *testing.T) {
			r := g.authed(t, numberExp)
			r.sendText(`{"jsonrpc":"2.0","id":1,"method":"ping"}`)
			if got := r.readText(); got != `{"jsonrpc":"2.0","id":1,"result":{}}` {
				t.Fatalf("ping reply %s", got)
			}
			b := g.raw(t, "/mcp", "Authorization: Bearer "+numberExp)
			if b.resp.StatusCode != 101 {
				t.Fatalf("bearer upgrade: %s", b.resp.Status)
			}
		})
		if v := waitMetric(t, g, `gateway_auth_failures_total{reason="malformed"}`, 4, 3*time.Second); v != 4 {
			t.Fatalf(`gateway_auth_failures_total{reason="malformed"} = %v, want 4`, v)
		}
	})
}

// v6Clients are client addresses on lo for TestPerIPLimitsIPv6Prefix: A1
// and A2 in one /64 of a random ULA prefix (fd00::/8, RFC 4193; random so
// that parallel runs never share one), B in the next /64.
type v6Clients struct{ A1, A2, B string }

// ipv6ClientAddrs adds the three addresses to lo (root only) and removes
// them when t ends. Without them the test skips, but fails with CI=true.
func ipv6ClientAddrs(t *testing.T) v6Clients {
	t.Helper()
	fail := t.Skipf
	if os.Getenv("CI") == "true" {
		fail = t.Fatalf
	}
	var id [5]byte
	_, _ = rand.Read(id[:])
	p := fmt.Sprintf("fd%02x:%02x%02x:%02x%02x", id[0], id[1], id[2], id[3], id[4])
	canon := func(a string) string { return netip.MustParseAddr(a).String() } // as the gateway logs it
	c := v6Clients{A1: canon(p + ":1::2"), A2: canon(p + ":1:ffff:ffff:ffff:3"), B: canon(p + ":2::2")}
	var added []string
	t.Cleanup(func() {
		for _, a := range added {
			if out, err := exec.Command("ip", "-6", "addr", "del", a+"/128", "dev", "lo").CombinedOutput(); err != nil {
				t.Errorf("removing %s from lo: %v %s", a, err, out)
			}
		}
	})
	for _, a := range []string{c.A1, c.A2, c.B} {
		out, err := exec.Command("ip", "-6", "addr", "add", a+"/128", "dev", "lo", "nodad").CombinedOutput()
		if err != nil {
			fail("cannot add %s to lo (needs root and iproute2): %v %s", a, err, out)
		}
		added = append(added, a)
	}
	// The kernel lets a socket bind them now (nodad: no tentative phase).
	for _, a := range []string{c.A1, c.A2, c.B} {
		ln, err := net.Listen("tcp", "["+a+"]:0")
		if err != nil {
			fail("binding %s: %v", a, err)
		}
		ln.Close()
	}
	return c
}

// startGatewayV6 is startGatewayOn with the gateway listening on [::1]; for
// the HAProxy transports, HAProxy listens on [::1] too and sends PROXY v2 to
// the gateway, which trusts ::1/128.
func startGatewayV6(t *testing.T, tr wsraw.Transport, opts ...option) *gateway {
	t.Helper()
	ln, err := net.Listen("tcp", "[::1]:0")
	must(t, err)
	addr := ln.Addr().String()
	ln.Close()
	admin := fmt.Sprintf("127.0.0.1:%d", wsraw.FreePort(t))
	cfg := baseConfig(addr, admin)
	for _, o := range opts {
		o(cfg)
	}
	if tr.HAProxy {
		cfg["proxy"] = `
  trusted_cidrs: ["::1/128"]
  proxy_protocol: true`
	}
	g := &gateway{wsraw.Launch(t, gatewayBin, t.TempDir(), wsraw.Spec{
		Addr: addr, Admin: admin, Config: cfg,
		Files: map[string]string{
			"tokens.txt":  "# sha256 subject\n" + sha(aliceToken) + " alice\n" + sha(bobToken) + " bob\n",
			"jwt.key":     jwtSecret + "\n",
			"admin.token": adminToken + "\n",
		},
		LogLimit:  -1,
		Transport: wsraw.Transport{Name: tr.Name, TLS: tr.TLS}, // HAProxy: ours, below
	})}
	if tr.HAProxy {
		g.Front = wsraw.StartHAProxy(t, wsraw.HAProxy{IPv6: true,
			Servers: []wsraw.HAServer{{Addr: addr, Options: "send-proxy-v2"}}})
	}
	return g
}

// Per-IP limits key on the client's /64 (limits.ipv6_prefix, default 64):
// two addresses of one /64 share one budget of max_connections_per_ip and
// handshakes_per_ip, an address of the next /64 has its own; behind HAProxy
// the address comes from the PROXY v2 header and is keyed the same way.
func TestPerIPLimitsIPv6Prefix(t *testing.T) {
	c := ipv6ClientAddrs(t)
	eachTransport(t, func(t *testing.T, tr wsraw.Transport) {
		g := startGatewayV6(t, tr, with("limits", `
  handshake_timeout: 2s
  max_connections_per_ip: 2`), with("ratelimit", `
  handshakes_per_ip: {count: 4, window: 60s}`))
		status := func(r *raw) int { return r.resp.StatusCode }

		// Two connections from A1 fill the /64's connection budget.
		a1 := []*raw{g.rawFrom(t, c.A1, "/mcp"), g.rawFrom(t, c.A1, "/mcp")}
		for i, r := range a1 {
			if status(r) != 101 {
				t.Fatalf("connection %d from %s: %s", i+1, c.A1, r.resp.Status)
			}
		}
		// A2 is another /128 of the same /64: the same client.
		if r := g.rawFrom(t, c.A2, "/mcp"); status(r) != 503 || r.resp.Header.Get("Retry-After") == "" {
			t.Fatalf("%s (same /64 as %s, 2 open): %s, want 503 + Retry-After", c.A2, c.A1, r.resp.Status)
		}
		// B is in the next /64: a budget of its own.
		b := authOver(t, g.rawFrom(t, c.B, "/mcp"), aliceToken)
		if !g.waitLog(`"remote":"`+c.B+`","subject":"alice"`, 3*time.Second) {
			t.Fatalf("no log line with the client's own address %s:\n%s", c.B, wsraw.Truncate(g.Logs(), 3000))
		}
		// A1's connections closed, A2 gets the /64's slots.
		closeAll := func(rs ...*raw) {
			t.Helper()
			for _, r := range rs {
				r.c.Close()
			}
			for deadline := time.Now().Add(5 * time.Second); g.Metric(t, "gateway_connections_open") > 1; time.Sleep(20 * time.Millisecond) {
				if time.Now().After(deadline) {
					t.Fatal("closed connections still open on the gateway")
				}
			}
		}
		closeAll(a1...)
		a2 := g.rawFrom(t, c.A2, "/mcp")
		if status(a2) != 101 {
			t.Fatalf("%s after the /64's connections closed: %s", c.A2, a2.resp.Status)
		}
		// Handshakes of the /64 so far: A1 twice, A2 once (the refusal by
		// the cap is not one): one more fits in handshakes_per_ip ...
		a1b := g.rawFrom(t, c.A1, "/mcp")
		if status(a1b) != 101 {
			t.Fatalf("4th handshake of the /64: %s", a1b.resp.Status)
		}
		// ... and, once the connections are closed (so that the rate and
		// not the cap decides), the 5th in 60 s is refused, from any /128
		// of the /64.
		closeAll(a2, a1b)
		if r := g.rawFrom(t, c.A2, "/mcp"); status(r) != 429 || r.resp.Header.Get("Retry-After") == "" {
			t.Fatalf("5th handshake of the /64 in 60 s: %s, want 429 + Retry-After", r.resp.Status)
		}
		if r := g.rawFrom(t, c.B, "/mcp"); status(r) != 101 {
			t.Fatalf("%s (its /64 made 1 handshake): %s", c.B, r.resp.Status)
		}
		b.c.Close()
		if v := g.Metric(t, `gateway_handshakes_total{result="503"}`); v != 1 {
			t.Fatalf(`gateway_handshakes_total{result="503"} = %v, want 1`, v)
		}
		if v := g.Metric(t, `gateway_handshakes_total{result="429"}`); v != 1 {
			t.Fatalf(`gateway_handshakes_total{result="429"} = %v, want 1`, v)
		}
	})
}
