package e2e

import (
	"bytes"
	"fmt"
	"strings"
	"testing"

	"github.com/mcpgate/gateway/conformance/wsraw"
)

// TestTLSInputCapResumes: a wss client pipelines more messages in one burst
// than the decrypted-input cap holds (max_message_bytes + a frame header +
// 4 KiB, here about 8 KiB, while one socket read takes up to 64 KiB), then
// waits. Every message is answered: once the reader consumes,
// the gateway decrypts the rest it already holds, without waiting for a
// socket read that will not come (issue 12, item 2).
func TestTLSInputCapResumes(t *testing.T) {
	g, ca, _ := startTLSGateway(t, with("limits", `
  handshake_timeout: 5s
  max_message_bytes: 4KiB
  max_preauth_message_bytes: 1KiB
  idle_timeout: 60s
  ping_interval: 20s`))
	r := wssAuthed(t, g, ca)
	const n, size = 60, 3500
	var burst bytes.Buffer
	for i := 1; i <= n; i++ {
		msg := fmt.Sprintf(`{"jsonrpc":"2.0","id":%d,"method":"tools/call","params":{"name":"echo","arguments":{"message":"%s"}}}`,
			i, strings.Repeat(string(rune('A'+i%50)), size))
		burst.Write(buildFrame(true, 0, 1, true, []byte(msg)))
	}
	r.write(burst.Bytes()) // ~210 KiB: a 64 KiB socket read holds eight times the cap
	seen := map[int]bool{}
	for range n { // answers may come in any order: workers run concurrently
		got := r.readText() // fails after 5 s without an answer
		var id int
		if _, err := fmt.Sscanf(got, `{"jsonrpc":"2.0","id":%d,`, &id); err != nil || id < 1 || id > n || seen[id] ||
			!strings.Contains(got, strings.Repeat(string(rune('A'+id%50)), size)) {
			t.Fatalf("answer %s", wsraw.Truncate(got, 120))
		}
		seen[id] = true
	}
}
