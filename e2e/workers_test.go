package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mcpgate/gateway/conformance/wsraw"
)

// shWorker is a stdio MCP worker in sh: it answers initialize and ping;
// on tools/call "slow" it sends a notifications/message "slow started",
// then answers two seconds later; on any other tools/call it exits (dies
// holding the request).
const shWorker = `#!/bin/sh
while IFS= read -r line; do
  id=$(printf '%s\n' "$line" | sed -n 's/.*"id":\([^,}]*\).*/\1/p')
  case "$line" in
    *'"method":"initialize"'*) printf '{"jsonrpc":"2.0","id":%s,"result":{"protocolVersion":"2025-06-18","capabilities":{"tools":{}},"serverInfo":{"name":"sh","version":"1"}}}\n' "$id" ;;
    *'"method":"ping"'*) printf '{"jsonrpc":"2.0","id":%s,"result":{}}\n' "$id" ;;
    *'"name":"slow"'*) printf '{"jsonrpc":"2.0","method":"notifications/message","params":{"level":"info","data":"slow started"}}\n'; sleep 2; printf '{"jsonrpc":"2.0","id":%s,"result":{"content":[{"type":"text","text":"slow done"}]}}\n' "$id" ;;
    *'"method":"tools/call"'*) exit 3 ;;
  esac
done
`

// shInitialize opens an MCP session (session mode: a dedicated worker).
const shInitialize = `{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"e2e","version":"1"}}}`

// shUpstream routes /sh to a pool of at most max shWorkers, next to the
// builtin demo upstream on /mcp.
func shUpstream(t *testing.T, max int) option {
	script := filepath.Join(t.TempDir(), "worker.sh")
	must(t, os.WriteFile(script, []byte(shWorker), 0o700))
	return func(c map[string]string) {
		c["upstreams"] = fmt.Sprintf(`
  - {name: demo, type: builtin}
  - name: sh
    type: stdio
    command: [%q]
    min_idle: 0
    max: %d`, script, max)
		c["routes"] = `
  - {path: /mcp, upstream: demo}
  - {path: /sh, upstream: sh}`
	}
}

// shSession authenticates on /sh and opens a session.
func shSession(t *testing.T, g *gateway, token string) *raw {
	t.Helper()
	r := authOver(t, g.raw(t, "/sh"), token)
	r.sendText(shInitialize)
	if got := r.readText(); !strings.Contains(got, `"id":0,`) || !strings.Contains(got, `"serverInfo"`) {
		t.Fatalf("initialize: %s", got)
	}
	return r
}

// SPEC 4.4 over every transport: no worker available (the pool at max)
// closes 1013; the session's worker dies: JSON-RPC -32603 for the request
// in flight, then close 1011.
func TestWorkerFailures(t *testing.T) {
	eachTransport(t, func(t *testing.T, tr wsraw.Transport) {
		g := startGatewayOn(t, tr, shUpstream(t, 1))
		a := shSession(t, g, aliceToken)
		// The only worker is a's for its session: another session finds none.
		b := authOver(t, g.raw(t, "/sh"), bobToken)
		b.sendText(shInitialize)
		b.expectClose(1013, "No worker available", 5*time.Second)

		// a's worker dies holding a request.
		a.sendText(`{"jsonrpc":"2.0","id":"dies","method":"tools/call","params":{"name":"x","arguments":{}}}`)
		got := a.readText()
		var resp struct {
			ID    string
			Error struct{ Code int }
		}
		must(t, json.Unmarshal([]byte(got), &resp))
		if resp.ID != "dies" || resp.Error.Code != -32603 {
			t.Fatalf("request in flight when the worker died: %s", got)
		}
		a.expectClose(1011, "Upstream worker died", 5*time.Second)
	})
}
