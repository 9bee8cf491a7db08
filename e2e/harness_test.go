package e2e

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
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

// gateway is a running gateway process (wsraw's harness) with the e2e
// suite's helpers.
type gateway struct{ *wsraw.Gateway }

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
	return startGatewayFull(t, wsraw.WS, wrap, opts...)
}

// startGatewayFull is startGatewayCmd over transport tr (see startGatewayOn).
func startGatewayFull(t testing.TB, tr wsraw.Transport, wrap func(bin string, args []string) (string, []string), opts ...option) *gateway {
	t.Helper()
	return &gateway{wsraw.LaunchOnFreePorts(t, gatewayBin, func(addr, admin string) wsraw.Spec {
		cfg := baseConfig(addr, admin)
		for _, o := range opts {
			o(cfg)
		}
		return wsraw.Spec{
			Addr: addr, Admin: admin, Config: cfg, Wrap: wrap,
			Files: map[string]string{
				"tokens.txt":  "# sha256 subject\n" + sha(aliceToken) + " alice\n" + sha(bobToken) + " bob\n",
				"jwt.key":     jwtSecret + "\n",
				"admin.token": adminToken + "\n",
			},
			LogLimit:  -1, // waitLog looks for lines from any point of a test
			Transport: tr,
		}
	})}
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
