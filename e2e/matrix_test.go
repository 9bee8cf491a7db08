package e2e

import (
	"net"
	"net/http"
	"testing"

	"github.com/mcpgate/gateway/conformance/wsraw"
)

// The wire rows (SPEC 4.1-4.4) run over every transport of the contract
// (wsraw.Transports: ws, wss, ws-haproxy, wss-haproxy): a row is written once,
// inside eachTransport, against a gateway from startGatewayOn, and dials with
// the gateway's own helpers (g.raw, g.authed, g.conn, g.http), never with
// g.Addr. A failing row names its transport: TestAfterAuth/wss/binary_message.

// eachTransport runs f once per transport, as parallel subtests named by
// the transport.
func eachTransport(t *testing.T, f func(t *testing.T, tr wsraw.Transport)) {
	t.Helper()
	wsraw.EachTransport(t, f)
}

// startGatewayOn is startGateway over tr: tls and proxy settings in the
// config, HAProxy in front for the HAProxy transports.
func startGatewayOn(t testing.TB, tr wsraw.Transport, opts ...option) *gateway {
	t.Helper()
	return startGatewayFull(t, tr, nil, opts...)
}

// conn connects over the gateway's transport (TCP, TLS handshake done for
// wss), from src when not empty; closed when the test ends.
func (g *gateway) conn(t testing.TB, src string) net.Conn {
	t.Helper()
	c, err := g.DialNet(src)
	must(t, err)
	t.Cleanup(func() { c.Close() })
	return c
}

// raw connects over the gateway's transport and sends an upgrade request
// for path; the response (101 or a refusal) is read.
func (g *gateway) raw(t testing.TB, path string, extra ...string) *raw {
	t.Helper()
	return requestOver(t, g.conn(t, ""), wsraw.UpgradeRequest(g.Addr, path, extra...))
}

// rawFrom is raw from the loopback address src: behind HAProxy the gateway
// learns it from the PROXY header.
func (g *gateway) rawFrom(t testing.TB, src, path string, extra ...string) *raw {
	t.Helper()
	return requestOver(t, g.conn(t, src), wsraw.UpgradeRequest(g.Addr, path, extra...))
}

// rawRequest connects over the gateway's transport and writes req verbatim.
func (g *gateway) rawRequest(t testing.TB, req string) *raw {
	t.Helper()
	return requestOver(t, g.conn(t, ""), req)
}

// authed upgrades on /mcp over the gateway's transport and authenticates
// with a first-message token.
func (g *gateway) authed(t testing.TB, token string) *raw {
	t.Helper()
	return authOver(t, g.raw(t, "/mcp"), token)
}

// http sends req to the main listener over the gateway's transport (a new
// connection per request).
func (g *gateway) http(t testing.TB, method, path string, header map[string]string) *http.Response {
	t.Helper()
	req, err := http.NewRequest(method, g.HTTPURL(path), nil)
	must(t, err)
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := g.HTTPClient().Do(req)
	if err != nil {
		t.Fatalf("%s %s over %s: %v", method, path, g.Transport, err)
	}
	return resp
}
