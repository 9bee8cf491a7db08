package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
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

var gatewayBin string

// gatewayBinFast is built without -race even when E2E_RACE=1, for the tests
// whose point is load (tens of thousands of connections) rather than races.
var gatewayBinFast string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "gateway-e2e-")
	if err != nil {
		panic(err)
	}
	gatewayBin = filepath.Join(dir, "gateway")
	args := []string{"build", "-o", gatewayBin}
	if os.Getenv("E2E_RACE") == "1" {
		args = append(args, "-race")
	}
	cmd := exec.Command("go", append(args, "../cmd/gateway")...)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	if err := cmd.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building gateway:", err)
		os.Exit(1)
	}
	gatewayBinFast = gatewayBin
	if os.Getenv("E2E_RACE") == "1" {
		gatewayBinFast = filepath.Join(dir, "gateway-fast")
		cmd := exec.Command("go", "build", "-o", gatewayBinFast, "../cmd/gateway")
		cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
		if err := cmd.Run(); err != nil {
			fmt.Fprintln(os.Stderr, "building gateway:", err)
			os.Exit(1)
		}
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// Test credentials. The static token file holds only their hashes.
const (
	aliceToken = "alice-static-token-0123456789"
	bobToken   = "bob-static-token-0123456789ab"
	jwtSecret  = "e2e-hs256-secret-that-is-long-enough-0123456789"
	adminToken = "e2e-admin-token-0123456789abcdef"
)

func sha(s string) string { h := sha256.Sum256([]byte(s)); return hex.EncodeToString(h[:]) }

type gateway struct {
	t       testing.TB
	cmd     *exec.Cmd
	Addr    string // host:port of the WebSocket listener
	Admin   string
	Dir     string
	logMu   sync.Mutex
	log     bytes.Buffer
	exited  chan struct{}
	exitErr error
}

// URL is the ws:// URL of path on the gateway.
func (g *gateway) URL(path string) string { return "ws://" + g.Addr + path }

// Logs returns everything the gateway wrote to stderr so far.
func (g *gateway) Logs() string {
	g.logMu.Lock()
	defer g.logMu.Unlock()
	return g.log.String()
}

// waitNoConnections waits until the readiness probe's connection (and any
// other) is closed on the gateway's side, for tests that count connections.
func (g *gateway) waitNoConnections(t testing.TB) {
	t.Helper()
	for deadline := time.Now().Add(3 * time.Second); g.Metric(t, "gateway_connections_open") != 0; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("connections still open on the gateway")
		}
	}
}

