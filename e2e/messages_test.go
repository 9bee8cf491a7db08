package e2e

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/mcpgate/gateway/conformance/wsraw"
)

// SPEC 4.4: after authentication.
func TestAfterAuth(t *testing.T) {
	eachTransport(t, func(t *testing.T, tr wsraw.Transport) {
		g := startGatewayOn(t, tr, with("limits", `
  handshake_timeout: 2s
  max_message_bytes: 64KiB
  max_preauth_message_bytes: 4KiB`))

		t.Run("ids keep type and value", func(t *testing.T) {
			r := g.authed(t, aliceToken)
			for _, id := range []string{`"7"`, `7`, `1.50`, `"a\"b\\u00e9"`, `-0`, `12345678901234567890123`, `""`} {
				r.sendText(`{"jsonrpc":"2.0","id":` + id + `,"method":"ping"}`)
				want := `{"jsonrpc":"2.0","id":` + id + `,"result":{}}`
				if got := r.readText(); got != want {
					t.Fatalf("id %s: got %s", id, got)
				}
			}
		})
		t.Run("invalid JSON gets -32700 and the connection stays", func(t *testing.T) {
			r := g.authed(t, aliceToken)
			r.sendText(`{"jsonrpc":"2.0","id":1,`)
			var resp struct {
				ID    any `json:"id"`
				Error struct{ Code int }
			}
			got := r.readText()
			must(t, json.Unmarshal([]byte(got), &resp))
			if resp.ID != nil || resp.Error.Code != -32700 || !strings.Contains(got, `"id":null`) {
				t.Fatalf("got %s", got)
			}
			r.sendText(`{"jsonrpc":"2.0","id":2,"method":"ping"}`)
			if got := r.readText(); got != `{"jsonrpc":"2.0","id":2,"result":{}}` {
				t.Fatalf("after -32700: %s", got)
			}
		})
		t.Run("batch", func(t *testing.T) {
			r := g.authed(t, aliceToken)
			r.sendText(`[{"jsonrpc":"2.0","id":"x","method":"ping"},{"jsonrpc":"2.0","method":"notifications/initialized"},{"jsonrpc":"2.0","id":3,"method":"ping"}]`)
			if got := r.readText(); got != `[{"jsonrpc":"2.0","id":"x","result":{}},{"jsonrpc":"2.0","id":3,"result":{}}]` {
				t.Fatalf("got %s", got)
			}
		})
		t.Run("fragmented message is reassembled", func(t *testing.T) {
			r := g.authed(t, aliceToken)
			msg := []byte(`{"jsonrpc":"2.0","id":9,"method":"tools/call","params":{"name":"echo","arguments":{"message":"héllo"}}}`)
			r.write(buildFrame(false, 0, 1, true, msg[:10]))
			r.write(buildFrame(true, 0, 9, true, []byte("p"))) // ping between fragments
			r.write(buildFrame(false, 0, 0, true, msg[10:75])) // splits the é
			r.write(buildFrame(true, 0, 0, true, msg[75:]))
			f, err := r.readFrame(3 * time.Second)
			must(t, err)
			if f.op != 10 || string(f.payload) != "p" {
				t.Fatalf("want pong p, got op %d %q", f.op, f.payload)
			}
			if got := r.readText(); !strings.Contains(got, "Echo: héllo") {
				t.Fatalf("got %s", got)
			}
		})
		t.Run("client close is answered", func(t *testing.T) {
			r := g.authed(t, aliceToken)
			p := binary.BigEndian.AppendUint16(nil, 1000)
			r.write(buildFrame(true, 0, 8, true, append(p, "bye"...)))
			r.expectClose(1000, "", 3*time.Second)
		})

		violations := []struct {
			name   string
			frames [][]byte
			code   int
		}{
			{"binary message", [][]byte{buildFrame(true, 0, 2, true, []byte{1, 2, 3})}, 1003},
			{"unmasked frame", [][]byte{buildFrame(true, 0, 1, false, []byte(`{}`))}, 1002},
			{"reserved bits", [][]byte{buildFrame(true, 4, 1, true, []byte(`{}`))}, 1002},
			{"control frame over 125 bytes", [][]byte{buildFrame(true, 0, 9, true, make([]byte, 126))}, 1002},
			{"fragmented control frame", [][]byte{buildFrame(false, 0, 9, true, []byte("x"))}, 1002},
			{"unknown opcode", [][]byte{buildFrame(true, 0, 3, true, nil)}, 1002},
			{"continuation without start", [][]byte{buildFrame(true, 0, 0, true, []byte("x"))}, 1002},
			{"new message inside a fragmented one", [][]byte{buildFrame(false, 0, 1, true, []byte("[")), buildFrame(true, 0, 1, true, []byte("]"))}, 1002},
			{"invalid UTF-8", [][]byte{buildFrame(true, 0, 1, true, []byte{'"', 0xff, 0xfe, '"'})}, 1007},
			{"surrogate in UTF-8", [][]byte{buildFrame(true, 0, 1, true, []byte{'"', 0xed, 0xa0, 0x80, '"'})}, 1007},
			{"message over max_message_bytes", [][]byte{buildFrame(true, 0, 1, true, make([]byte, 64<<10+1))}, 1009},
			{"fragments summing over max_message_bytes", [][]byte{
				buildFrame(false, 0, 1, true, make([]byte, 40<<10)), buildFrame(true, 0, 0, true, make([]byte, 30<<10))}, 1009},
			{"invalid close code", [][]byte{buildFrame(true, 0, 8, true, []byte{0x03, 0xed})}, 1002},
		}
		for _, v := range violations {
			t.Run(v.name, func(t *testing.T) {
				r := g.authed(t, aliceToken)
				r.writeRefused(bytes.Join(v.frames, nil))
				r.expectClose(v.code, "", 3*time.Second)
			})
		}

		t.Run("2 GiB header refused at once with 1009", func(t *testing.T) {
			r := g.authed(t, aliceToken)
			r.write(wsraw.Header(true, 0, 1, 2<<30)) // no payload follows
			r.expectClose(1009, "", 2*time.Second)
		})
		t.Run("pre-auth cap is smaller", func(t *testing.T) {
			r := g.raw(t, "/mcp")
			r.writeRefused(buildFrame(true, 0, 1, true, []byte(`{"type":"auth","token":"`+strings.Repeat("a", 5000)+`"}`)))
			r.expectClose(1009, "", 3*time.Second)
		})
	})
}

