package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mcpgate/gateway/conformance/wsraw"
)

// everything returns the path of server-everything's entry point, pinned in
// test/peers.
func everything(t *testing.T) string {
	t.Helper()
	p, _ := filepath.Abs("../test/peers/node_modules/@modelcontextprotocol/server-everything/dist/index.js")
	if _, err := os.Stat(p); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("test/peers/node_modules missing: run scripts/deps.sh")
		}
		t.Skip("test/peers/node_modules missing")
	}
	return p
}

// startEverythingHTTP runs server-everything's Streamable HTTP transport.
// A port FreePort found free can be taken before node binds it (node then
// exits): it starts again on another port, three times in all.
func startEverythingHTTP(t *testing.T) string {
	entry := everything(t)
	for attempt := 1; ; attempt++ {
		port := wsraw.FreePort(t)
		cmd := exec.Command("node", entry, "streamableHttp")
		cmd.Env = append(os.Environ(), fmt.Sprintf("PORT=%d", port))
		var out strings.Builder // read only once node has exited
		cmd.Stdout, cmd.Stderr = &out, &out
		must(t, cmd.Start())
		exited := make(chan struct{})
		go func() { _ = cmd.Wait(); close(exited) }()
		t.Cleanup(func() { _ = cmd.Process.Kill(); <-exited })
		url := fmt.Sprintf("http://127.0.0.1:%d/mcp", port)
		if waitHTTP(url, exited, 60*time.Second) { // node's start is slow on a loaded machine
			return url
		}
		_ = cmd.Process.Kill()
		<-exited
		if o := out.String(); attempt < 3 && (strings.Contains(o, "EADDRINUSE") || strings.Contains(o, "already in use")) {
			t.Logf("server-everything: port %d in use, trying another", port)
			continue
		}
		t.Fatalf("server-everything (streamableHttp) did not start:\n%s", wsraw.Truncate(out.String(), 2000))
	}
}

// waitHTTP waits until url answers, the process ends (exited) or timeout
// passes; it reports whether url answered.
func waitHTTP(url string, exited <-chan struct{}, timeout time.Duration) bool {
	for deadline := time.Now().Add(timeout); time.Now().Before(deadline); {
		if resp, err := http.Get(url); err == nil {
			resp.Body.Close()
			return true
		}
		select {
		case <-exited:
			return false
		case <-time.After(100 * time.Millisecond):
		}
	}
	return false
}

func upstreamRoutes(t *testing.T, httpURL string) option {
	entry := everything(t)
	return func(c map[string]string) {
		c["upstreams"] = fmt.Sprintf(`
  - {name: demo, type: builtin}
  - name: everything
    type: stdio
    command: ["node", %q, "stdio"]
    min_idle: 1
    max: 8
  - name: remote
    type: http
    urls: [%q]`, entry, httpURL)
		c["routes"] = `
  - {path: /mcp, upstream: demo}
  - {path: /stdio, upstream: everything}
  - {path: /http, upstream: remote}`
	}
}

// The MCP TypeScript SDK client, through the gateway, to server-everything
// over stdio and over Streamable HTTP: initialize, tools/list, tools/call
// echo, a long-running tool with progress notifications, a resource read.
func TestSDKThroughUpstreams(t *testing.T) {
	g := startGateway(t, upstreamRoutes(t, startEverythingHTTP(t)))
	for _, path := range []string{"/stdio", "/http"} {
		t.Run(path, func(t *testing.T) {
			out := runNode(t, "sdk-client.mjs", g.URL(path), aliceToken, "full")
			for _, step := range []string{`"step":"progress"`, `"step":"resources/read"`, "Echo: sdk"} {
				if !strings.Contains(out, step) {
					t.Fatalf("step %s missing:\n%s", step, out)
				}
			}
		})
	}
}

// Two concurrent clients run long operations with the same progress token
// on a stdio upstream: each sees only its own notifications.
func TestNotificationsNeverCross(t *testing.T) {
	g := startGateway(t, upstreamRoutes(t, startEverythingHTTP(t)))
	var wg sync.WaitGroup
	for i, tok := range []string{aliceToken, bobToken} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := dialRaw(t, g.Addr, "/stdio")
			r.sendText(`{"type":"auth","token":"` + tok + `"}`)
			r.readText()
			r.sendText(`{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"x","version":"1"}}}`)
			r.readText()
			r.sendText(`{"jsonrpc":"2.0","method":"notifications/initialized"}`)
			steps := 3 + i
			r.sendText(fmt.Sprintf(`{"jsonrpc":"2.0","id":"long","method":"tools/call","params":{"name":"trigger-long-running-operation","arguments":{"duration":1,"steps":%d},"_meta":{"progressToken":"same"}}}`, steps))
			progress := 0
			for {
				msg := r.readText()
				if strings.Contains(msg, `"notifications/progress"`) {
					if !strings.Contains(msg, fmt.Sprintf(`"total":%d`, steps)) {
						t.Errorf("client %d got another client's progress: %s", i, msg)
					}
					progress++
					continue
				}
				if strings.Contains(msg, `"id":"long"`) {
					break
				}
			}
			if progress != steps {
				t.Errorf("client %d: %d progress notifications, want %d", i, progress, steps)
			}
		}()
	}
	wg.Wait()
}

// 50 connections send stateless (2026-07-28) requests over a shared pool of
// 2 stdio workers; each gets its own ids back.
func TestStatelessOverSharedPool(t *testing.T) {
	entry := everything(t)
	g := startGateway(t, func(c map[string]string) {
		c["upstreams"] = fmt.Sprintf(`
  - name: everything
    type: stdio
    command: ["node", %q, "stdio"]
    min_idle: 0
    max: 2`, entry)
		c["routes"] = `
  - {path: /mcp, upstream: everything}`
	}, with("limits", `
  handshake_timeout: 5s
  max_connections_per_ip: 1000`), with("ratelimit", `
  handshakes_per_ip: {count: 1000, window: 10s}`))
	var wg sync.WaitGroup
	for i := 0; i < 50; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := dialRaw(t, g.Addr, "/mcp")
			r.sendText(`{"type":"auth","token":"` + aliceToken + `"}`)
			r.readText()
			for j, id := range []string{fmt.Sprintf(`"c%d"`, i), fmt.Sprint(i * 1000), fmt.Sprintf(`%d.50`, i)} {
				r.sendText(fmt.Sprintf(`{"jsonrpc":"2.0","id":%s,"method":"tools/call","params":{"name":"echo","arguments":{"message":"m%d-%d"},"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}`, id, i, j))
				got := r.readText()
				var resp struct{ ID json.RawMessage }
				_ = json.Unmarshal([]byte(got), &resp)
				if string(resp.ID) != id || !strings.Contains(got, fmt.Sprintf("Echo: m%d-%d", i, j)) {
					t.Errorf("conn %d id %s: %s", i, id, got)
				}
			}
		}()
	}
	wg.Wait()
}
