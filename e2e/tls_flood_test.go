package e2e

import (
	"crypto/tls"
	"fmt"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mcpgate/gateway/conformance/wsraw"
)

// partialHello is the first half of a real crypto/tls ClientHello: what a
// client that stalls mid-handshake has sent.
func partialHello(t *testing.T, cfg *tls.Config) []byte {
	t.Helper()
	a, b := net.Pipe()
	defer a.Close()
	go func() { _ = tls.Client(b, cfg).Handshake(); b.Close() }()
	buf := make([]byte, 64<<10)
	_ = a.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, err := a.Read(buf)
	must(t, err)
	return buf[:n/2]
}

// dialFromTLS opens a TCP connection from a chosen loopback address.
func dialFromTLS(src, addr string) (net.Conn, error) {
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 5 * time.Second}
	return d.Dial("tcp", addr)
}

// wssAuthed is one fresh client: TCP, TLS, upgrade, first-message auth.
func wssAuthed(t *testing.T, g *gateway, ca *testCA) *raw {
	t.Helper()
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", g.Addr, ca.clientTLS(0))
	must(t, err)
	t.Cleanup(func() { c.Close() })
	r := requestOver(t, c, wsraw.UpgradeRequest(g.Addr, "/mcp"))
	if r.resp.StatusCode != 101 {
		t.Fatalf("upgrade: %s", r.resp.Status)
	}
	r.sendText(`{"type":"auth","token":"` + aliceToken + `"}`)
	if got := r.readText(); !strings.HasPrefix(got, `{"type":"auth_ok"`) {
		t.Fatalf("auth: %s", got)
	}
	return r
}

// wssConnectAuth times wssAuthed, then closes the connection.
func wssConnectAuth(t *testing.T, g *gateway, ca *testCA) time.Duration {
	t.Helper()
	start := time.Now()
	r := wssAuthed(t, g, ca)
	d := time.Since(start)
	r.c.Close()
	return d
}

func median(d []time.Duration) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[len(s)/2]
}

// TestStalledClientHelloFlood: 1,000 connections that each send half a
// ClientHello and then nothing hold no handshake worker (the ClientHello is
// gathered on the loop), so a fresh client's wss connect + auth stays within
// 2x its baseline (issue 12). The stalled sockets stay open throughout.
func TestStalledClientHelloFlood(t *testing.T) {
	opts := []option{with("limits", `
  handshake_timeout: 10s
  idle_timeout: 60s
  ping_interval: 20s`), with("ratelimit", `
  handshakes_per_ip: {count: 100000, window: 10s}`)}
	g, ca, _ := startTLSGateway(t, opts...)
	// The control gateway gets no flood; its samples are taken in turn with
	// the flooded one's, so machine noise (other tests, steal) hits both.
	ctl, ctlCA, _ := startTLSGateway(t, opts...)
	const samples, stalledN, sources = 15, 1000, 8
	hello := partialHello(t, ca.clientTLS(0))

	wssConnectAuth(t, g, ca) // warm up (certificate load, pools)
	wssConnectAuth(t, ctl, ctlCA)
	var base []time.Duration
	for range samples {
		base = append(base, wssConnectAuth(t, g, ca))
	}

	var stalled []net.Conn
	defer func() {
		for _, c := range stalled {
			c.Close()
		}
	}()
	for i := range stalledN {
		c, err := dialFromTLS(fmt.Sprintf("127.0.1.%d", 1+i%sources), g.Addr)
		must(t, err)
		stalled = append(stalled, c)
		_, err = c.Write(hello)
		must(t, err)
	}
	var during, control []time.Duration
	for range samples {
		during = append(during, wssConnectAuth(t, g, ca))
		control = append(control, wssConnectAuth(t, ctl, ctlCA))
	}
	// The stalled handshakes were all still open while we measured: the
	// gateway holds them (until the 3 s ClientHello deadline), it did not
	// shed them.
	if open := g.Metric(t, "gateway_connections_open"); open < stalledN {
		t.Fatalf("only %v connections open: the stalled handshakes were dropped early", open)
	}
	mb, md, mc := median(base), median(during), median(control)
	t.Logf("wss connect+auth median: before %v; with %d stalled ClientHellos %v; control gateway meanwhile %v", mb, stalledN, md, mc)
	if md > 2*mc {
		t.Fatalf("with %d stalled ClientHellos a fresh client took %v (median), the unflooded control %v: over 2x", stalledN, md, mc)
	}
	// And they do end, at the ClientHello deadline, not at handshake_timeout.
	_ = stalled[0].SetReadDeadline(time.Now().Add(6 * time.Second))
	start := time.Now()
	if _, err := stalled[0].Read(make([]byte, 1)); err == nil {
		t.Fatal("a stalled handshake got bytes")
	} else if wsraw.IsTimeout(err) {
		t.Fatal("stalled handshake still open after 6 s")
	}
	t.Logf("stalled handshake closed %v after the measurement", time.Since(start))
}

// TestPendingHandshakesCountPerIP: TLS handshakes in progress count against
// max_connections_per_ip, and the client over the cap gets its 503 over TLS.
func TestPendingHandshakesCountPerIP(t *testing.T) {
	g, ca, _ := startTLSGateway(t, with("limits", `
  handshake_timeout: 10s
  max_connections_per_ip: 10
  idle_timeout: 60s
  ping_interval: 20s`))
	hello := partialHello(t, ca.clientTLS(0))
	const src = "127.0.2.1"
	for range 10 {
		c, err := dialFromTLS(src, g.Addr)
		must(t, err)
		defer c.Close()
		_, err = c.Write(hello)
		must(t, err)
	}
	// The loops accept from their own listeners: wait until all ten are in
	// before the eleventh, or it may be accepted first.
	for deadline := time.Now().Add(3 * time.Second); g.Metric(t, "gateway_connections_open") < 10; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("stalled handshakes not accepted")
		}
	}
	raw, err := dialFromTLS(src, g.Addr)
	must(t, err)
	c := tls.Client(raw, ca.clientTLS(0))
	defer c.Close()
	r := requestOver(t, c, wsraw.UpgradeRequest(g.Addr, "/mcp"))
	if r.resp.StatusCode != 503 || r.resp.Header.Get("Retry-After") == "" {
		t.Fatalf("11th connection from %s with 10 handshakes pending: %s %v", src, r.resp.Status, r.resp.Header)
	}
	// Another address is not affected.
	wssConnectAuth(t, g, ca)
}