func TestRateLimits(t *testing.T) {
	eachTransport(t, func(t *testing.T, tr wsraw.Transport) {
		g := startGatewayOn(t, tr, with("ratelimit", `
  per_connection: {messages: 10, window: 10s}
  per_subject: {messages: 15, window: 10s}`))

		t.Run("per_connection closes 1008", func(t *testing.T) {
			r := g.authed(t, aliceToken)
			for i := 0; i < 10; i++ {
				r.sendText(fmt.Sprintf(`{"jsonrpc":"2.0","id":%d,"method":"ping"}`, i))
				r.readText()
			}
			r.sendText(`{"jsonrpc":"2.0","id":11,"method":"ping"}`)
			r.expectClose(1008, "Rate limit exceeded", 3*time.Second)
		})
		t.Run("per_subject answers -31029 and keeps the connection", func(t *testing.T) {
			// bob: two connections share the subject's 15 messages.
			a := g.authed(t, bobToken)
			b := g.authed(t, bobToken)
			for i := 0; i < 8; i++ {
				a.sendText(fmt.Sprintf(`{"jsonrpc":"2.0","id":%d,"method":"ping"}`, i))
				a.readText()
			}
			for i := 0; i < 7; i++ {
				b.sendText(fmt.Sprintf(`{"jsonrpc":"2.0","id":%d,"method":"ping"}`, i))
				b.readText()
			}
			b.sendText(`{"jsonrpc":"2.0","method":"notifications/progress"}`) // dropped, no answer
			b.sendText(`{"jsonrpc":"2.0","id":"over","method":"ping"}`)
			got := b.readText()
			var resp struct {
				ID    string
				Error struct {
					Code int
					Data struct {
						RetryAfterMS int64 `json:"retry_after_ms"`
					}
				}
			}
			must(t, json.Unmarshal([]byte(got), &resp))
			if resp.ID != "over" || resp.Error.Code != -31029 || resp.Error.Data.RetryAfterMS <= 0 || resp.Error.Data.RetryAfterMS > 20000 {
				t.Fatalf("got %s", got)
			}
			// A different subject is unaffected.
			c := g.authed(t, aliceToken)
			c.sendText(`{"jsonrpc":"2.0","id":1,"method":"ping"}`)
			c.readText()
		})
	})
}

