package abuse

import (
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/mcpgate/gateway/conformance/wsraw"
)

var gatewayBin string

func TestMain(m *testing.M) {
	if addr := os.Getenv(floodAddrEnv); addr != "" {
		pingFlood(addr) // this process is TestPreAuthPingFloodBystander's flooder
		return
	}
	bin, dir, err := wsraw.Build(false)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	gatewayBin = bin
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// start runs a gateway with the given config blocks over the defaults.
func start(t *testing.T, set wsraw.Config) *wsraw.Gateway {
	t.Helper()
	return wsraw.Start(t, gatewayBin, set)
}

// startOn is start over transport tr (tls, proxy settings; HAProxy in
// front): the attacks that are not about sheer numbers run over each
// transport of the wire contract, through eachTransport.
func startOn(t *testing.T, tr wsraw.Transport, set wsraw.Config) *wsraw.Gateway {
	t.Helper()
	return wsraw.StartOn(t, gatewayBin, tr, set)
}

// eachTransport runs f once per transport (ws, wss, ws-haproxy,
// wss-haproxy), as parallel subtests named by the transport.
func eachTransport(t *testing.T, f func(t *testing.T, tr wsraw.Transport)) {
	t.Helper()
	wsraw.EachTransport(t, f)
}

// authed opens an authenticated connection over g's transport, closed when
// the test ends.
func authed(t *testing.T, g *wsraw.Gateway) *wsraw.Conn {
	t.Helper()
	c, err := g.DialAuthed(wsraw.Token)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// checkServes checks c still gets a ping request answered.
func checkServes(t *testing.T, c *wsraw.Conn, id int) {
	t.Helper()
	if err := c.Write(wsraw.Frame(true, 0, wsraw.OpText, pingReq(id))); err != nil {
		t.Fatalf("bystander write: %v", err)
	}
	want := fmt.Sprintf(`{"jsonrpc":"2.0","id":%d,"result":{}}`, id)
	for {
		f, err := c.ReadFrame(5 * time.Second)
		if err != nil {
			t.Fatalf("bystander read: %v", err)
		}
		if f.Op == wsraw.OpPing || f.Op == wsraw.OpPong {
			continue
		}
		if f.Op != wsraw.OpText || string(f.Payload) != want {
			t.Fatalf("bystander got %s, want %s", f, want)
		}
		return
	}
}

func pingReq(id int) []byte {
	return fmt.Appendf(nil, `{"jsonrpc":"2.0","id":%d,"method":"ping"}`, id)
}

// expectClose reads frames until a close, skipping text and pong frames,
// and checks its code and (when not empty) reason; it returns the number
// of text frames skipped.
func expectClose(t *testing.T, c *wsraw.Conn, code int, reason string, timeout time.Duration) int {
	t.Helper()
	deadline := time.Now().Add(timeout)
	texts := 0
	for {
		f, err := c.ReadFrame(time.Until(deadline))
		if err != nil {
			t.Fatalf("waiting for close %d (after %d text messages): %v", code, texts, err)
		}
		switch f.Op {
		case wsraw.OpText:
			texts++
		case wsraw.OpClose:
			got, why := wsraw.ParseClose(f.Payload)
			if got != code || (reason != "" && why != reason) {
				t.Fatalf("close %d %q, want %d %q", got, why, code, reason)
			}
			return texts
		}
	}
}

// alive fails the test if the gateway process has exited.
func alive(t *testing.T, g *wsraw.Gateway) {
	t.Helper()
	if !g.Alive() {
		t.Fatalf("gateway exited: %v\n%s", g.ExitErr(), wsraw.Truncate(g.Logs(), 4000))
	}
}

func mib(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }
