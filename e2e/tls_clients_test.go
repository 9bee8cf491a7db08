package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mcpgate/gateway/conformance/wsraw"
)

// Real client libraries see the wire contract (README "What the gateway does
// on the wire", SPEC 4.1-4.4) over every transport of wsraw's matrix: wss://
// with the test CA, ws://, and both through HAProxy (PROXY v2). The clients
// are Node's `ws` (test/node/wire-probe.mjs) and Python's `websockets`
// (Debian python3-websockets, test/python/wire_probe.py); both probes take
// the same JSON spec and print the same events, one per line.

// wireEvent is one line a probe prints.
type wireEvent struct {
	Event        string `json:"event"`
	Protocol     string `json:"protocol"`
	Data         string `json:"data"`
	Code         int    `json:"code"`
	Reason       string `json:"reason"`
	Status       int    `json:"status"`
	Body         string `json:"body"`
	Message      string `json:"message"`
	CacheControl string `json:"cache_control"`
}

// wireClient runs one probe script.
type wireClient struct {
	name string
	argv func(spec string) []string
}

// wireClients are the probes; each returns the client and "", or what is
// missing to run it.
var wireClients = []func() (wireClient, string){
	func() (wireClient, string) {
		node, err := exec.LookPath("node")
		if err != nil {
			return wireClient{name: "node-ws"}, "node not installed"
		}
		dir, _ := filepath.Abs("../test/node")
		if _, err := os.Stat(filepath.Join(dir, "node_modules", "ws")); err != nil {
			return wireClient{name: "node-ws"}, "test/node/node_modules missing (npm ci --prefix test/node)"
		}
		return wireClient{"node-ws", func(spec string) []string {
			return []string{node, filepath.Join(dir, "wire-probe.mjs"), spec}
		}}, ""
	},
	func() (wireClient, string) {
		py := pythonWebsockets()
		if py == "" {
			return wireClient{name: "python-websockets"}, "no python3 with the websockets module (apt-get install python3-websockets)"
		}
		script, _ := filepath.Abs("../test/python/wire_probe.py")
		return wireClient{"python-websockets", func(spec string) []string {
			return []string{py, script, spec}
		}}, ""
	},
}

// needClient skips (or, under CI=true, fails) when the client is missing.
func needClient(t *testing.T, missing string) {
	t.Helper()
	if missing == "" {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatal(missing + "; scripts/deps.sh installs it")
	}
	t.Skip(missing)
}

// pythonWebsockets finds a python3 that imports websockets: Debian's
// /usr/bin/python3 first (python3-websockets installs there), then PATH.
func pythonWebsockets() string {
	for _, name := range []string{"/usr/bin/python3", "python3"} {
		p, err := exec.LookPath(name)
		if err != nil {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err = exec.CommandContext(ctx, p, "-c", "import websockets").Run()
		cancel()
		if err == nil {
			return p
		}
	}
	return ""
}

// probeRun is one running probe.
type probeRun struct {
	t      *testing.T
	name   string
	cmd    *exec.Cmd
	mu     sync.Mutex
	events []wireEvent
	cond   chan struct{} // closed and replaced on every event
	done   chan struct{}
	stderr bytes.Buffer
	err    error
}

func (c wireClient) start(t *testing.T, spec map[string]any) *probeRun {
	t.Helper()
	b, _ := json.Marshal(spec)
	argv := c.argv(string(b))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	p := &probeRun{t: t, name: c.name, cmd: exec.CommandContext(ctx, argv[0], argv[1:]...), cond: make(chan struct{}), done: make(chan struct{})}
	p.cmd.Stderr = &p.stderr
	out, err := p.cmd.StdoutPipe()
	must(t, err)
	if err := p.cmd.Start(); err != nil {
		cancel()
		t.Fatal(err)
	}
	go func() {
		defer cancel()
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 1<<20), 4<<20)
		for sc.Scan() {
			var ev wireEvent
			if json.Unmarshal(sc.Bytes(), &ev) != nil {
				ev = wireEvent{Event: "junk", Data: sc.Text()}
			}
			p.mu.Lock()
			p.events = append(p.events, ev)
			close(p.cond)
			p.cond = make(chan struct{})
			p.mu.Unlock()
		}
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			_ = p.cmd.Process.Kill()
			<-p.done
		}
	})
	return p
}

