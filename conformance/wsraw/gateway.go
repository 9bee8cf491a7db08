// Package wsraw is the black-box harness shared by the conformance and abuse
// suites: it builds the gateway binary, runs it with a config on free
// loopback ports, reads its memory and I/O counters from /proc, and speaks
// raw WebSocket frames, including frames a correct client never would.
//
// It is a test helper (it takes a testing.TB) but lives in a normal package so
// that both suites share one copy.
package wsraw

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"maps"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Test credentials. The static token file the harness writes holds only
// their hashes.
const (
	Token      = "conformance-static-token-0123456789"
	OtherToken = "conformance-other-token-abcdef0123"
	AdminToken = "conformance-admin-token-0123456789abcdef"
)

// Build compiles cmd/gateway into a fresh temp dir and returns the binary
// path and the dir to remove when done.
func Build(race bool) (bin, dir string, err error) { return BuildTagged(race) }

// BuildTagged is Build with build tags, e.g. "faultinject" for a binary
// that panics where GATEWAY_FAULT says (package fault).
func BuildTagged(race bool, tags ...string) (bin, dir string, err error) {
	dir, err = os.MkdirTemp("", "gateway-bin-")
	if err != nil {
		return "", "", err
	}
	bin = filepath.Join(dir, "gateway")
	args := []string{"build", "-o", bin}
	if race {
		args = append(args, "-race")
	}
	if len(tags) > 0 {
		args = append(args, "-tags", strings.Join(tags, ","))
	}
	cmd := exec.Command("go", append(args, "github.com/mcpgate/gateway/cmd/gateway")...)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	if err := cmd.Run(); err != nil {
		os.RemoveAll(dir)
		return "", "", fmt.Errorf("building gateway: %w", err)
	}
	return bin, dir, nil
}

// FreePort finds a loopback port nobody listens on right now.
func FreePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// Config maps a top-level config key to its YAML value (a scalar or an
// indented block). Keys given to Start replace the defaults.
type Config map[string]string

// DefaultConfig is a complete test config: static tokens, a builtin demo
// upstream on /mcp, a loopback admin listener and generous timers.
func DefaultConfig(listen, admin string) Config {
	return Config{
		"listen": strconv.Quote(listen),
		"path":   "/mcp",
		"origins": `
  allowed: ["https://app.example.com"]
  allow_absent: true`,
		"auth": `
  timeout: 5s
  header: true
  static_tokens_file: tokens.txt`,
		"limits": `
  handshake_timeout: 5s
  idle_timeout: 600s
  ping_interval: 300s`,
		"admin": fmt.Sprintf(`
  listen: %q
  token_file: admin.token`, admin),
		"log": `
  format: json
  level: warn`,
	}
}

// keyOrder is the order in which Launch writes the top-level config keys;
// keys not listed follow, sorted.
var keyOrder = []string{"listen", "path", "tls", "origins", "auth", "limits", "ratelimit",
	"upstreams", "routes", "admin", "log", "drain_timeout", "redis", "proxy", "insecure_plaintext", "reuse_port"}

// Gateway is one running gateway process.
type Gateway struct {
	t        testing.TB
	cmd      *exec.Cmd
	Addr     string // host:port of the WebSocket listener
	Admin    string // host:port of the admin listener
	Dir      string
	logMu    sync.Mutex
	log      bytes.Buffer
	logLimit int
	exited   chan struct{}
	exitErr  error

	// Transport is how clients reach the gateway, and Front the address
	// they dial: HAProxy's frontend, or Addr itself.
	Transport Transport
	Front     string
}

type logWriter struct{ g *Gateway }

func (w logWriter) Write(p []byte) (int, error) {
	w.g.logMu.Lock()
	defer w.g.logMu.Unlock()
	if w.g.logLimit > 0 && w.g.log.Len() > w.g.logLimit { // keep the last words, not every line
		w.g.log.Reset()
	}
	return w.g.log.Write(p)
}

