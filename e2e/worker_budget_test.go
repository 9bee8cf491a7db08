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

// SPEC 10 worker budgets against the real `gateway serve`: a stdio worker's
// environment, and session-mode workers per subject.

// readTextWithin is readText with a longer wait (a node worker boots first).
func readTextWithin(t *testing.T, r *raw, d time.Duration) string {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		f, err := r.readFrame(time.Until(deadline))
		if err != nil {
			t.Fatalf("reading text: %v", err)
		}
		switch f.op {
		case 1:
			return string(f.payload)
		case 8:
			code, reason := wsraw.ParseClose(f.payload)
			t.Fatalf("expected text, got close %d %q", code, reason)
		}
	}
}

// A client of a stdio upstream asks server-everything for its environment
// (tool get-env), in session mode and in request mode: it holds the
// upstream's env and env_passthrough variables, and none of the gateway's
// other variables, though the gateway runs with a cloud secret.
func TestWorkerEnvironment(t *testing.T) {
	entry := everything(t)
	const secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
	wrap := func(bin string, args []string) (string, []string) {
		return "/usr/bin/env", append([]string{"AWS_SECRET_ACCESS_KEY=" + secret,
			"E2E_PASSED=passed-through", "E2E_NOT_NAMED=not-passed", bin}, args...)
	}
	g := startGatewayCmd(t, wrap, func(c map[string]string) {
		c["upstreams"] = fmt.Sprintf(`
  - name: everything
    type: stdio
    command: ["node", %q, "stdio"]
    min_idle: 1
    max: 2
    env: {MCP_API_TOKEN: from-config}
    env_passthrough: [PATH, E2E_PASSED]`, entry)
		c["routes"] = `
  - {path: /stdio, upstream: everything}`
	})
	want := map[string]string{"PATH": os.Getenv("PATH"), "E2E_PASSED": "passed-through", "MCP_API_TOKEN": "from-config"}
	getEnv := func(r *raw, meta string) map[string]string {
		r.sendText(`{"jsonrpc":"2.0","id":"env","method":"tools/call","params":{"name":"get-env","arguments":{}` + meta + `}}`)
		got := readTextWithin(t, r, 30*time.Second)
		for !strings.Contains(got, `"id":"env"`) { // notifications first (list_changed)
			got = readTextWithin(t, r, 30*time.Second)
		}
		var resp struct {
			ID     string
			Result struct{ Content []struct{ Text string } }
		}
		must(t, json.Unmarshal([]byte(got), &resp))
		if resp.ID != "env" || len(resp.Result.Content) != 1 {
			t.Fatalf("get-env: %s", wsraw.Truncate(got, 500))
		}
		var env map[string]string
		must(t, json.Unmarshal([]byte(resp.Result.Content[0].Text), &env))
		return env
	}
	check := func(mode string, env map[string]string) {
		t.Helper()
		if v, ok := env["AWS_SECRET_ACCESS_KEY"]; ok || strings.Contains(fmt.Sprint(env), secret) {
			t.Fatalf("%s: the worker sees the gateway's secret (%q)", mode, v)
		}
		if fmt.Sprint(env) != fmt.Sprint(want) {
			t.Fatalf("%s: the worker's environment:\n got %v\nwant %v", mode, env, want)
		}
	}

	s := authOver(t, g.raw(t, "/stdio"), aliceToken)
	s.sendText(`{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"e2e","version":"1"}}}`)
	if got := readTextWithin(t, s, 30*time.Second); !strings.Contains(got, `"serverInfo"`) {
		t.Fatalf("initialize: %s", got)
	}
	s.sendText(`{"jsonrpc":"2.0","method":"notifications/initialized"}`)
	check("session mode", getEnv(s, ""))

	r := authOver(t, g.raw(t, "/stdio"), bobToken)
	check("request mode", getEnv(r, `,"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}`))
}

