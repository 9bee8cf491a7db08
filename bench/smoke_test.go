package bench

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"testing"
	"time"
)

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// startGateway builds cmd/gateway and runs it on free loopback ports with
// one static token and limits raised for load. It returns the WebSocket URL,
// the admin address, the token and the process.
func startGateway(t *testing.T) (wsURL, admin, token string, pid int) {
	t.Helper()
	dir := t.TempDir()
	bin := filepath.Join(dir, "gateway")
	build := exec.Command("go", "build", "-o", bin, "../cmd/gateway")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building the gateway: %v\n%s", err, out)
	}
	token = "smoke-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	sum := sha256.Sum256([]byte(token))
	if err := os.WriteFile(filepath.Join(dir, "tokens"), []byte(hex.EncodeToString(sum[:])+" benchuser\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	port, aport := freePort(t), freePort(t)
	cfg := fmt.Sprintf(`listen: "127.0.0.1:%d"
auth:
  static_tokens_file: tokens
limits:
  max_connections_per_ip: 10000
ratelimit:
  per_connection: {messages: 10000000, window: 1s}
  frames_per_connection: {count: 10000000, window: 1s}
  per_subject: {messages: 100000000, window: 1s}
  handshakes_per_ip: {count: 100000, window: 1s}
admin:
  listen: "127.0.0.1:%d"
`, port, aport)
	cfgPath := filepath.Join(dir, "gateway.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	cmd := exec.Command(bin, "serve", "-c", cfgPath)
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			t.Logf("gateway output:\n%s", logs.String())
		}
	})
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	for deadline := time.Now().Add(10 * time.Second); ; {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("gateway did not listen on %s", addr)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return "ws://" + addr + "/mcp", fmt.Sprintf("127.0.0.1:%d", aport), token, cmd.Process.Pid
}

func runMain(t *testing.T, args ...string) *Report {
	t.Helper()
	out := filepath.Join(t.TempDir(), "r.json")
	var stdout, stderr bytes.Buffer
	code := Main(append(args, "--quiet", "--out-json", out), &stdout, &stderr)
	if code != 0 {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout.String(), stderr.String())
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	var rep Report
	if err := json.Unmarshal(b, &rep); err != nil {
		t.Fatal(err)
	}
	t.Logf("\n%s", stdout.String())
	return &rep
}

// TestSmoke runs the real gateway and the bench against it: a closed-loop
// call run in this process, then an open-loop run split over three worker
// processes (this test binary, re-executed; see TestMain).
func TestSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the gateway")
	}
	url, admin, token, pid := startGateway(t)

	rep := runMain(t, "--url", url, "--token", token, "--mode", "call", "--conns", "50",
		"--duration", "3s", "--settle", "100ms", "--server-pid", strconv.Itoa(pid))
	if rep.Connections.Established != 50 || rep.Calls == nil || rep.Calls.Completed == 0 || rep.ErrorTotal != 0 {
		t.Fatalf("closed loop: %+v calls %+v errors %+v", rep.Connections, rep.Calls, rep.Errors)
	}
	if rep.Server == nil || rep.Server.USPerCall <= 0 || rep.Server.RSSEnd <= 0 {
		t.Fatalf("server figures missing: %+v", rep.Server)
	}

	// Connect mode, in two worker processes: the generator's CPU and the
	// host's CPUs cover the connect phase, which is what it measures.
	rep = runMain(t, "--url", url, "--token", token, "--mode", "connect", "--conns", "40",
		"--per-process", "20", "--server-pid", strconv.Itoa(pid))
	if rep.Connections.Established != 40 || rep.ErrorTotal != 0 || rep.Server == nil || rep.Server.CPUConnectSecs < 0 {
		t.Fatalf("connect: %+v errors %+v server %+v", rep.Connections, rep.Errors, rep.Server)
	}
	if g := rep.Generator; g == nil || g.CPUSecs <= 0 || g.USPerConn <= 0 || g.USPerCall != 0 {
		t.Fatalf("connect: generator figures %+v", rep.Generator)
	}
	if runtime.GOOS == "linux" && (rep.Host == nil || rep.Host.Secs <= 0) {
		t.Fatalf("connect: no host figures over the connect phase: %+v", rep.Host)
	}

	rep = runMain(t, "--url", url, "--token", token, "--mode", "call", "--conns", "30",
		"--per-process", "10", "--rate", "300", "--duration", "1500ms", "--settle", "0s",
		"--metrics-url", "http://"+admin+"/metrics")
	if rep.Settings.Workers != 3 || rep.Connections.Established != 30 || rep.ErrorTotal != 0 {
		t.Fatalf("workers: %+v %+v errors %+v", rep.Settings, rep.Connections, rep.Errors)
	}
	// Open loop: the count is fixed by the schedule, not by the server.
	if rep.Calls.Sent != 450 || rep.Calls.Completed != 450 {
		t.Fatalf("open loop sent %d completed %d, want 450", rep.Calls.Sent, rep.Calls.Completed)
	}
	if rep.Server == nil || rep.Server.RSSEnd <= 0 {
		t.Fatalf("metrics figures missing: %+v", rep.Server)
	}
}
