package e2e

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// nodeClients is the folder of the npm-pinned real clients.
func nodeClients(t *testing.T) string {
	t.Helper()
	dir, _ := filepath.Abs("../test/node")
	if _, err := os.Stat(filepath.Join(dir, "node_modules")); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("test/node/node_modules missing: run scripts/deps.sh (npm ci --prefix test/node)")
		}
		t.Skip("test/node/node_modules missing: run npm ci --prefix test/node")
	}
	return dir
}

func runNode(t *testing.T, script string, args ...string) string {
	t.Helper()
	dir := nodeClients(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "node", append([]string{filepath.Join(dir, script)}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("node %s: %v\n%s", script, err, out)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if lines[len(lines)-1] != "OK" {
		t.Fatalf("node %s did not end with OK:\n%s", script, out)
	}
	return string(out)
}

func TestNodeWsClient(t *testing.T) {
	g := startGateway(t)
	out := runNode(t, "ws-client.mjs", g.URL("/mcp"), aliceToken)
	if !strings.Contains(out, "auth_ok") {
		t.Fatalf("no auth_ok step:\n%s", out)
	}
}

func TestMCPTypeScriptSDKClient(t *testing.T) {
	g := startGateway(t)
	out := runNode(t, "sdk-client.mjs", g.URL("/mcp"), bobToken)
	for _, step := range []string{"initialize", "tools/list", "Echo: sdk"} {
		if !strings.Contains(out, step) {
			t.Fatalf("step %q missing:\n%s", step, out)
		}
	}
}

// A Go client (coder/websocket): subprotocol, auth, initialize, tools/call.
func TestGoClient(t *testing.T) {
	g := startGateway(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, resp, err := websocket.Dial(ctx, g.URL("/mcp"), &websocket.DialOptions{Subprotocols: []string{"mcp"}})
	must(t, err)
	defer c.CloseNow()
	if c.Subprotocol() != "mcp" || resp.StatusCode != 101 {
		t.Fatalf("subprotocol %q status %d", c.Subprotocol(), resp.StatusCode)
	}
	call := func(msg string) map[string]any {
		t.Helper()
		must(t, c.Write(ctx, websocket.MessageText, []byte(msg)))
		typ, data, err := c.Read(ctx)
		must(t, err)
		if typ != websocket.MessageText {
			t.Fatalf("message type %v", typ)
		}
		var v map[string]any
		must(t, json.Unmarshal(data, &v))
		return v
	}
	if v := call(`{"type":"auth","token":"` + aliceToken + `"}`); v["type"] != "auth_ok" || v["session"] == "" {
		t.Fatalf("auth: %v", v)
	}
	v := call(`{"jsonrpc":"2.0","id":"init","method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"go","version":"1"}}}`)
	if v["id"] != "init" || v["result"].(map[string]any)["protocolVersion"] != "2025-06-18" {
		t.Fatalf("initialize: %v", v)
	}
	must(t, c.Write(ctx, websocket.MessageText, []byte(`{"jsonrpc":"2.0","method":"notifications/initialized"}`)))
	v = call(`{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"get-sum","arguments":{"a":2,"b":40}}}`)
	text := v["result"].(map[string]any)["content"].([]any)[0].(map[string]any)["text"]
	if v["id"] != float64(3) || text != "The sum of 2 and 40 is 42." {
		t.Fatalf("get-sum: %v", v)
	}
	// Stateless (2026-07-28) request on the same gateway: no initialize needed.
	v = call(`{"jsonrpc":"2.0","id":"d","method":"server/discover","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}`)
	if v["id"] != "d" || v["result"] == nil {
		t.Fatalf("server/discover: %v", v)
	}
	must(t, c.Close(websocket.StatusNormalClosure, "done"))
}