// waitEvent waits for an event named ev.
func (p *probeRun) waitEvent(ev string, timeout time.Duration) {
	p.t.Helper()
	deadline := time.After(timeout)
	for {
		p.mu.Lock()
		for _, e := range p.events {
			if e.Event == ev {
				p.mu.Unlock()
				return
			}
		}
		cond := p.cond
		p.mu.Unlock()
		select {
		case <-cond:
		case <-p.done:
			p.t.Fatalf("%s exited before %q: %s", p.name, ev, p.describe())
		case <-deadline:
			p.t.Fatalf("%s: no %q within %v: %s", p.name, ev, timeout, p.describe())
		}
	}
}

// wait waits for the probe to exit and returns its events.
func (p *probeRun) wait() []wireEvent {
	p.t.Helper()
	<-p.done
	if p.err != nil {
		p.t.Fatalf("%s: %v: %s", p.name, p.err, p.describe())
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]wireEvent(nil), p.events...)
}

func (p *probeRun) describe() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var b strings.Builder
	b.WriteString("events:")
	for _, e := range p.events {
		line, _ := json.Marshal(e)
		if len(line) > 300 {
			line = append(line[:300], "…"...)
		}
		b.WriteString("\n  " + string(line))
	}
	if s := strings.TrimSpace(p.stderr.String()); s != "" {
		b.WriteString("\nstderr: " + s)
	}
	return b.String()
}

func (c wireClient) run(t *testing.T, spec map[string]any) *probeRun {
	t.Helper()
	p := c.start(t, spec)
	p.wait()
	return p
}

// last returns the probe's last event, which must be named ev.
func (p *probeRun) last(ev string) wireEvent {
	p.t.Helper()
	p.mu.Lock()
	n := len(p.events)
	var e wireEvent
	if n > 0 {
		e = p.events[n-1]
	}
	p.mu.Unlock()
	if e.Event != ev {
		p.t.Fatalf("%s: last event %q, want %q: %s", p.name, e.Event, ev, p.describe())
	}
	return e
}

func (p *probeRun) has(ev string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, e := range p.events {
		if e.Event == ev {
			return true
		}
	}
	return false
}

// expectClose checks that the connection opened with subprotocol mcp and
// ended with a close frame of code and reason ("*": any reason).
func (p *probeRun) expectClose(code int, reason string) {
	p.t.Helper()
	if !p.has("open") {
		p.t.Fatalf("%s: the upgrade did not succeed: %s", p.name, p.describe())
	}
	e := p.last("close")
	if e.Code != code || (reason != "*" && e.Reason != reason) {
		p.t.Fatalf("%s: close %d %q, want %d %q: %s", p.name, e.Code, e.Reason, code, reason, p.describe())
	}
	p.t.Logf("%s: close %d %q", p.name, e.Code, e.Reason)
}

// expectRefused checks the upgrade got an HTTP answer with status and never
// opened.
func (p *probeRun) expectRefused(status int) {
	p.t.Helper()
	e := p.last("refused")
	if e.Status != status || p.has("open") {
		p.t.Fatalf("%s: refused %d, want %d: %s", p.name, e.Status, status, p.describe())
	}
}

// wireTransport is a gateway as the probes reach it.
type wireTransport struct {
	name          string
	g             *gateway
	ws, http, caf string // ws(s):// and http(s):// bases, CA file ("" for plaintext)
}

func (w wireTransport) spec(path string, steps ...map[string]any) map[string]any {
	if steps == nil {
		steps = []map[string]any{}
	}
	return map[string]any{"url": w.ws + path, "ca": w.caf, "steps": steps, "timeout_ms": 15000}
}

