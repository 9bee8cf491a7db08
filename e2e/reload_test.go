package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/mcpgate/gateway/conformance/wsraw"
)

// caller sends a ping every interval on one connection and counts what
// comes back: every request is answered or counted as lost, and a read or
// write error is a dropped connection.
type caller struct {
	sent, answered, dropped atomic.Int64
}

func (cl *caller) run(ctx context.Context, c *wsraw.Conn, interval time.Duration) {
	defer c.Close()
	for id := 1; ctx.Err() == nil; id++ {
		req := fmt.Sprintf(`{"jsonrpc":"2.0","id":%d,"method":"ping"}`, id)
		if err := c.Write(wsraw.Frame(true, 0, wsraw.OpText, []byte(req))); err != nil {
			cl.dropped.Add(1)
			return
		}
		cl.sent.Add(1)
		f, err := c.ReadFrame(10 * time.Second)
		if err != nil || f.Op != wsraw.OpText {
			cl.dropped.Add(1)
			return
		}
		if string(f.Payload) == fmt.Sprintf(`{"jsonrpc":"2.0","id":%d,"result":{}}`, id) {
			cl.answered.Add(1)
		}
		select {
		case <-ctx.Done():
		case <-time.After(interval):
		}
	}
}

const carolToken = "carol-token-0123456789abcdefghij"

