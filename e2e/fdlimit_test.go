package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mcpgate/gateway/conformance/wsraw"
)

// More connections than the gateway's open-file limit: the gateway refuses
// the excess and keeps serving, where gnet v2.9.7 alone would stop its
// engine on EMFILE. The gateway runs under `ulimit -n 256` (soft and hard, so
// Go cannot raise it) and max_connections asks for more than that.
func TestMoreConnectionsThanFileLimit(t *testing.T) {
	wrap := func(bin string, args []string) (string, []string) {
		return "/bin/bash", append([]string{"-c", `ulimit -n 256 && exec "$0" "$@"`, bin}, args...)
	}
	g := startGatewayCmd(t, wrap, with("limits", `
  handshake_timeout: 5s
  max_connections: 100000
  max_connections_per_ip: 100000
  max_pending_auth: 100000`), with("ratelimit", `
  handshakes_per_ip: {count: 100000, window: 10s}`))
	if !g.waitLog("capped", 3*time.Second) {
		t.Fatalf("no warning that max_connections was capped:\n%s", g.Logs())
	}
	// A client that is served throughout.
	keep := dialAuthed(t, g.Addr, aliceToken)

	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	refused := 0
	for i := 0; i < 400; i++ {
		c, err := net.DialTimeout("tcp", g.Addr, 2*time.Second)
		if err != nil {
			t.Fatalf("dial %d: %v", i, err)
		}
		conns = append(conns, c)
		// Each connection starts an upgrade so refusals are answered.
		_, _ = c.Write([]byte(wsraw.UpgradeRequest(g.Addr, "/mcp")))
	}
	upgraded, with503 := 0, 0
	for _, c := range conns {
		_ = c.SetReadDeadline(time.Now().Add(3 * time.Second))
		buf := make([]byte, 16)
		n, _ := c.Read(buf)
		switch {
		case strings.HasPrefix(string(buf[:n]), "HTTP/1.1 101"):
			upgraded++
		case strings.HasPrefix(string(buf[:n]), "HTTP/1.1 503"):
			with503++
			refused++
		default:
			// Refused at accept: the 503 was written, but a client whose
			// request was still unread when the socket closed may see a
			// reset instead of it.
			refused++
		}
	}
	// The descriptor budget admits clients while the accept headroom (one
	// per event loop with reuse_port, plus 16 + 256/128) and the client
	// margin (16) stay free, every other descriptor of the process counted:
	// at most 256-16-16-3 = 221 connections, the kept client included, and
	// at least 150 (the process's own descriptors are about 20).
	if upgraded > 221 || upgraded < 150 || refused < 400-221 || with503 == 0 {
		t.Fatalf("%d upgraded, %d refused (%d with a 503) of 400 under a 256-file limit", upgraded, refused, with503)
	}
	keep.sendText(`{"jsonrpc":"2.0","id":1,"method":"ping"}`)
	if f, err := keep.readFrame(5 * time.Second); err != nil || string(f.payload) != `{"jsonrpc":"2.0","id":1,"result":{}}` {
		var keepLines []string
		for _, l := range strings.Split(g.Logs(), "\n") {
			if strings.Contains(l, "alice") || strings.Contains(l, "ERROR") || strings.Contains(l, "panic") || strings.Contains(l, "WARN") {
				keepLines = append(keepLines, l)
			}
		}
		t.Fatalf("existing client: %v %q\n%s", err, f.payload, strings.Join(keepLines, "\n"))
	}
	for _, c := range conns {
		c.Close()
	}
	conns = nil
	time.Sleep(300 * time.Millisecond)
	// The engine is still accepting.
	fresh := dialAuthed(t, g.Addr, bobToken)
	fresh.sendText(`{"jsonrpc":"2.0","id":2,"method":"ping"}`)
	fresh.readText()
	select {
	case <-g.Exited():
		t.Fatalf("gateway exited: %v", g.ExitErr())
	default:
	}
}

