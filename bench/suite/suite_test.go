package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mcpgate/gateway/bench"
)

func TestSummarizeLifetimes(t *testing.T) {
	// Samples every 0.1 s; three sockets open at samples 1, 2 and 3 and
	// close after samples 51, 52 and 53 (seen last there); one opened at 4
	// is still open at the last sample (60).
	times := make([]float64, 61)
	for i := range times {
		times[i] = float64(i) / 10
	}
	lives := [][2]int{{1, 51}, {2, 52}, {3, 53}, {4, 60}}
	r := &WatchResult{}
	summarize(r, times, func(yield func(int, int) bool) {
		for _, l := range lives {
			if !yield(l[0], l[1]) {
				return
			}
		}
	})
	if r.Tracked != 4 || r.Closed != 3 || r.StillOpen != 1 {
		t.Fatalf("tracked %d closed %d still open %d", r.Tracked, r.Closed, r.StillOpen)
	}
	if r.AllClosedS != nil {
		t.Fatalf("all closed at %v, but one is still open", *r.AllClosedS)
	}
	// Lower bound 5.0 s, upper bound 5.2 s.
	if r.LifetimeMaxLowS != 5 || r.LifetimeMaxS != 5.2 || r.LifetimeP50S != 5.1 {
		t.Fatalf("lifetimes: low %v high %v p50 %v", r.LifetimeMaxLowS, r.LifetimeMaxS, r.LifetimeP50S)
	}

	r = &WatchResult{}
	summarize(r, times, func(yield func(int, int) bool) {
		for _, l := range lives[:3] {
			if !yield(l[0], l[1]) {
				return
			}
		}
	})
	if r.AllClosedS == nil || *r.AllClosedS != 5.4 || r.ClosedAfter == nil || *r.ClosedAfter != 5.1 {
		t.Fatalf("all closed %v after %v", r.AllClosedS, r.ClosedAfter)
	}
	if r.FirstOpenS != 0.1 || r.LastOpenS != 0.3 {
		t.Fatalf("first %v last %v", r.FirstOpenS, r.LastOpenS)
	}
}

func TestParsePPID(t *testing.T) {
	ppid, ok := parsePPID([]byte("123 (a (weird) name) S 45 123 123 0 -1"))
	if !ok || ppid != 45 {
		t.Fatalf("got %d %v", ppid, ok)
	}
}

func TestReport(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, v any) {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	call := func(us float64, p99 float64) *bench.Report {
		return &bench.Report{
			Mode:        "call",
			Settings:    bench.Settings{Conns: 100, Duration: "10s", Init: true},
			Connections: bench.ConnStats{Target: 100, Established: 100},
			Calls:       &bench.CallStats{Completed: 1000, Throughput: 100},
			Latency:     []bench.LatencyRow{{Name: "call", Count: 1000, P50: 0.5, P99: p99}},
			Server:      &bench.ServerStats{USPerCall: us},
		}
	}
	write("gateway--closed-small.bench.json", call(10, 1))
	write("floor--closed-small.bench.json", call(9, 1))
	write("seed--closed-small.bench.json", call(20, 2))
	write("gateway--idle.bench.json", &bench.Report{
		Mode:        "idle",
		Settings:    bench.Settings{Conns: 15000, Init: true},
		Connections: bench.ConnStats{Target: 15000, Established: 15000},
		Server:      &bench.ServerStats{KiBPerConnOpen: 1.2, KiBPerConnEnd: 1.3},
	})
	meta := filepath.Join(dir, "meta.tsv")
	os.WriteFile(meta, []byte("date\t2026-01-01\nhost\tbox\nmode\tfull\nnote\ta | note\nload\tgateway--idle\t1.00 2.00 3.00\n"), 0o644)
	rs, err := loadResults(dir, meta)
	if err != nil {
		t.Fatal(err)
	}
	md := renderMD(rs.document())
	for _, want := range []string{
		"# Benchmark run 2026-01-01 on box (full)",
		"| CPU per echo call at 100 connections: <= 1.25 x floor | gateway 10.0 us, floor 9.0 us: 1.11 x | met |",
		"| CPU per echo call at 100 connections: <= 0.85 x Node seed design | gateway 10.0 us, Node 20.0 us: 0.50 x | met |",
		"1.20 KiB just after open, 1.30 KiB after settling (15,000/15,000 established) | **not met** |",
		"- a | note",
		"| 1.00 2.00 3.00 |",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("report lacks %q\n%s", want, md)
		}
	}
	h, err := renderHTML(rs.document(), rs)
	if err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{"<script src", "<link", "http://", "https://"} {
		if strings.Contains(h, bad) {
			t.Errorf("HTML report loads something from outside: %q", bad)
		}
	}
	if !strings.Contains(h, "<b>not met</b>") || !strings.Contains(h, "<iframe") {
		t.Error("HTML report lacks its verdicts or its embedded runs")
	}
}

func TestThousands(t *testing.T) {
	for in, want := range map[int64]string{0: "0", 999: "999", 1000: "1,000", 60000: "60,000", -1234567: "-1,234,567"} {
		if got := thousands(in); got != want {
			t.Errorf("thousands(%d) = %q, want %q", in, got, want)
		}
	}
}