// wireTransportOn starts a gateway over tr (wsraw's transports: ws, wss,
// and both behind HAProxy) and says how the probes reach it.
func wireTransportOn(t *testing.T, tr wsraw.Transport, opts ...option) wireTransport {
	g := startGatewayOn(t, tr, opts...)
	w := wireTransport{name: tr.String(), g: g, ws: "ws://" + g.Front, http: "http://" + g.Front}
	if tr.TLS {
		w.caf = filepath.Join(t.TempDir(), "ca.pem")
		must(t, os.WriteFile(w.caf, wsraw.TestCA(t).CertPEM, 0o600))
		w.ws, w.http = "wss://"+g.Front, "https://"+g.Front
	}
	return w
}

func textStep(s string) map[string]any { return map[string]any{"text": s} }

var (
	stepRecv  = map[string]any{"recv": true}
	stepReady = map[string]any{"ready": true}
)

func authStep(token string) map[string]any {
	return textStep(`{"type":"auth","token":"` + token + `"}`)
}

// TestWireClients: every close code and refusal of the wire table, as
// Node's ws and Python's websockets see it, over each transport (wss://
// with the test CA, ws://, and both through HAProxy with PROXY v2).
func TestWireClients(t *testing.T) {
	cfg := []option{
		with("limits", `
  handshake_timeout: 2s
  max_message_bytes: 64KiB
  idle_timeout: 60s
  ping_interval: 20s`),
		with("ratelimit", `
  per_connection: {messages: 10, window: 10s}
  handshakes_per_ip: {count: 10000, window: 10s}`),
	}
	wsraw.EachTransport(t, func(t *testing.T, trans wsraw.Transport) {
		tr := wireTransportOn(t, trans, cfg...)
		for _, resolve := range wireClients {
			c, missing := resolve()
			t.Run(c.name, func(t *testing.T) {
				needClient(t, missing)
				wireRows(t, c, tr)
			})
		}
	})
}

