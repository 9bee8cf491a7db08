package e2e

import (
	"strings"
	"testing"
	"time"

	"github.com/mcpgate/gateway/conformance/wsraw"
)

// A big message trickled in small pieces, with pauses, is relayed intact:
// partial frames stay buffered across reads and nothing is lost.
func TestTrickledMessage(t *testing.T) {
	eachTransport(t, func(t *testing.T, tr wsraw.Transport) {
		g := startGatewayOn(t, tr)
		r := g.authed(t, aliceToken)
		msg := strings.Repeat("0123456789", 6000)
		req := buildFrame(true, 0, 1, true, []byte(`{"jsonrpc":"2.0","id":"big","method":"tools/call","params":{"name":"echo","arguments":{"message":"`+msg+`"}}}`))
		for i := 0; i < len(req); i += 7000 {
			r.write(req[i:min(i+7000, len(req))])
			time.Sleep(5 * time.Millisecond)
		}
		got := r.readText()
		if !strings.Contains(got, `"id":"big"`) || !strings.Contains(got, "Echo: "+msg) {
			t.Fatalf("reply of %d bytes does not echo the message", len(got))
		}
	})
}
