package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestBuildInfoAndUnknownEnv (SPEC 12): a running gateway exports
// gateway_build_info{version,revision,goversion} 1, and a GATEWAY_*
// variable that names no setting is warned about at start (by name) while
// the gateway serves on.
func TestBuildInfoAndUnknownEnv(t *testing.T) {
	g := startGatewayCmd(t, func(bin string, args []string) (string, []string) {
		return "env", append([]string{"GATEWAY_LIMTS_MAX_MESSAGE_BYTES=1", bin}, args...)
	})
	resp, err := http.Get("http://" + g.Admin + "/metrics")
	must(t, err)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	re := regexp.MustCompile(`(?m)^gateway_build_info\{goversion="go[^"]+",revision="[^"]+",version="[^"]+"\} 1$`)
	if !re.Match(body) {
		t.Errorf("no gateway_build_info series in /metrics:\n%s", grepLines(string(body), "build_info"))
	}
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(g.Logs(), "GATEWAY_LIMTS_MAX_MESSAGE_BYTES") {
		if time.Now().After(deadline) {
			t.Fatalf("no warning naming the misspelt variable; logs:\n%s", g.Logs())
		}
		time.Sleep(50 * time.Millisecond)
	}
	c, err := g.DialAuthed(aliceToken)
	must(t, err)
	c.Close()
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// TestLogsAllThroughSlog (SPEC 12): with -log-format json every line the
// process writes, on stdout or stderr, from start to drain and exit, is
// one JSON object: gnet's own lines come through slog too (component
// "gnet"), not in its zap format.
func TestLogsAllThroughSlog(t *testing.T) {
	g := startGatewayCmd(t, func(bin string, args []string) (string, []string) {
		return bin, append(args, "-log-format", "json", "-log-level", "debug")
	})
	c, err := g.DialAuthed(aliceToken)
	must(t, err)
	c.Close()
	must(t, g.Signal(syscall.SIGTERM))
	select {
	case <-g.Exited():
	case <-time.After(20 * time.Second):
		t.Fatal("gateway did not exit after SIGTERM")
	}
	gnet := 0
	opened, closed := map[string]bool{}, map[string]bool{}
	hex16 := regexp.MustCompile(`^[0-9a-f]{16}$`)
	for _, line := range strings.Split(g.Logs(), "\n") {
		if strings.TrimSpace(line) == "" {
			continue
		}
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Errorf("a line that is not a JSON log record: %q", line)
			continue
		}
		if rec["component"] == "gnet" {
			gnet++
		}
		// One session id format (SPEC 12): the open and the close line
		// name the connection as auth_ok does, 16 hex digits.
		if id, _ := rec["session"].(string); rec["msg"] == "conn open" || rec["msg"] == "conn close" {
			if !hex16.MatchString(id) {
				t.Errorf("%s line with session %v, want 16 hex digits: %s", rec["msg"], rec["session"], line)
			}
			if rec["msg"] == "conn open" {
				opened[id] = true
			} else {
				closed[id] = true
			}
		}
	}
	for id := range opened {
		if !closed[id] {
			t.Errorf("session %s opened and never closed in the log", id)
		}
	}
	if len(opened) == 0 {
		t.Errorf("no conn open line; logs:\n%s", g.Logs())
	}
	if gnet == 0 {
		t.Errorf("no gnet line came through slog at debug level; logs:\n%s", g.Logs())
	}
}