// The same at this machine's real limit, with every kind of descriptor user
// busy: the gateway runs under the hard limit of 20,000 open files, 32
// session-mode clients each hold a stdio child, 8 clients keep an HTTP
// upstream under load, /metrics is scraped, and the bench tool opens 21,000
// more connections from three worker processes (one process may not hold
// more than 20,000 either). The excess is refused with 503, the gateway
// keeps serving its clients and fresh ones. Runs in about a minute on two
// cores; skipped with -short.
func TestMoreConnectionsThanRealFileLimit(t *testing.T) {
	if testing.Short() {
		t.Skip("21,000-connection test skipped in -short")
	}
	const limit, flood = 20000, 21000
	httpURL, _ := slowMCP(t, 30*time.Millisecond)
	wrap := func(_ string, args []string) (string, []string) {
		return "/bin/bash", append([]string{"-c", fmt.Sprintf(`ulimit -n %d && exec "$0" "$@"`, limit), gatewayBinFast}, args...)
	}
	// max 33: 32 session children, and one slot the pool keeps for request mode.
	g := startGatewayCmd(t, wrap, budgetUpstreams(t, 33, httpURL), with("limits", `
  handshake_timeout: 30s
  max_connections: 100000
  max_connections_per_ip: 100000
  max_pending_auth: 100000`), with("ratelimit", `
  handshakes_per_ip: {count: 1000000, window: 10s}
  per_connection: {messages: 100000, window: 10s}
  frames_per_connection: {count: 100000, window: 10s}
  per_subject: {messages: 100000000, window: 10s}`), with("log", `
  format: json
  level: warn`))
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var scrapes, scrapeErrs atomic.Int64
	wg.Add(1)
	go func() {
		defer wg.Done()
		cl := &http.Client{Timeout: 5 * time.Second}
		for {
			select {
			case <-stop:
				return
			case <-time.After(200 * time.Millisecond):
			}
			if resp, err := cl.Get("http://" + g.Admin + "/metrics"); err != nil {
				scrapeErrs.Add(1)
			} else {
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				scrapes.Add(1)
			}
		}
	}()
	defer func() {
		select {
		case <-stop:
		default:
			close(stop)
		}
		wg.Wait()
	}()
	sessions, noWorker, refused503 := openSessions(t, g, 32)
	if len(sessions) != 32 {
		t.Fatalf("%d of 32 sessions got a child (%d no worker, %d refused)", len(sessions), noWorker, refused503)
	}
	httpOK, httpErr, _ := httpLoad(t, g, 8, 4, stop, &wg)
	keep := dialAuthed(t, g.Addr, aliceToken)

	tokenFile := filepath.Join(t.TempDir(), "token")
	must(t, os.WriteFile(tokenFile, []byte(bobToken), 0o600))
	start := time.Now()
	out, errOut, code := runBinary(t, gatewayBinFast, g.Dir, 150*time.Second, "bench", "--mode", "idle", "--conns", fmt.Sprint(flood),
		"--per-process", "7000", "--duration", "3s", "--no-init", "--quiet", "--timeout", "20s",
		"--url", g.URL("/mcp"), "--token-file", tokenFile, "--out-json", "-")
	var rep struct {
		Connections struct{ Established, Failed int } `json:"connections"`
		Errors      []struct {
			Kind  string
			Count int
		} `json:"errors"`
	}
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("bench exit %d: %v\n%s\n%s", code, err, wsraw.Truncate(out, 2000), wsraw.Truncate(errOut, 2000))
	}
	t.Logf("bench (%.0f s): established %d, failed %d, errors %v", time.Since(start).Seconds(), rep.Connections.Established, rep.Connections.Failed, rep.Errors)
	refused := 0
	for _, e := range rep.Errors {
		if strings.HasPrefix(e.Kind, "connect/") || strings.HasPrefix(e.Kind, "auth/") {
			refused += e.Count
		}
	}
	// The process holds 32 children (128 descriptors), 32 upstream
	// connections, the 42 clients above and its own: the flood cannot all
	// fit, and what does not is refused.
	if rep.Connections.Established+refused < flood || rep.Connections.Established > limit-200 || rep.Connections.Established < 15000 {
		t.Fatalf("established %d, refused %d of %d under a %d-file limit: %v", rep.Connections.Established, refused, flood, limit, rep.Errors)
	}
	okBefore := httpOK.Load()
	keep.sendText(`{"jsonrpc":"2.0","id":1,"method":"ping"}`)
	keep.readText()
	for i, r := range sessions {
		r.sendText(fmt.Sprintf(`{"jsonrpc":"2.0","id":%d,"method":"ping"}`, 100+i))
		if f, err := r.readFrame(10 * time.Second); err != nil || !strings.Contains(string(f.payload), fmt.Sprintf(`"id":%d,"result"`, 100+i)) {
			t.Fatalf("session %d after the flood: %v %q", i, err, f.payload)
		}
	}
	time.Sleep(500 * time.Millisecond)
	if httpOK.Load() == okBefore {
		t.Fatalf("the HTTP upstream stopped answering (%d errors)", httpErr.Load())
	}
	fresh := dialAuthed(t, g.Addr, bobToken)
	fresh.sendText(`{"jsonrpc":"2.0","id":2,"method":"ping"}`)
	fresh.readText()
	close(stop)
	wg.Wait()
	t.Logf("HTTP upstream: %d answers, %d errors; /metrics: %d scrapes, %d failed", httpOK.Load(), httpErr.Load(), scrapes.Load(), scrapeErrs.Load())
	// Clients are refused a margin before the upstream's connections are.
	if httpErr.Load()*100 > httpOK.Load() {
		t.Errorf("%d HTTP upstream errors for %d answers", httpErr.Load(), httpOK.Load())
	}
	select {
	case <-g.Exited():
		t.Fatalf("gateway exited: %v", g.ExitErr())
	default:
	}
	if logs := g.Logs(); strings.Contains(strings.ToLower(logs), "too many open files") || strings.Contains(logs, "Accept() failed") {
		t.Fatalf("the gateway met the open-file limit:\n%s", wsraw.Truncate(logs, 4000))
	}
}