// budgetUpstream routes /sh to a pool of at most max shWorkers (see
// workers_test.go), of which one subject may hold perSubject in session
// mode.
func budgetUpstream(t *testing.T, max, perSubject int) option {
	script := filepath.Join(t.TempDir(), "worker.sh")
	must(t, os.WriteFile(script, []byte(shWorker), 0o700))
	return func(c map[string]string) {
		c["upstreams"] = fmt.Sprintf(`
  - name: sh
    type: stdio
    command: [%q]
    min_idle: 0
    max: %d
    max_per_subject: %d`, script, max, perSubject)
		c["routes"] = `
  - {path: /sh, upstream: sh}`
	}
}

// trySession authenticates on /sh and sends initialize: true with the
// session open, false when the gateway closed the connection 1013 (any
// other answer fails the test).
func trySession(t *testing.T, g *gateway, token string) (*raw, bool) {
	t.Helper()
	r := authOver(t, g.raw(t, "/sh"), token)
	r.sendText(shInitialize)
	f, err := r.readFrame(5 * time.Second)
	if err != nil {
		t.Fatalf("initialize: %v", err)
	}
	switch f.op {
	case 1:
		if got := string(f.payload); !strings.Contains(got, `"id":0,`) || !strings.Contains(got, `"serverInfo"`) {
			t.Fatalf("initialize: %s", got)
		}
		return r, true
	case 8:
		if code, reason := wsraw.ParseClose(f.payload); code != 1013 || reason != "No worker available" {
			t.Fatalf("initialize: close %d %q, want a session or 1013 No worker available", code, reason)
		}
		return r, false
	}
	t.Fatalf("initialize: frame opcode %d", f.op)
	return nil, false
}

// refused opens a session-mode connection that the gateway must close with
// 1013, as the client reads it.
func refused(t *testing.T, g *gateway, token string) {
	t.Helper()
	r := authOver(t, g.raw(t, "/sh"), token)
	r.sendText(shInitialize)
	r.expectClose(1013, "No worker available", 5*time.Second)
}

// answered sends one request-mode message (no initialize first) and waits
// for its answer.
func answered(t *testing.T, g *gateway, token, id string) {
	t.Helper()
	r := authOver(t, g.raw(t, "/sh"), token)
	r.sendText(`{"jsonrpc":"2.0","id":"` + id + `","method":"ping"}`)
	if got := r.readText(); !strings.Contains(got, `"id":"`+id+`"`) || !strings.Contains(got, `"result"`) {
		t.Fatalf("request-mode ping: %s", got)
	}
	r.c.Close()
}

// SPEC 10 Workers: alice may hold max_per_subject (2) session-mode workers;
// her third session is closed 1013. Bob still gets a session, and the last
// of the pool's 4 slots stays with request mode: Bob's second session is
// refused too, while stateless requests (Alice's and Bob's) are answered.
// Once a session ends and its worker is gone, Alice may open another.
func TestMaxPerSubject(t *testing.T) {
	g := startGateway(t, budgetUpstream(t, 4, 2))
	a1 := shSession(t, g, aliceToken)
	shSession(t, g, aliceToken)
	refused(t, g, aliceToken)
	shSession(t, g, bobToken)
	answered(t, g, aliceToken, "alice-stateless")
	refused(t, g, bobToken) // three sessions: the fourth slot is request mode's
	refused(t, g, aliceToken)
	for i := range 3 {
		answered(t, g, bobToken, fmt.Sprintf("bob-stateless-%d", i))
	}

	a1.c.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		r, ok := trySession(t, g, aliceToken)
		if ok {
			break
		}
		r.c.Close()
		if time.Now().After(deadline) {
			t.Fatal("alice's share was not given back after her session ended")
		}
		time.Sleep(100 * time.Millisecond)
	}
	refused(t, g, aliceToken)
	answered(t, g, aliceToken, "alice-stateless-again")
	if n := g.Metric(t, `gateway_upstream_errors_total{kind="subject_share",upstream="sh"}`); n < 3 {
		t.Fatalf("subject_share refusals counted: %v, want >= 3", n)
	}
}