// Spec says what Launch runs.
type Spec struct {
	Addr, Admin string            // host:port of the listeners that Config names
	Config      Config            // top-level key -> YAML, written to gateway.yaml
	Files       map[string]string // more files for the run directory (tokens, keys)
	// Wrap, when set, changes the command, e.g. to run it through a shell
	// that lowers its file limit.
	Wrap func(bin string, args []string) (string, []string)
	// Env is added to the environment the gateway inherits (KEY=value),
	// e.g. GATEWAY_FAULT for a faultinject build.
	Env []string
	// LogLimit bounds the output kept in memory: past it the buffer starts
	// over, so the last words survive a chatty run. 0 means 4 MiB; a
	// negative value keeps everything.
	LogLimit int
	// Transport amends the config (tls, proxy) and, for the HAProxy
	// transports, starts HAProxy in front once the gateway is ready. The
	// zero value is ws:// on loopback.
	Transport Transport
}

// Start writes the config (defaults overridden by set) and credentials to a
// temp dir, runs `bin serve -c` on free loopback ports and waits until it
// is ready. The process is stopped when the test ends.
func Start(t testing.TB, bin string, set Config) *Gateway {
	t.Helper()
	return StartOn(t, bin, WS, set)
}

// StartOn is Start over transport tr: the gateway's config gets tr's tls
// and proxy settings, and HAProxy runs in front when tr says so.
func StartOn(t testing.TB, bin string, tr Transport, set Config) *Gateway {
	t.Helper()
	return LaunchOnFreePorts(t, bin, func(addr, admin string) Spec {
		cfg := DefaultConfig(addr, admin)
		for k, v := range set {
			cfg[k] = v
		}
		return Spec{
			Addr: addr, Admin: admin, Config: cfg,
			Files: map[string]string{
				"tokens.txt":  "# sha256 subject\n" + sha(Token) + " tester\n" + sha(OtherToken) + " other\n",
				"admin.token": AdminToken + "\n",
			},
			Transport: tr,
		}
	})
}

// LaunchOnFreePorts launches (Launch, in a new temp dir) the spec that mk
// makes for two free loopback ports, the WebSocket and the admin
// listener's. A port FreePort found free can be taken before the gateway
// binds it (by another test's gateway or HAProxy, or as the source port of
// an outgoing connection), which parallel transports make likelier: when
// the gateway exits at start because an address is in use, it tries again
// on other ports, three times in all.
func LaunchOnFreePorts(t testing.TB, bin string, mk func(addr, admin string) Spec) *Gateway {
	t.Helper()
	for attempt := 1; ; attempt++ {
		addr := fmt.Sprintf("127.0.0.1:%d", FreePort(t))
		admin := fmt.Sprintf("127.0.0.1:%d", FreePort(t))
		g, inUse := launch(t, bin, t.TempDir(), mk(addr, admin), attempt < 3)
		if !inUse {
			return g
		}
		t.Logf("gateway on %s (admin %s): address in use, trying other ports", addr, admin)
	}
}

// Launch writes spec's config (as gateway.yaml) and files into dir, runs
// `bin serve -c gateway.yaml` there in its own process group, and waits up
// to 15 s until the admin listener's /readyz answers 200 and the WebSocket
// listener accepts; then it starts what spec.Transport puts in front. The
// process is stopped when the test ends.
func Launch(t testing.TB, bin, dir string, spec Spec) *Gateway {
	t.Helper()
	g, _ := launch(t, bin, dir, spec, false)
	return g
}

