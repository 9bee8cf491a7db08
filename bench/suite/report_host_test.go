package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mcpgate/gateway/bench"
)

// Steal is read on the servers' CPU (meta server_cpu), shown per round next
// to each run's figure, and next to the 20,000/s verdict with the floor's p99.
func TestReportSteal(t *testing.T) {
	dir := t.TempDir()
	host := func(steal0, steal1, worst1 float64) *bench.HostStats {
		return &bench.HostStats{Secs: 10, CPUs: []bench.CPUTime{
			{CPU: 0, BusyPct: 80, StealPct: steal0, StealMaxPct: 99},
			{CPU: 1, BusyPct: 50, StealPct: steal1, StealMaxPct: worst1},
		}}
	}
	open := func(p99 float64, h *bench.HostStats) *bench.Report {
		r := callRun(1000, 20)
		r.Settings.Rate = 20000
		r.Latency = []bench.LatencyRow{{Name: "call", Count: 1000, P99: p99}, {Name: "send_lag", Count: 1000, P99: 0.05}}
		r.Host = h
		return r
	}
	writeJSON(t, dir, "gateway--open-low-r1.bench.json", open(5, host(0.5, 6, 40)))
	writeJSON(t, dir, "gateway--open-low-r2.bench.json", open(1.5, host(0.5, 0.2, 10)))
	writeJSON(t, dir, "floor--open-low-r1.bench.json", open(4, host(0.5, 5, 30)))
	writeJSON(t, dir, "floor--open-low-r2.bench.json", open(1.2, nil)) // an older JSON without the section
	c := callRun(100, 14.2)
	c.Host = host(0, 1.25, 20)
	writeJSON(t, dir, "gateway--closed-small-r1.bench.json", c)
	meta := filepath.Join(dir, "meta.tsv")
	if err := os.WriteFile(meta, []byte("server_cpu\t1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	rs, err := loadResults(dir, meta)
	if err != nil {
		t.Fatal(err)
	}
	if run, worst := rs.steal(rs.get("gateway", "open-low-r1")); run != 6 || worst != 40 {
		t.Fatalf("steal on CPU 1 = %v, %v; want 6, 40 (not CPU 0's 99)", run, worst)
	}
	md := renderMD(rs.document())
	mdHas(t, md,
		// The pick with two rounds is the lower one: gateway 1.5 ms, floor 1.2 ms.
		"p99 1.500 ms (median of rounds 5.000, 1.500) (generator send lag p99 0.050 ms; 100.0 calls/s done) (steal on CPU 1: 0.2 %, worst 100 ms 10.0 %); floor: p99 1.200 ms (median of rounds 4.000, 1.200) |",
		"| gateway (builtin), open loop, low rate (p99 ms) | 5.00; 6.0 / 40.0 | 1.50; 0.2 / 10.0 |",
		"| floor (gnet+gobwas), open loop, low rate (p99 ms) | 4.00; 5.0 / 30.0 | 1.20 |",
		"| gateway (builtin), closed loop, small (µs/call) | 14.2; 1.2 / 20.0 | - |",
		"Steal is the share of CPU 1 (the servers' CPU) that",
	)

	// Without steal figures there is no block.
	dir2 := t.TempDir()
	writeJSON(t, dir2, "gateway--open-low.bench.json", open(1, nil))
	rs2, err := loadResults(dir2, "")
	if err != nil {
		t.Fatal(err)
	}
	if md := renderMD(rs2.document()); strings.Contains(md, "Steal, round by round") || strings.Contains(md, "steal on") {
		t.Errorf("steal shown without figures:\n%s", md)
	}
}