// TestReloadWithoutDrops (SPEC 12): 300 connections call throughout while
// the token file and the origins change and SIGHUP reloads them: no
// connection drops, every call is answered; new connections see the new
// tokens (carol in, bob out) and origins at once; a connection of the
// removed subject stays. An invalid file (by SIGHUP) changes nothing and is
// counted; POST /admin/reload names a change that needs a restart.
func TestReloadWithoutDrops(t *testing.T) {
	g := startFastGatewayOn(t, wsraw.WS, append(drainConfig(), with("log", `
  format: json
  level: info`))...)
	const n = 300
	conns := dialMany(t, n, func() (*wsraw.Conn, error) { return g.DialAuthed(aliceToken) })
	bobConn, err := g.DialAuthed(bobToken)
	must(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	callers := make([]*caller, n+1)
	var wg sync.WaitGroup
	for i := range callers {
		callers[i] = &caller{}
		c := bobConn
		if i < n {
			c = conns[i]
		}
		wg.Add(1)
		go func() { defer wg.Done(); callers[i].run(ctx, c, 200*time.Millisecond) }()
	}
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			cancel()
			wg.Wait()
		}
	}
	defer stop()
	time.Sleep(time.Second)

	reloads := func(result string) float64 {
		return g.Metric(t, fmt.Sprintf(`gateway_config_reloads_total{result=%q}`, result))
	}
	hup := func(result string) {
		t.Helper()
		before := reloads(result)
		must(t, g.Signal(syscall.SIGHUP))
		deadline := time.Now().Add(5 * time.Second)
		for reloads(result) == before {
			if time.Now().After(deadline) {
				t.Fatalf("no %s reload counted after SIGHUP; logs:\n%s", result, g.Logs())
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	cfgPath := filepath.Join(g.Dir, "gateway.yaml")
	orig, err := os.ReadFile(cfgPath)
	must(t, err)

	// 1. Tokens: carol added, bob removed; origins: a new one allowed.
	must(t, os.WriteFile(filepath.Join(g.Dir, "tokens.txt"),
		[]byte(sha(aliceToken)+" alice\n"+sha(carolToken)+" carol\n"), 0o600))
	must(t, os.WriteFile(cfgPath, []byte(strings.Replace(string(orig),
		`allowed: ["https://app.example.com"]`, `allowed: ["https://new.example.com"]`, 1)), 0o600))
	hup("ok")
	if c, err := g.DialAuthed(carolToken); err != nil {
		t.Fatalf("carol after the reload: %v", err)
	} else {
		c.Close()
	}
	if c, err := g.DialAuthed(bobToken); err == nil {
		c.Close()
		t.Fatal("bob's removed token still authenticates a new connection")
	}
	if r := g.raw(t, "/mcp", "Origin: https://new.example.com"); r.resp.StatusCode != 101 {
		t.Fatalf("the new origin after the reload: %s", r.resp.Status)
	}
	if r := g.raw(t, "/mcp", "Origin: https://app.example.com"); r.resp.StatusCode != 403 {
		t.Fatalf("the removed origin after the reload: %s", r.resp.Status)
	}

	// 2. An invalid file: refused, nothing changes.
	must(t, os.WriteFile(cfgPath, []byte(string(orig)+"\nno_such_setting: 1\n"), 0o600))
	hup("invalid")
	if c, err := g.DialAuthed(carolToken); err != nil {
		t.Fatalf("carol after a refused reload: %v", err)
	} else {
		c.Close()
	}

	// 3. By POST /admin/reload: a limit that applies at once, and one that
	// sized buffers at start (named, not applied).
	must(t, os.WriteFile(cfgPath, []byte(strings.Replace(string(orig), "idle_timeout: 60s",
		"idle_timeout: 61s\n  max_message_bytes: 2MiB", 1)), 0o600))
	resp, body := adminCall(t, g, "POST", "/admin/reload", adminToken)
	var res struct {
		Result          string
		Applied         []string
		RestartRequired []string `json:"restart_required"`
	}
	if resp.StatusCode != 200 || json.Unmarshal(body, &res) != nil || res.Result != "partial" ||
		strings.Join(res.RestartRequired, ",") != "limits.max_message_bytes" ||
		!strings.Contains(strings.Join(res.Applied, ","), "limits.idle_timeout") {
		t.Fatalf("POST /admin/reload: %s %s", resp.Status, body)
	}
	must(t, os.WriteFile(cfgPath, []byte(string(orig)+"\nbogus: [\n"), 0o600))
	if resp, body := adminCall(t, g, "POST", "/admin/reload", adminToken); resp.StatusCode != 422 || !strings.Contains(string(body), `"result":"invalid"`) {
		t.Fatalf("POST /admin/reload of a broken file: %s %s", resp.Status, body)
	}

	time.Sleep(500 * time.Millisecond)
	stop()
	var sent, answered, dropped int64
	for _, cl := range callers {
		sent += cl.sent.Load()
		answered += cl.answered.Load()
		dropped += cl.dropped.Load()
	}
	t.Logf("%d connections (bob's included): %d calls, %d answered, %d dropped", n+1, sent, answered, dropped)
	if dropped != 0 || answered != sent || sent < int64(n)*5 {
		t.Fatalf("reloads under load: %d calls, %d answered, %d connections dropped", sent, answered, dropped)
	}
	if !g.Alive() {
		t.Fatal("the gateway is gone after SIGHUP")
	}

	// 4. A rate limit lowered by SIGHUP holds for a connection opened
	// before it: its 4th message within the window closes it.
	existing, err := g.DialAuthed(aliceToken)
	must(t, err)
	defer existing.Close()
	must(t, os.WriteFile(cfgPath, []byte(strings.Replace(string(orig), "per_connection: {messages: 100000, window: 10s}",
		"per_connection: {messages: 3, window: 10s}", 1)), 0o600))
	hup("ok")
	for i := range 4 {
		must(t, existing.Write(wsraw.Frame(true, 0, wsraw.OpText, []byte(fmt.Sprintf(`{"jsonrpc":"2.0","id":%d,"method":"ping"}`, i)))))
	}
	var last wsraw.ServerFrame
	for range 4 {
		f, err := existing.ReadFrame(5 * time.Second)
		if err != nil {
			t.Fatalf("after the lowered limit: %v", err)
		}
		if last = f; f.Op == wsraw.OpClose {
			break
		}
	}
	if code, reason := wsraw.ParseClose(last.Payload); last.Op != wsraw.OpClose || code != 1008 || reason != "Rate limit exceeded" {
		t.Fatalf("4th message under a reloaded limit of 3: %s, want close 1008", last)
	}
}

// TestReloadRoutesAndUpstreams (SPEC 12): a reload that adds an upstream
// and points a route at it starts the upstream, serves new connections on
// the new route at once, and drains the connections still on the old one
// (-31000 to their requests, then 1001 once quiet) without dropping any
// request; the upstream no route uses any more is closed after them.
func TestReloadRoutesAndUpstreams(t *testing.T) {
	g := startGatewayCmd(t, nil, with("upstreams", `
  - {name: demo, type: builtin}`), with("routes", `
  - {path: /mcp, upstream: demo}`))
	must(t, os.WriteFile(filepath.Join(g.Dir, "worker.py"), []byte(traceWorker), 0o600))
	old := g.authed(t, aliceToken)
	old.sendText(`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"message":"a"}}}`)
	if got := old.readText(); !strings.Contains(got, "Echo: a") {
		t.Fatalf("builtin before the reload: %s", got)
	}

	cfgPath := filepath.Join(g.Dir, "gateway.yaml")
	orig, err := os.ReadFile(cfgPath)
	must(t, err)
	next := strings.Replace(string(orig), "- {name: demo, type: builtin}",
		"- {name: demo, type: builtin}\n  - {name: py, type: stdio, command: [\"python3\", \"worker.py\"], max: 2}", 1)
	next = strings.Replace(next, "- {path: /mcp, upstream: demo}", "- {path: /mcp, upstream: py}\n  - {path: /old, upstream: demo}", 1)
	must(t, os.WriteFile(cfgPath, []byte(next), 0o600))
	resp, body := adminCall(t, g, "POST", "/admin/reload", adminToken)
	if resp.StatusCode != 200 || !strings.Contains(string(body), `"routes"`) {
		t.Fatalf("reload: %s %s", resp.Status, body)
	}

	// New connections on /mcp reach the new upstream.
	fresh := g.authed(t, aliceToken)
	fresh.sendText(`{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"x","arguments":{},"_meta":{"k":"v"}}}`)
	if got := fresh.readText(); !strings.Contains(got, `"meta"`) {
		t.Fatalf("/mcp after the reload: %s, want the stdio worker's answer", got)
	}
	// The connection on the old route is drained: its requests are
	// answered (a result or -31000) and it closes 1001 once quiet.
	deadline := time.Now().Add(10 * time.Second)
	for id := 10; ; id++ {
		if time.Now().After(deadline) {
			t.Fatal("the connection on the replaced route was not drained")
		}
		old.sendText(fmt.Sprintf(`{"jsonrpc":"2.0","id":%d,"method":"ping"}`, id))
		got := old.readText()
		if strings.Contains(got, `"code":-31000`) {
			break
		}
		if got != fmt.Sprintf(`{"jsonrpc":"2.0","id":%d,"result":{}}`, id) {
			t.Fatalf("old route, request %d: %s", id, got)
		}
		time.Sleep(100 * time.Millisecond)
	}
	old.expectClose(1001, "", 10*time.Second)
	// demo still serves /old: a route uses it.
	o := authOver(t, g.raw(t, "/old"), aliceToken)

	// A second reload removes /old and demo: the connection on it is
	// drained, then demo is closed (retired).
	must(t, os.WriteFile(cfgPath, []byte(strings.Replace(strings.Replace(next, "\n  - {path: /old, upstream: demo}", "", 1),
		"- {name: demo, type: builtin}\n  ", "", 1)), 0o600))
	if resp, body := adminCall(t, g, "POST", "/admin/reload", adminToken); resp.StatusCode != 200 {
		t.Fatalf("second reload: %s %s", resp.Status, body)
	}
	if r := g.raw(t, "/old"); r.resp.StatusCode != 404 {
		t.Fatalf("/old after its removal: %s", r.resp.Status)
	}
	o.sendText(`{"jsonrpc":"2.0","id":99,"method":"ping"}`)
	if got := o.readText(); !strings.Contains(got, `"code":-31000`) && got != `{"jsonrpc":"2.0","id":99,"result":{}}` {
		t.Fatalf("/old while draining: %s", got)
	}
	o.expectClose(1001, "", 10*time.Second)
	for deadline := time.Now().Add(10 * time.Second); !strings.Contains(g.Logs(), `"upstream retired by reload","upstream":"demo"`); {
		if time.Now().After(deadline) {
			t.Fatalf("demo not closed after its last connection; logs:\n%s", g.Logs())
		}
		time.Sleep(50 * time.Millisecond)
	}
}