// launch is Launch; with retryInUse, a gateway that exits at start because
// an address is in use is not a failure: launch reports it (inUse) instead.
func launch(t testing.TB, bin, dir string, spec Spec, retryInUse bool) (g *Gateway, inUse bool) {
	t.Helper()
	limit := spec.LogLimit
	if limit == 0 {
		limit = 4 << 20
	}
	g = &Gateway{t: t, Dir: dir, Addr: spec.Addr, Admin: spec.Admin, logLimit: limit, exited: make(chan struct{})}
	spec.Config, spec.Files = maps.Clone(spec.Config), maps.Clone(spec.Files)
	if spec.Files == nil {
		spec.Files = map[string]string{}
	}
	spec.Transport.Amend(t, spec.Config, spec.Files)
	var b strings.Builder
	written := map[string]bool{}
	for _, k := range keyOrder {
		if v, ok := spec.Config[k]; ok {
			fmt.Fprintf(&b, "%s: %s\n", k, v)
			written[k] = true
		}
	}
	for _, k := range slices.Sorted(maps.Keys(spec.Config)) {
		if !written[k] {
			fmt.Fprintf(&b, "%s: %s\n", k, spec.Config[k])
		}
	}
	must(t, os.WriteFile(filepath.Join(dir, "gateway.yaml"), []byte(b.String()), 0o600))
	for name, content := range spec.Files {
		must(t, os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600))
	}

	bin, args := bin, []string{"serve", "-c", filepath.Join(dir, "gateway.yaml")}
	if spec.Wrap != nil {
		bin, args = spec.Wrap(bin, args)
	}
	g.cmd = exec.Command(bin, args...)
	g.cmd.Dir = dir
	if len(spec.Env) > 0 {
		g.cmd.Env = append(os.Environ(), spec.Env...)
	}
	g.cmd.Stdout = logWriter{g}
	g.cmd.Stderr = logWriter{g}
	g.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	must(t, g.cmd.Start())
	go func() { g.exitErr = g.cmd.Wait(); close(g.exited) }()
	t.Cleanup(g.Stop)

	deadline := time.Now().Add(15 * time.Second)
	for {
		resp, err := http.Get("http://" + g.Admin + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				if c, err := net.Dial("tcp", g.Addr); err == nil {
					c.Close()
					spec.Transport.front(t, g)
					return g, false
				}
			}
		}
		select {
		case <-g.exited:
			if retryInUse && strings.Contains(g.Logs(), "address already in use") {
				return nil, true
			}
			t.Fatalf("gateway exited at start: %v\n%s", g.exitErr, g.Logs())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("gateway not ready in 15s\n%s", g.Logs())
		}
		time.Sleep(30 * time.Millisecond)
	}
}

// Logs returns what the gateway wrote so far (the last 4 MiB at most).
func (g *Gateway) Logs() string {
	g.logMu.Lock()
	defer g.logMu.Unlock()
	return g.log.String()
}

// Pid is the gateway's process id.
func (g *Gateway) Pid() int { return g.cmd.Process.Pid }

// Alive reports whether the process is still running.
func (g *Gateway) Alive() bool {
	select {
	case <-g.exited:
		return false
	default:
		return true
	}
}

// Signal sends sig to the gateway process.
func (g *Gateway) Signal(sig os.Signal) error { return g.cmd.Process.Signal(sig) }

// Exited is closed once the process has ended.
func (g *Gateway) Exited() <-chan struct{} { return g.exited }

// ExitErr is how the process ended (nil while it runs).
func (g *Gateway) ExitErr() error {
	if g.Alive() {
		return nil
	}
	return g.exitErr
}

// Stop sends SIGTERM, waits, and kills the process group after 10 s.
func (g *Gateway) Stop() {
	if !g.Alive() {
		return
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

// RSS is the gateway's resident set size in bytes (VmRSS).
func (g *Gateway) RSS() (int64, error) {
	return procField(g.Pid(), "status", "VmRSS:", 1024)
}

// ReadChars is the bytes the gateway has read through read(2) and friends
// so far (rchar in /proc/PID/io), sockets included.
func (g *Gateway) ReadChars() (int64, error) {
	return procField(g.Pid(), "io", "rchar:", 1)
}

func procField(pid int, file, key string, unit int64) (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/%s", pid, file))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if rest, ok := strings.CutPrefix(line, key); ok {
			fields := strings.Fields(rest)
			if len(fields) == 0 {
				break
			}
			v, err := strconv.ParseInt(fields[0], 10, 64)
			return v * unit, err
		}
	}
	return 0, fmt.Errorf("no %s in /proc/%d/%s", key, pid, file)
}

// Metric returns the value of one sample line of /metrics, e.g.
// `gateway_closes_total{code="1009"}`; 0 when absent.
func (g *Gateway) Metric(t testing.TB, sample string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + g.Admin + "/metrics")
	must(t, err)
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, sample+" ") {
			v, _ := strconv.ParseFloat(strings.TrimSpace(line[len(sample)+1:]), 64)
			return v
		}
	}
	return 0
}

func sha(s string) string { h := sha256.Sum256([]byte(s)); return hex.EncodeToString(h[:]) }

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
