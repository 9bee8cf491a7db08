package e2e

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/mcpgate/gateway/conformance/wsraw"
)

// Issue 14 item 6 end to end (SPEC 10), on the four transports: reply size
// and write cap agree. write_buffer_bytes (4 MiB) is the largest reply a
// connection is sent: a reply whose frame is exactly 4 MiB reaches a
// reading client whole; one byte more, or 6 MiB, becomes JSON-RPC -32603
// (data.reason "reply_too_large") for its request; never a 1008 "Slow
// consumer" for a client that reads.
func TestReplyOverWriteCap(t *testing.T) {
	const writeCap = 4 << 20
	eachTransport(t, func(t *testing.T, tr wsraw.Transport) {
		g := startGatewayOn(t, tr, with("limits", `
  handshake_timeout: 1s
  idle_timeout: 60s
  ping_interval: 20s
  max_message_bytes: 8MiB
  write_buffer_bytes: 4MiB`))
		r := g.authed(t, aliceToken)
		echo := func(id, n int) string {
			return fmt.Sprintf(`{"jsonrpc":"2.0","id":%d,"method":"tools/call","params":{"name":"echo","arguments":{"message":"%s"}}}`,
				id, strings.Repeat("x", n))
		}
		// The reply is the message plus a fixed envelope (ids of one digit).
		r.sendText(echo(1, 100))
		overhead := len(r.readText()) - 100
		fits := writeCap - 10 - overhead // the 10-byte header of a frame this size

		r.sendText(echo(2, fits)) // a frame of exactly write_buffer_bytes
		if got := r.readText(); len(got) != fits+overhead || !strings.HasPrefix(got, `{"jsonrpc":"2.0","id":2,"result":`) {
			t.Fatalf("reply of %d bytes: got %d bytes: %s", fits+overhead, len(got), wsraw.Truncate(got, 200))
		}
		for _, c := range []struct{ id, n int }{{3, fits + 1}, {4, 6 << 20}} {
			r.sendText(echo(c.id, c.n))
			got := r.readText()
			var a struct {
				ID    int `json:"id"`
				Error struct {
					Code int `json:"code"`
					Data struct {
						Reason     string `json:"reason"`
						ReplyBytes int    `json:"reply_bytes"`
						LimitBytes int    `json:"limit_bytes"`
					} `json:"data"`
				} `json:"error"`
			}
			if json.Unmarshal([]byte(got), &a) != nil || a.ID != c.id || a.Error.Code != -32603 ||
				a.Error.Data.Reason != "reply_too_large" || a.Error.Data.ReplyBytes != c.n+overhead || a.Error.Data.LimitBytes != writeCap {
				t.Fatalf("reply of %d bytes: %s", c.n+overhead, wsraw.Truncate(got, 300))
			}
		}
		r.sendText(`{"jsonrpc":"2.0","id":5,"method":"ping"}`)
		if got := r.readText(); got != `{"jsonrpc":"2.0","id":5,"result":{}}` {
			t.Fatalf("after the refused replies: %s", got)
		}
		if v := g.Metric(t, `gateway_messages_rejected_total{reason="reply_too_large"}`); v != 2 {
			t.Fatalf("reply_too_large counted %v times, want 2", v)
		}
		if v := g.Metric(t, `gateway_messages_rejected_total{reason="slow_consumer"}`); v != 0 {
			t.Fatalf("a reading client was cut as a slow consumer (%v)", v)
		}
	})
}