// TestRefusalReasonsLogged (SPEC 12): every refused request's close line
// says why, by a fixed phrase (never token bytes), next to its status.
func TestRefusalReasonsLogged(t *testing.T) {
	g := startGatewayCmd(t, func(bin string, args []string) (string, []string) {
		return bin, append(args, "-log-format", "json")
	})
	cases := []struct {
		path   string
		extra  []string
		status int
		reason string
	}{
		{"/nowhere", nil, 404, "no route for the path"},
		{"/mcp", []string{"Origin: https://evil.example"}, 403, "origin not allowed"},
		{"/mcp", []string{"Origin: https://app.example.com", "Origin: https://app.example.com"}, 403, "more than one Origin"},
		{"/mcp", []string{"Authorization: Bearer wrong-token-secret"}, 401, "bearer: "},
	}
	for _, tc := range cases {
		r := g.raw(t, tc.path, tc.extra...)
		if r.resp.StatusCode != tc.status {
			t.Fatalf("%s %v: got %s, want %d", tc.path, tc.extra, r.resp.Status, tc.status)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		var missing []string
		logs := g.Logs()
		for _, tc := range cases {
			if !hasCloseLine(logs, tc.status, tc.reason) {
				missing = append(missing, fmt.Sprintf("%d %q", tc.status, tc.reason))
			}
		}
		if len(missing) == 0 {
			if strings.Contains(logs, "wrong-token-secret") {
				t.Fatal("a refused token reached the log")
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("close lines without their refusal reason: %v\n%s", missing, logs)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func hasCloseLine(logs string, status int, reason string) bool {
	for _, line := range strings.Split(logs, "\n") {
		var rec map[string]any
		if json.Unmarshal([]byte(line), &rec) != nil || rec["msg"] != "conn close" {
			continue
		}
		st, _ := rec["http_status"].(float64)
		why, _ := rec["refusal"].(string)
		if int(st) == status && strings.HasPrefix(why, reason) {
			return true
		}
	}
	return false
}

// TestSubjectDenialsLogSampled (SPEC 12): per-subject denials are logged,
// naming the subject, at most once a second however many there are; the
// next line counts the ones held back since the last.
func TestSubjectDenialsLogSampled(t *testing.T) {
	g := startGatewayCmd(t, func(bin string, args []string) (string, []string) {
		return bin, append(args, "-log-format", "json")
	}, with("ratelimit", `
  per_subject: {messages: 5, window: 60s}
  per_connection: {messages: 100000, window: 1s}
  frames_per_connection: {count: 100000, window: 1s}`))
	r := g.authed(t, aliceToken)
	const sent = 400 // 5 pass, 395 denied
	ping := func(i int) {
		r.sendText(fmt.Sprintf(`{"jsonrpc":"2.0","id":%d,"method":"ping"}`, i))
		r.readText()
	}
	start := time.Now()
	for i := range sent {
		ping(i)
	}
	took := time.Since(start)
	// One more denial once the sampler's second has passed: its line
	// accounts for every denial held back since the first line.
	time.Sleep(denialLogEvery + 200*time.Millisecond)
	ping(sent)

	var recs []map[string]any
	deadline := time.Now().Add(5 * time.Second)
	for len(recs) < 2 && time.Now().Before(deadline) {
		recs = recs[:0]
		for _, line := range strings.Split(g.Logs(), "\n") {
			var rec map[string]any
			if json.Unmarshal([]byte(line), &rec) == nil && rec["msg"] == "rate limited" {
				recs = append(recs, rec)
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	if len(recs) < 2 {
		t.Fatalf("%d denial lines, want 2; logs:\n%s", len(recs), g.Logs())
	}
	if max := int(took/denialLogEvery) + 2; len(recs) > max {
		t.Errorf("%d denial lines for 396 denials in %v: want at most %d (one a second)", len(recs), took+denialLogEvery, max)
	}
	var counted int64
	for _, rec := range recs {
		if rec["subject"] != "alice" || rec["limiter"] != "subject" {
			t.Fatalf("denial line without its subject: %v", rec)
		}
		held, _ := rec["not_logged_since_last"].(float64)
		counted += 1 + int64(held)
	}
	if counted != sent-5+1 {
		t.Errorf("the %d lines account for %d denials, want %d", len(recs), counted, sent-5+1)
	}
}

// denialLogEvery is the gateway's per-subject denial log interval
// (reactor.denialLogEvery).
const denialLogEvery = time.Second

// TestRequestMetrics (SPEC 12): gateway_requests_total counts client
// messages by method from a fixed set (anything else is other, a batch is
// batch), and the builtin upstream is in gateway_upstream_requests_total
// like every other upstream, inline answers included.
func TestRequestMetrics(t *testing.T) {
	g := startGateway(t)
	r := g.authed(t, aliceToken)
	before := g.Metric(t, `gateway_upstream_requests_total{upstream="demo"}`)
	r.sendText(`{"jsonrpc":"2.0","id":1,"method":"ping"}`)
	r.readText()
	r.sendText(`{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"echo","arguments":{"message":"m"}}}`)
	r.readText()
	r.sendText(`{"jsonrpc":"2.0","id":3,"method":"x-made-up/method"}`)
	r.readText()
	r.sendText(`[{"jsonrpc":"2.0","id":4,"method":"ping"},{"jsonrpc":"2.0","id":5,"method":"ping"}]`)
	r.readText()
	for sample, want := range map[string]float64{
		`gateway_requests_total{method="ping"}`:       1,
		`gateway_requests_total{method="tools/call"}`: 1,
		`gateway_requests_total{method="other"}`:      1,
		`gateway_requests_total{method="batch"}`:      1,
	} {
		if got := g.Metric(t, sample); got != want {
			t.Errorf("%s = %v, want %v", sample, got, want)
		}
	}
	if got := g.Metric(t, `gateway_upstream_requests_total{upstream="demo"}`) - before; got != 4 {
		t.Errorf("the builtin upstream counted %v messages, want 4", got)
	}
	if got := g.Metric(t, `gateway_requests_total{method="x-made-up/method"}`); got != 0 {
		t.Errorf("a client's method became a label")
	}
}
