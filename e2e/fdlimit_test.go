package e2e

import (
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"strings"
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
	// 256 files * 0.9 - 64 reserved = 166 connections, the kept client included.
	if upgraded > 166 || refused < 400-166 || with503 == 0 {
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

// The same at this machine's real limit: the gateway runs under the hard
// limit of 20,000 open files (90 % minus a reserve: 17,936 connections), and
// the bench tool opens 19,500 connections from two worker processes. The
// excess is refused with 503 and the gateway keeps serving.
func TestMoreConnectionsThanRealFileLimit(t *testing.T) {
	if testing.Short() {
		t.Skip("20,000-connection test skipped in -short")
	}
	wrap := func(_ string, args []string) (string, []string) {
		return "/bin/bash", append([]string{"-c", `ulimit -n 20000 && exec "$0" "$@"`, gatewayBinFast}, args...)
	}
	g := startGatewayCmd(t, wrap, with("limits", `
  handshake_timeout: 30s
  max_connections: 100000
  max_connections_per_ip: 100000
  max_pending_auth: 100000`), with("ratelimit", `
  handshakes_per_ip: {count: 1000000, window: 10s}
  per_subject: {messages: 100000000, window: 10s}`), with("log", `
  format: json
  level: warn`))
	keep := dialAuthed(t, g.Addr, aliceToken)
	tokenFile := filepath.Join(t.TempDir(), "token")
	must(t, os.WriteFile(tokenFile, []byte(bobToken), 0o600))
	out, errOut, code := runBinary(t, gatewayBinFast, g.Dir, 150*time.Second, "bench", "--mode", "idle", "--conns", "19500",
		"--per-process", "10000", "--duration", "3s", "--no-init", "--quiet", "--timeout", "20s",
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
	t.Logf("established %d, failed %d, errors %v", rep.Connections.Established, rep.Connections.Failed, rep.Errors)
	if rep.Connections.Established > 17936 || rep.Connections.Established < 15000 {
		t.Fatalf("established %d connections under a 20,000-file limit", rep.Connections.Established)
	}
	refused := 0
	for _, e := range rep.Errors {
		if strings.HasPrefix(e.Kind, "connect/") || strings.HasPrefix(e.Kind, "auth/") {
			refused += e.Count
		}
	}
	if refused < 19500-17936 {
		t.Fatalf("only %d refusals: %v", refused, rep.Errors)
	}
	keep.sendText(`{"jsonrpc":"2.0","id":1,"method":"ping"}`)
	keep.readText()
	time.Sleep(500 * time.Millisecond)
	fresh := dialAuthed(t, g.Addr, bobToken)
	fresh.sendText(`{"jsonrpc":"2.0","id":2,"method":"ping"}`)
	fresh.readText()
}
