package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mcpgate/gateway/conformance/wsraw"
)

// Issue 14 item 5 end to end (SPEC 10), on the four transports: every
// message of a JSON-RPC batch counts against per_connection and per_subject
// as if it came alone; a batch longer than limits.max_batch gets one
// -32600; and a batch refused whole (per_subject, drain, busy upstream) gets
// an answer for each of its requests.

// requestBatch is a batch of n ping requests with ids first..first+n-1,
// plus the notifications given (which count, and are answered by nothing).
func requestBatch(first, n int, notifications ...string) string {
	parts := make([]string, 0, n+len(notifications))
	for i := 0; i < n; i++ {
		parts = append(parts, fmt.Sprintf(`{"jsonrpc":"2.0","id":%d,"method":"ping"}`, first+i))
	}
	for _, m := range notifications {
		parts = append(parts, `{"jsonrpc":"2.0","method":"`+m+`"}`)
	}
	return "[" + strings.Join(parts, ",") + "]"
}

type batchAnswer struct {
	ID     json.RawMessage `json:"id"`
	Result json.RawMessage `json:"result"`
	Error  *struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
		Data    struct {
			RetryAfterMS int64 `json:"retry_after_ms"`
			MaxBatch     int   `json:"max_batch"`
		} `json:"data"`
	} `json:"error"`
}

// answers decodes a batch answer and checks that it answers ids
// first..first+n-1, in order, each with error code (0: a result).
func answers(t *testing.T, got string, first, n, code int) []batchAnswer {
	t.Helper()
	var as []batchAnswer
	if err := json.Unmarshal([]byte(got), &as); err != nil || len(as) != n {
		t.Fatalf("want an array of %d answers, got %s (%v)", n, wsraw.Truncate(got, 400), err)
	}
	for i, a := range as {
		if string(a.ID) != fmt.Sprint(first+i) {
			t.Fatalf("answer %d has id %s, want %d: %s", i, a.ID, first+i, wsraw.Truncate(got, 400))
		}
		switch {
		case code == 0 && (a.Error != nil || string(a.Result) != "{}"):
			t.Fatalf("answer %d: want a result, got %s", i, wsraw.Truncate(got, 400))
		case code != 0 && (a.Error == nil || a.Error.Code != code):
			t.Fatalf("answer %d: want error %d, got %s", i, code, wsraw.Truncate(got, 400))
		case code != 0 && code != -32600 && a.Error.Data.RetryAfterMS <= 0:
			t.Fatalf("answer %d: no data.retry_after_ms: %s", i, wsraw.Truncate(got, 400))
		}
	}
	return as
}

// A batch of 17 (default max_batch 16) gets one -32600 with id null and is
// counted nowhere else; 16 go through. per_subject counts each request: a
// batch of 5 over the limit gets five -31029, each with retry_after_ms.
func TestBatchSubjectLimitAndMaxBatch(t *testing.T) {
	eachTransport(t, func(t *testing.T, tr wsraw.Transport) {
		g := startGatewayOn(t, tr, with("ratelimit", `
  per_subject: {messages: 21, window: 60s}`))
		r := g.authed(t, aliceToken)

		r.sendText(requestBatch(1, 17))
		var one batchAnswer
		got := r.readText()
		if json.Unmarshal([]byte(got), &one) != nil || string(one.ID) != "null" || one.Error == nil ||
			one.Error.Code != -32600 || one.Error.Message != "Invalid Request" || one.Error.Data.MaxBatch != 16 {
			t.Fatalf("batch of 17: %s", got)
		}
		if v := g.Metric(t, `gateway_messages_rejected_total{reason="batch_too_long"}`); v != 1 {
			t.Fatalf("batch_too_long counted %v times", v)
		}
		r.sendText(requestBatch(100, 16)) // 16 of 21
		answers(t, r.readText(), 100, 16, 0)
		r.sendText(requestBatch(200, 5)) // 21 of 21
		answers(t, r.readText(), 200, 5, 0)
		r.sendText(requestBatch(300, 5, "notifications/progress"))
		for _, a := range answers(t, r.readText(), 300, 5, -31029) {
			if a.Error.Message != "Rate limit exceeded" || a.Error.Data.RetryAfterMS > 120000 {
				t.Fatalf("over per_subject: %+v", a.Error)
			}
		}
		// A batch of notifications only is dropped without an answer, as
		// a notification is; the connection stays.
		r.sendText(`[{"jsonrpc":"2.0","method":"notifications/progress"}]`)
		r.sendText(`{"jsonrpc":"2.0","id":"single","method":"ping"}`)
		if got := r.readText(); !strings.Contains(got, `"id":"single","error":{"code":-31029`) {
			t.Fatalf("single request over per_subject: %s", got)
		}
		// Another subject is not affected.
		b := g.authed(t, bobToken)
		b.sendText(requestBatch(1, 16))
		answers(t, b.readText(), 1, 16, 0)
	})
}

