package wsraw

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// RequireBinary finds a system program a test needs (haproxy,
// redis-server; scripts/deps.sh installs them). Missing, it skips the test,
// except with CI=true, where it fails it: CI must run every row.
func RequireBinary(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s not installed (scripts/deps.sh installs it)", name)
		}
		t.Skipf("%s not installed", name)
	}
	return p
}

// HAServer is one backend server line: its address and the options after
// it ("send-proxy-v2", "check port 9090").
type HAServer struct {
	Addr    string
	Options string
}

// HAProxy describes an HAProxy in TCP mode: one frontend on a free loopback
// port, one backend of Servers.
type HAProxy struct {
	Servers []HAServer
	// Backend holds more lines for the backend section (balance, health
	// checks), each indented by two spaces.
	Backend string
	// Defaults holds more lines for the defaults section.
	Defaults string
	// MaxConn is the global maxconn; 0 means 4000.
	MaxConn int
	// IPv6: the frontend listens on [::1] instead of 127.0.0.1, so clients
	// can dial it from IPv6 addresses (the PROXY header then carries one).
	IPv6 bool
}

// StartHAProxy runs HAProxy as described, on a free loopback port (without
// SO_REUSEPORT, so that two HAProxies never share one), and
// returns its frontend address once it listens (seen in /proc/net/tcp,
// so that waiting makes no connection through it). HAProxy is killed when
// the test ends. The timeouts (client and server 120 s, connect 2 s) are
// longer than any row waits.
func StartHAProxy(t testing.TB, hp HAProxy) string {
	t.Helper()
	bin := RequireBinary(t, "haproxy")
	for attempt := 1; ; attempt++ {
		front, inUse := startHAProxy(t, bin, hp, attempt < 3)
		if !inUse {
			return front
		}
		t.Logf("haproxy on %s: address in use, trying another port", front)
	}
}

// startHAProxy is StartHAProxy on one free port; with retryInUse, a port
// taken before HAProxy could bind it is reported (inUse), not a failure.
func startHAProxy(t testing.TB, bin string, hp HAProxy, retryInUse bool) (front string, inUse bool) {
	t.Helper()
	port := FreePort(t)
	front = fmt.Sprintf("127.0.0.1:%d", port)
	if hp.IPv6 {
		front = fmt.Sprintf("[::1]:%d", port)
	}
	maxconn := hp.MaxConn
	if maxconn == 0 {
		maxconn = 4000
	}
	var b strings.Builder
	fmt.Fprintf(&b, `global
  maxconn %d
  nbthread 1
  noreuseport
defaults
  mode tcp
  timeout connect 2s
  timeout client 120s
  timeout server 120s
%sfrontend fe
  bind %s
  default_backend be
backend be
%s`, maxconn, hp.Defaults, front, hp.Backend)
	for i, s := range hp.Servers {
		fmt.Fprintf(&b, "  server s%d %s %s\n", i+1, s.Addr, s.Options)
	}
	cfg := filepath.Join(t.TempDir(), "haproxy.cfg")
	must(t, os.WriteFile(cfg, []byte(b.String()), 0o600))
	cmd := exec.Command(bin, "-f", cfg, "-db")
	// Killed with the test process too, should that die before cleanup
	// (a -timeout panic).
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	out := &SyncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	must(t, cmd.Start())
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() { _ = cmd.Process.Kill(); <-exited })
	deadline := time.Now().Add(10 * time.Second)
	for !listening(port, hp.IPv6) {
		select {
		case <-exited:
			if retryInUse && strings.Contains(out.String(), "Address already in use") {
				return front, true
			}
			t.Fatalf("haproxy exited at start:\n%s\nconfig:\n%s", out, b.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("haproxy not listening on %s after 10s:\n%s", front, out)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return front, false
}

// listening reports whether a socket listens on 127.0.0.1:port (or
// [::1]:port with v6), from /proc/net/tcp or tcp6 (state 0A is LISTEN).
func listening(port int, v6 bool) bool {
	file, want := "/proc/net/tcp", fmt.Sprintf("0100007F:%04X", port)
	if v6 {
		file, want = "/proc/net/tcp6", fmt.Sprintf("00000000000000000000000001000000:%04X", port)
	}
	f, err := os.Open(file)
	if err != nil {
		return false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) > 3 && fields[1] == want && fields[3] == "0A" {
			return true
		}
	}
	return false
}

// SyncBuffer collects a child process's output for failure messages: safe
// for concurrent writes, and it stops keeping bytes past 1 MiB.
type SyncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.b.Len() > 1<<20 {
		return len(p), nil
	}
	return s.b.Write(p)
}

func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
