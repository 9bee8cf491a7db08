package e2e

import (
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mcpgate/gateway/conformance/wsraw"
)

// TestSlowConsumerCloseFrame: a reader that lets its backlog pass
// write_buffer_bytes gets the backlog, then close 1008 "Slow consumer"
// (SPEC 4.4), on every transport; nothing is added after the cap.
func TestSlowConsumerCloseFrame(t *testing.T) {
	limits := with("limits", `
  handshake_timeout: 2s
  write_buffer_bytes: 256KiB`)
	rates := with("ratelimit", `
  per_connection: {messages: 100000, window: 10s}
  frames_per_connection: {count: 100000, window: 10s}
  per_subject: {messages: 100000, window: 10s}`)
	eachTransport(t, func(t *testing.T, tr wsraw.Transport) {
		g := startGatewayOn(t, tr, limits, rates)
		c := g.conn(t, "")
		r := requestOver(t, c, wsraw.UpgradeRequest(g.Addr, "/mcp"))
		r.sendText(`{"type":"auth","token":"` + aliceToken + `"}`)
		r.readText()
		req := buildFrame(true, 0, 1, true, []byte(`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"message":"`+
			strings.Repeat("x", 60000)+`"}}}`))
		var stop atomic.Bool
		done := make(chan struct{})
		go func() { // never read while writing: replies fill the buffers
			defer close(done)
			for i := 0; i < 2000 && !stop.Load(); i++ {
				_ = c.SetWriteDeadline(time.Now().Add(5 * time.Second))
				if _, err := c.Write(req); err != nil {
					return
				}
			}
		}()
		for deadline := time.Now().Add(30 * time.Second); g.Metric(t, `gateway_messages_rejected_total{reason="slow_consumer"}`) < 1; time.Sleep(50 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatal("slow reader never closed")
			}
		}
		stop.Store(true)
		<-done
		// Now read: the backlog, then the close frame, within slowGrace.
		texts := 0
		for {
			f, err := r.readFrame(7 * time.Second)
			if err != nil {
				t.Fatalf("after %d replies: %v (no close frame)", texts, err)
			}
			if f.op == 1 {
				texts++
				continue
			}
			if f.op != 8 {
				continue
			}
			code, reason := wsraw.ParseClose(f.payload)
			if code != 1008 || reason != "Slow consumer" {
				t.Fatalf("close %d %q", code, reason)
			}
			break
		}
		if texts == 0 {
			t.Fatal("no reply before the close frame")
		}
		t.Logf("%d replies, then 1008 Slow consumer", texts)
	})
}