func TestSlowConsumer(t *testing.T) {
	eachTransport(t, func(t *testing.T, tr wsraw.Transport) {
		g := startGatewayOn(t, tr, with("limits", `
  handshake_timeout: 2s
  write_buffer_bytes: 256KiB`), with("ratelimit", `
  per_connection: {messages: 100000, window: 10s}
  frames_per_connection: {count: 100000, window: 10s}
  per_subject: {messages: 100000, window: 10s}`))
		r := g.authed(t, aliceToken)
		msg := strings.Repeat("x", 60000)
		req := buildFrame(true, 0, 1, true, []byte(`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"message":"`+msg+`"}}}`))
		// Never read: the replies fill the socket buffers, then the gateway's.
		done := make(chan struct{})
		go func() {
			defer close(done)
			for i := 0; i < 2000; i++ {
				_ = r.c.SetWriteDeadline(time.Now().Add(5 * time.Second))
				if _, err := r.c.Write(req); err != nil {
					return
				}
			}
		}()
		deadline := time.Now().Add(30 * time.Second)
		for g.Metric(t, `gateway_messages_rejected_total{reason="slow_consumer"}`) < 1 {
			if time.Now().After(deadline) {
				t.Fatalf("slow reader never cut; logs:\n%s", wsraw.Truncate(g.Logs(), 3000))
			}
			time.Sleep(100 * time.Millisecond)
		}
		<-done
		// A reader that never reads is cut 5 s (slowGrace) after the close frame
		// was queued behind its backlog.
		for deadline := time.Now().Add(8 * time.Second); g.Metric(t, `gateway_closes_total{code="1008"}`) < 1; time.Sleep(100 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatal("slow consumer close not counted as 1008")
			}
		}
		if !g.waitLog("Slow consumer", 3*time.Second) {
			t.Fatal("no log line for the slow consumer")
		}
	})
}

func TestIdleTimeout(t *testing.T) {
	eachTransport(t, func(t *testing.T, tr wsraw.Transport) {
		g := startGatewayOn(t, tr, with("limits", `
  handshake_timeout: 2s
  ping_interval: 300ms
  idle_timeout: 1s`))
		r := g.authed(t, aliceToken)
		start := time.Now()
		// Do not answer pings: the connection is closed at idle_timeout.
		sawPing := false
		for {
			f, err := r.readFrame(5 * time.Second)
			if err != nil {
				break
			}
			if f.op == 9 {
				sawPing = true
			}
			if f.op == 8 {
				break
			}
		}
		el := time.Since(start)
		if !sawPing || el < 900*time.Millisecond || el > 2*time.Second {
			t.Fatalf("ping seen %v, closed after %v", sawPing, el)
		}
		// A client that answers pings stays.
		r2 := g.authed(t, aliceToken)
		end := time.Now().Add(2500 * time.Millisecond)
		for time.Now().Before(end) {
			f, err := r2.readFrame(time.Until(end))
			if err != nil {
				break
			}
			if f.op == 9 {
				r2.write(buildFrame(true, 0, 10, true, f.payload))
			}
			if f.op == 8 {
				t.Fatal("closed although it answered pings")
			}
		}
		r2.sendText(`{"jsonrpc":"2.0","id":1,"method":"ping"}`)
		r2.readText()
	})
}