// per_connection counts each message of a batch: batches of 5 against a
// limit of 10 get 10 answers, then close 1008; a batch of 200 (max_batch
// raised to 256) is refused whole with close 1008 and nothing answered.
// (Before: five batches of 200 got 1,000 answers.)
func TestBatchPerConnectionLimit(t *testing.T) {
	eachTransport(t, func(t *testing.T, tr wsraw.Transport) {
		g := startGatewayOn(t, tr, with("ratelimit", `
  per_connection: {messages: 10, window: 60s}
  per_subject: {messages: 100000, window: 60s}`), with("limits", `
  handshake_timeout: 1s
  idle_timeout: 60s
  ping_interval: 20s
  max_batch: 256`))
		r := g.authed(t, aliceToken)
		r.sendText(requestBatch(1, 5))
		answers(t, r.readText(), 1, 5, 0)
		r.sendText(requestBatch(6, 5))
		answers(t, r.readText(), 6, 5, 0)
		r.sendText(requestBatch(11, 5))
		r.expectClose(1008, "Rate limit exceeded", 3*time.Second)

		r = g.authed(t, aliceToken)
		r.sendText(requestBatch(1, 200))
		r.expectClose(1008, "Rate limit exceeded", 3*time.Second)
		if v := g.Metric(t, `gateway_ratelimit_decisions_total{decision="deny",limiter="connection"}`); v != 2 {
			t.Fatalf("per_connection denials: %v, want 2", v)
		}
	})
}

// While draining, each request of a batch gets -31000 "Reconnect"; the
// request in flight is answered, then close 1001.
func TestBatchDuringDrain(t *testing.T) {
	eachTransport(t, func(t *testing.T, tr wsraw.Transport) {
		g := startGatewayOn(t, tr, with("drain_timeout", "5s"), shUpstream(t, 2))
		idle := g.authed(t, aliceToken)
		busy := shSession(t, g, bobToken)
		busy.sendText(`{"jsonrpc":"2.0","id":"slow","method":"tools/call","params":{"name":"slow","arguments":{}}}`)
		if got := busy.readText(); !strings.Contains(got, "slow started") {
			t.Fatalf("before the answer to slow: %s", got)
		}
		must(t, g.Signal(syscall.SIGTERM))
		// Nothing in flight: closed at once; the drain is under way.
		idle.expectClose(1001, "Going away", 10*time.Second)
		busy.sendText(requestBatch(1, 5, "notifications/progress"))
		var batch, slow string
		for batch == "" || slow == "" {
			got := busy.readText()
			switch {
			case strings.HasPrefix(got, "["):
				batch = got
			case strings.Contains(got, `"id":"slow"`):
				slow = got
			default:
				t.Fatalf("while draining: %s", got)
			}
		}
		for _, a := range answers(t, batch, 1, 5, -31000) {
			if a.Error.Message != "Reconnect" {
				t.Fatalf("while draining: %s", batch)
			}
		}
		if !strings.Contains(slow, "slow done") {
			t.Fatalf("request in flight at SIGTERM: %s", slow)
		}
		busy.expectClose(1001, "Going away", 10*time.Second)
	})
}

// A batch that the upstream's queue cannot take (its worker asleep, its
// stdin pipe and queue full) gets -31503 "Upstream unavailable" for each
// request; the connection stays.
func TestBatchToBusyUpstream(t *testing.T) {
	eachTransport(t, func(t *testing.T, tr wsraw.Transport) {
		g := startGatewayOn(t, tr, shUpstreamQueue(t, 8))
		r := shSession(t, g, aliceToken)
		r.sendText(`{"jsonrpc":"2.0","id":"slow","method":"tools/call","params":{"name":"slow","arguments":{}}}`)
		if got := r.readText(); !strings.Contains(got, "slow started") {
			t.Fatalf("before the answer to slow: %s", got)
		}
		// The worker sleeps for 2 s and reads nothing: the first filler
		// fills its stdin pipe (64 KiB) and holds the writer, 8 more fill
		// the queue, the rest are refused (notifications: no answer).
		filler := `{"jsonrpc":"2.0","method":"notifications/filler","params":{"pad":"` + strings.Repeat("f", 100<<10) + `"}}`
		for i := 0; i < 11; i++ {
			r.sendText(filler)
		}
		r.sendText(requestBatch(1, 5, "notifications/progress"))
		got := r.readText()
		for _, a := range answers(t, got, 1, 5, -31503) {
			if a.Error.Message != "Upstream unavailable" {
				t.Fatalf("busy upstream: %s", got)
			}
		}
		if v := g.Metric(t, `gateway_upstream_errors_total{kind="busy",upstream="sh"}`); v < 2 {
			t.Fatalf("busy counted %v times, want the refused fillers and the batch", v)
		}
		if got := r.readText(); !strings.Contains(got, `"id":"slow"`) || !strings.Contains(got, "slow done") {
			t.Fatalf("after the batch: %s", got)
		}
	})
}

// shUpstreamQueue is shUpstream with one worker whose queue holds depth
// messages.
func shUpstreamQueue(t *testing.T, depth int) option {
	script := filepath.Join(t.TempDir(), "worker.sh")
	must(t, os.WriteFile(script, []byte(shWorker), 0o700))
	return func(c map[string]string) {
		c["upstreams"] = fmt.Sprintf(`
  - {name: demo, type: builtin}
  - name: sh
    type: stdio
    command: [%q]
    min_idle: 0
    max: 2
    queue_depth: %d`, script, depth)
		c["routes"] = `
  - {path: /mcp, upstream: demo}
  - {path: /sh, upstream: sh}`
	}
}