func wireRows(t *testing.T, c wireClient, tr wireTransport) {
	authed := func(more ...map[string]any) []map[string]any {
		return append([]map[string]any{authStep(aliceToken), stepRecv}, more...)
	}
	expectAuthOK := func(t *testing.T, p *probeRun) {
		t.Helper()
		p.mu.Lock()
		defer p.mu.Unlock()
		for _, e := range p.events {
			if e.Event == "message" && strings.HasPrefix(e.Data, `{"type":"auth_ok","session":"`) {
				return
			}
		}
		t.Fatalf("%s: no auth_ok", c.name)
	}
	t.Run("wrong token: 1008 Invalid credentials", func(t *testing.T) {
		p := c.run(t, tr.spec("/mcp", authStep("wrong-token")))
		p.expectClose(1008, "Invalid credentials")
		if e := p.events[0]; e.Event != "open" || e.Protocol != "mcp" {
			t.Fatalf("first event %+v, want open with subprotocol mcp", e)
		}
	})
	t.Run("auth timeout: 1008 Authentication timeout", func(t *testing.T) {
		start := time.Now()
		p := c.run(t, tr.spec("/mcp"))
		p.expectClose(1008, "Authentication timeout")
		if el := time.Since(start); el < 900*time.Millisecond {
			t.Fatalf("closed after %v, auth.timeout is 1s", el)
		}
	})
	t.Run("first message not JSON: 1007", func(t *testing.T) {
		c.run(t, tr.spec("/mcp", textStep("hello, not json"))).expectClose(1007, "Invalid message format")
	})
	t.Run("message over max_message_bytes: 1009", func(t *testing.T) {
		p := c.run(t, tr.spec("/mcp", authed(map[string]any{"big": 64<<10 + 1})...))
		expectAuthOK(t, p)
		p.expectClose(1009, "*")
	})
	t.Run("message of 1 MiB, far over max_message_bytes: 1009", func(t *testing.T) {
		// Decided from the frame header while the client is still writing.
		p := c.run(t, tr.spec("/mcp", authed(map[string]any{"big": 1 << 20})...))
		expectAuthOK(t, p)
		p.expectClose(1009, "*")
	})
	t.Run("binary message: 1003", func(t *testing.T) {
		p := c.run(t, tr.spec("/mcp", authed(map[string]any{"binary": "bin"})...))
		expectAuthOK(t, p)
		p.expectClose(1003, "*")
	})
	t.Run("per-connection flood: 1008 Rate limit exceeded", func(t *testing.T) {
		p := c.run(t, tr.spec("/mcp", authed(map[string]any{"repeat": `{"jsonrpc":"2.0","id":1,"method":"ping"}`, "n": 200})...))
		expectAuthOK(t, p)
		p.expectClose(1008, "Rate limit exceeded")
		answered := 0
		for _, e := range p.events {
			if e.Event == "message" && e.Data == `{"jsonrpc":"2.0","id":1,"result":{}}` {
				answered++
			}
		}
		if answered > 10 {
			t.Fatalf("%d pings answered, per_connection allows 10", answered)
		}
	})
	t.Run("disallowed Origin: 403", func(t *testing.T) {
		s := tr.spec("/mcp")
		s["origin"] = "https://evil.example.net"
		c.run(t, s).expectRefused(403)
	})
	t.Run("unknown path: 404", func(t *testing.T) {
		c.run(t, tr.spec("/nope")).expectRefused(404)
	})
	t.Run("POST /tickets, then the ticket upgrades once", func(t *testing.T) {
		post := func(token string) wireEvent {
			p := c.run(t, map[string]any{"post": tr.http + "/tickets", "ca": tr.caf, "token": token})
			return p.last("http")
		}
		if e := post("wrong-token"); e.Status != 401 {
			t.Fatalf("POST /tickets with a wrong token: %+v, want 401", e)
		}
		e := post(aliceToken)
		var tk struct {
			Ticket    string `json:"ticket"`
			ExpiresIn int    `json:"expires_in"`
		}
		if e.Status != 200 || json.Unmarshal([]byte(e.Body), &tk) != nil || tk.Ticket == "" || tk.ExpiresIn != 30 || e.CacheControl != "no-store" {
			t.Fatalf("POST /tickets: %+v, want 200 with {\"ticket\":...,\"expires_in\":30} and no-store", e)
		}
		s := tr.spec("/mcp?ticket="+tk.Ticket, textStep(`{"jsonrpc":"2.0","id":"t","method":"ping"}`), stepRecv, map[string]any{"close": 1000})
		s["origin"] = "https://app.example.com"
		p := c.run(t, s)
		p.expectClose(1000, "*")
		if got := p.events[1]; got.Event != "message" || got.Data != `{"jsonrpc":"2.0","id":"t","result":{}}` {
			t.Fatalf("served with the ticket: %s", p.describe())
		}
		// Spent: the same ticket is refused.
		s["steps"] = []map[string]any{}
		c.run(t, s).expectRefused(401)
	})
	t.Run("wrong ticket: 401", func(t *testing.T) {
		c.run(t, tr.spec("/mcp?ticket=bogus-ticket")).expectRefused(401)
	})
}

// TestWireClientsDrain: on SIGTERM, Node's ws and Python's websockets, both
// authenticated, get close 1001 "Going away", over each transport.
func TestWireClientsDrain(t *testing.T) {
	wsraw.EachTransport(t, func(t *testing.T, trans wsraw.Transport) {
		tr := wireTransportOn(t, trans, with("drain_timeout", "5s"))
		var probes []*probeRun
		for _, resolve := range wireClients {
			c, missing := resolve()
			if missing != "" {
				if os.Getenv("CI") == "true" {
					t.Fatal(missing + "; scripts/deps.sh installs it")
				}
				t.Logf("%s skipped: %s", c.name, missing)
				continue
			}
			p := c.start(t, tr.spec("/mcp", authStep(aliceToken), stepRecv, stepReady))
			p.waitEvent("ready", 15*time.Second)
			probes = append(probes, p)
		}
		if len(probes) == 0 {
			t.Skip("no client available")
		}
		must(t, tr.g.Signal(syscall.SIGTERM))
		for _, p := range probes {
			p.wait()
			p.expectClose(1001, "Going away")
		}
		select {
		case <-tr.g.Exited():
		case <-time.After(10 * time.Second):
			t.Fatal("gateway did not exit after drain")
		}
		if err := tr.g.ExitErr(); err != nil {
			t.Fatalf("exit after drain: %v", err)
		}
	})
}
