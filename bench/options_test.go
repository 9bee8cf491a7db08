package bench

import (
	"bytes"
	"strings"
	"testing"
)

func TestOptionBounds(t *testing.T) {
	t.Setenv("GATEWAY_BENCH_TOKEN", "")
	base := []string{"--token", "t"}
	bad := [][]string{
		{"--conns", "0"},
		{"--conns", "100001"},
		{"--duration", "2h"},
		{"--mode", "call", "--duration", "0s"},
		{"--rate", "-1"},
		{"--rate", "2000000"},
		{"--inflight", "0"},
		{"--mode", "flood"},
		{"--auth", "cookie"},
		{"--per-process", "19000"},
		{"--source-ips", "255"},
		{"--tool", `a"b`},
		{"--server-pid", "12x"},
		{"--server-pid", "1", "--metrics-url", "http://127.0.0.1:9090/metrics"},
		{"stray"},
	}
	for _, args := range bad {
		if _, err := parseOptions(append(append([]string{}, base...), args...), &bytes.Buffer{}); err == nil {
			t.Errorf("%v accepted", args)
		}
	}
	if _, err := parseOptions([]string{"--mode", "idle"}, &bytes.Buffer{}); err == nil {
		t.Error("message auth without a token accepted")
	}
	o, err := parseOptions([]string{"--auth", "none", "--conns", "40000", "--server-pid", "5,6"}, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if o.workers() != 3 || len(o.ServerPIDs) != 2 {
		t.Errorf("workers %d pids %v", o.workers(), o.ServerPIDs)
	}
}

func TestMainRefusesRemoteTarget(t *testing.T) {
	var out, errb bytes.Buffer
	code := Main([]string{"--url", "ws://192.0.2.1:8080/mcp", "--auth", "none", "--quiet"}, &out, &errb)
	if code != 2 || !strings.Contains(errb.String(), "--allow-remote") {
		t.Fatalf("exit %d, stderr %q", code, errb.String())
	}
	code = Main([]string{"--worker"}, &out, &errb)
	if code != 2 {
		t.Fatalf("--worker without the parent: exit %d", code)
	}
	out.Reset()
	if Main([]string{"-h"}, &out, &errb) != 0 || !strings.Contains(out.String(), "open loop") {
		t.Fatal("help: usage on stdout (SPEC 12)")
	}
}