// waitLog waits until the gateway's output contains s (it reaches us
// through a pipe, so it can trail what a client saw).
func (g *gateway) waitLog(s string, timeout time.Duration) bool {
	for deadline := time.Now().Add(timeout); ; time.Sleep(20 * time.Millisecond) {
		if strings.Contains(g.Logs(), s) {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
	}
}

type logWriter struct{ g *gateway }

func (w logWriter) Write(p []byte) (int, error) {
	w.g.logMu.Lock()
	defer w.g.logMu.Unlock()
	return w.g.log.Write(p)
}

// baseConfig is a complete config for tests; extra YAML is appended, and
// keys in extra replace the top-level keys here with the same name.
func baseConfig(listen, admin string) map[string]string {
	return map[string]string{
		"listen": fmt.Sprintf("%q", listen),
		"path":   "/mcp",
		"origins": `
  allowed: ["https://app.example.com"]
  allow_absent: true`,
		"auth": `
  timeout: 1s
  header: true
  static_tokens_file: tokens.txt
  jwt:
    hs256_secret_file: jwt.key`,
		"limits": `
  handshake_timeout: 1s
  idle_timeout: 60s
  ping_interval: 20s`,
		"admin": fmt.Sprintf(`
  listen: %q
  token_file: admin.token`, admin),
		"log": `
  format: json
  level: info`,
	}
}

type option func(cfg map[string]string)

func with(key, yaml string) option { return func(c map[string]string) { c[key] = yaml } }

// startGateway writes a config and credentials into a temp dir, runs
// `gateway serve -c` on free loopback ports and waits for /readyz.
func startGateway(t testing.TB, opts ...option) *gateway {
	return startGatewayCmd(t, nil, opts...)
}

// startGatewayCmd is startGateway with a hook to change the command (e.g. to
// wrap it in a shell that lowers its file limit).
func startGatewayCmd(t testing.TB, wrap func(bin string, args []string) (string, []string), opts ...option) *gateway {
	t.Helper()
	dir := t.TempDir()
	g := &gateway{t: t, Dir: dir, exited: make(chan struct{})}
	g.Addr = fmt.Sprintf("127.0.0.1:%d", wsraw.FreePort(t))
	g.Admin = fmt.Sprintf("127.0.0.1:%d", wsraw.FreePort(t))
	cfg := baseConfig(g.Addr, g.Admin)
	for _, o := range opts {
		o(cfg)
	}
	var b strings.Builder
	for _, k := range []string{"listen", "path", "tls", "origins", "auth", "limits", "ratelimit", "upstreams", "routes", "admin", "log", "drain_timeout", "redis", "proxy", "insecure_plaintext", "reuse_port"} {
		if v, ok := cfg[k]; ok {
			fmt.Fprintf(&b, "%s: %s\n", k, v)
		}
	}
	must(t, os.WriteFile(filepath.Join(dir, "gateway.yaml"), []byte(b.String()), 0o600))
	must(t, os.WriteFile(filepath.Join(dir, "tokens.txt"), []byte(
		"# sha256 subject\n"+sha(aliceToken)+" alice\n"+sha(bobToken)+" bob\n"), 0o600))
	must(t, os.WriteFile(filepath.Join(dir, "jwt.key"), []byte(jwtSecret+"\n"), 0o600))
	must(t, os.WriteFile(filepath.Join(dir, "admin.token"), []byte(adminToken+"\n"), 0o600))

	bin, args := gatewayBin, []string{"serve", "-c", filepath.Join(dir, "gateway.yaml")}
	if wrap != nil {
		bin, args = wrap(bin, args)
	}
	g.cmd = exec.Command(bin, args...)
	g.cmd.Dir = dir
	g.cmd.Stdout = logWriter{g}
	g.cmd.Stderr = logWriter{g}
	g.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	must(t, g.cmd.Start())
	go func() { g.exitErr = g.cmd.Wait(); close(g.exited) }()
	t.Cleanup(func() { g.Stop() })

	deadline := time.Now().Add(15 * time.Second)
	for {
		resp, err := http.Get("http://" + g.Admin + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				if c, err := net.Dial("tcp", g.Addr); err == nil {
					c.Close()
					return g
				}
			}
		}
		select {
		case <-g.exited:
			t.Fatalf("gateway exited at start: %v\n%s", g.exitErr, g.Logs())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("gateway not ready in 15s\n%s", g.Logs())
		}
		time.Sleep(30 * time.Millisecond)
	}
}

// Stop sends SIGTERM, waits, and kills after 10 s.
func (g *gateway) Stop() {
	select {
	case <-g.exited:
		return
	default:
	}
	_ = g.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-g.exited:
	case <-time.After(10 * time.Second):
		_ = syscall.Kill(-g.cmd.Process.Pid, syscall.SIGKILL)
		<-g.exited
		g.t.Errorf("gateway did not stop on SIGTERM within 10s")
	}
}

// Metric returns the value of one sample line of /metrics, e.g.
// `gateway_closes_total{code="1009"}`; 0 when absent.
func (g *gateway) Metric(t testing.TB, sample string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + g.Admin + "/metrics")
	must(t, err)
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, sample+" ") {
			var v float64
			fmt.Sscanf(line[len(sample)+1:], "%g", &v)
			return v
		}
	}
	return 0
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// runGateway runs a short gateway command and returns stdout, stderr, exit code.
func runGateway(t testing.TB, dir string, args ...string) (string, string, int) {
	t.Helper()
	return runGatewayTimeout(t, dir, 20*time.Second, args...)
}

func runGatewayTimeout(t testing.TB, dir string, limit time.Duration, args ...string) (string, string, int) {
	t.Helper()
	return runBinary(t, gatewayBin, dir, limit, args...)
}

func runBinary(t testing.TB, bin, dir string, limit time.Duration, args ...string) (string, string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Dir = dir
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return out.String(), errb.String(), code
}

var _ = io.EOF
