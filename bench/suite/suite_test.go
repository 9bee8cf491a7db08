package main

import (
	"encoding/json"
	"fmt"
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
	mdHas(t, md,
		"# Benchmark run 2026-01-01 on box (full)",
		"| CPU per echo call at 100 connections: <= 1.25 x floor | gateway 10.0 us, floor 9.0 us: 1.11 x | met |",
		"| CPU per echo call at 100 connections: <= 0.85 x Node seed design | gateway 10.0 us, Node 20.0 us: 0.50 x | met |",
		"1.20 KiB just after open, 1.30 KiB after settling (15,000/15,000 established) | **not met** |",
		"- a | note",
		"| 1.00 2.00 3.00 |",
	)
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

// callRun is a closed-loop bench report with the given server CPU per call.
func callRun(conns int, us float64) *bench.Report {
	return &bench.Report{
		Mode:        "call",
		Settings:    bench.Settings{Conns: conns, Duration: "10s", Init: true, MessageSize: 64},
		Connections: bench.ConnStats{Target: conns, Established: int64(conns)},
		Calls:       &bench.CallStats{Completed: 1000, Throughput: 100},
		Latency:     []bench.LatencyRow{{Name: "call", Count: 1000, P50: 0.5, P99: 1}},
		Server:      &bench.ServerStats{USPerCall: us},
	}
}

// mdHas fails the test for each string the rendered report md lacks.
func mdHas(t *testing.T, md string, wants ...string) {
	t.Helper()
	for _, want := range wants {
		if !strings.Contains(md, want) {
			t.Errorf("report lacks %q\n%s", want, md)
		}
	}
}

func writeJSON(t *testing.T, dir, name string, v any) {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestSplitRound(t *testing.T) {
	for in, want := range map[string]struct {
		base  string
		round int
	}{"closed-small-r2": {"closed-small", 2}, "closed-large-r10": {"closed-large", 10}, "closed-small": {"closed-small", 0},
		"open-low": {"open-low", 0}, "x-r0": {"x-r0", 0}} {
		if b, r := splitRound(in); b != want.base || r != want.round {
			t.Errorf("splitRound(%q) = %q, %d", in, b, r)
		}
	}
}

// Three rounds: the targets use each server's median and the ratio of the
// medians (not the median of the per-round ratios), and the rounds table
// lists every round.
func TestReportRounds(t *testing.T) {
	dir := t.TempDir()
	for i, us := range map[string][3]float64{
		"gateway": {12, 10, 30}, // median 12
		"floor":   {10, 9, 11},  // median 10
		"seed":    {20, 40, 30}, // median 30
	} {
		for r, v := range us {
			writeJSON(t, dir, fmt.Sprintf("%s--closed-small-r%d.bench.json", i, r+1), callRun(100, v))
		}
	}
	rs, err := loadResults(dir, "")
	if err != nil {
		t.Fatal(err)
	}
	if m := rs.medianUS("gateway", "closed-small"); m != 12 {
		t.Fatalf("gateway median %v", m)
	}
	if p := rs.pick("seed", "closed-small"); p == nil || p.round != 3 {
		t.Fatalf("seed's median round: %+v", p)
	}
	if got := rs.servers("closed-small"); strings.Join(got, ",") != "gateway,floor,seed" {
		t.Fatalf("servers %v", got)
	}
	md := renderMD(rs.document())
	mdHas(t, md,
		// Per-round ratios to the floor 1.20, 1.11, 2.73 (median 1.20;
		// 12/10 of the medians = 1.20); to the seed 0.60, 0.25, 1.00
		// (median 0.60, while 12/30 of the medians = 0.40).
		"| CPU per echo call at 100 connections: <= 1.25 x floor | gateway 12.0 us, floor 10.0 us (medians of 3 rounds): 1.20 x (median of the rounds' ratios; ratio of the medians 1.20) | met |",
		"| CPU per echo call at 100 connections: <= 0.85 x Node seed design | gateway 12.0 us, Node 30.0 us (medians of 3 rounds): 0.60 x (median of the rounds' ratios; ratio of the medians 0.40) | met |",
		"| closed loop, server CPU us/call | round 1 | round 2 | round 3 | median (ratios: median of the rounds' ratios; ratio of the medians) |",
		"| gateway (builtin), 100 conns | 12.0 | 10.0 | 30.0 | 12.0 |",
		"| gateway / floor, 100 conns | 1.20 | 1.11 | 2.73 | 1.20; 1.20 |",
		"| gateway / Node seed, 100 conns | 0.60 | 0.25 | 1.00 | 0.60; 0.40 |",
		"| gateway (builtin) (median of 3 rounds) |",
		"| gateway / closed-small round 2 |",
	)
}

func f64(v float64) *float64 { return &v }

// The stdio rows: each side's own and children's CPU, the worker alone, and
// a verdict that says why when a third of supergateway's is below it.
func TestReportStdioSplit(t *testing.T) {
	dir := t.TempDir()
	g, s := callRun(100, 60), callRun(100, 90)
	g.Settings.Init, s.Settings.Init = false, false
	g.Server.USPerCallOwn, g.Server.USPerCallChildren, g.Server.ChildProcs = f64(15), f64(45), 4
	s.Server.USPerCallOwn, s.Server.USPerCallChildren, s.Server.ChildProcs = f64(40), f64(50), 1
	writeJSON(t, dir, "gateway-stdio--closed-small.bench.json", g)
	writeJSON(t, dir, "supergateway--closed-small.bench.json", s)
	writeJSON(t, dir, "floor--closed-small.bench.json", callRun(100, 9))
	writeJSON(t, dir, "everything--alone.stdiofloor.json", &StdioFloorResult{
		Command: []string{"node", "index.js", "stdio"}, Calls: 50000, Window: 256, MessageSize: 64, USPerCall: 24,
		Runs: []FloorRun{{USPerCall: 24, StartupCPUSecs: 0.4}},
		Profile: &ProfileSummary{Samples: 10, CPUMS: 100, SkippedMS: 900,
			Top: []ProfileFunc{{Function: "(garbage collector)", SelfMS: 25, Percent: 25}, {Function: "serializeMessage", Where: "sdk/stdio.js:37", SelfMS: 5, Percent: 5}}},
	})
	rs, err := loadResults(dir, "")
	if err != nil {
		t.Fatal(err)
	}
	md := renderMD(rs.document())
	mdHas(t, md,
		"gateway 60.0 us (own 15.0 + children 45.0), supergateway 90.0 us (own 40.0 + child 50.0): 0.67 x; "+
			"lower bound for any relay: floor server 9.0 us (the socket I/O any WebSocket server pays) + server-everything alone 24.0 us = 33.0 us/call; "+
			"1/3 of supergateway's is 30.0 us, **below** it | **not met**, unreachable here: 1/3 of supergateway's (30.0 us) is below the lower bound (33.0 us) |",
		"| gateway (stdio pool) | 100.0 |",
		"| 60.0 (15.0 + 45.0) |",
		"## Stdio worker alone (server-everything)",
		"**24.0 us/call** (median of 1 run(s): 24.0)",
		"| serializeMessage | sdk/stdio.js:37 | 5.0 | 5.0 |",
	)
	// Without the worker-alone run and the split (an older run's JSON).
	os.Remove(filepath.Join(dir, "everything--alone.stdiofloor.json"))
	g.Server.USPerCallOwn, g.Server.USPerCallChildren = nil, nil
	writeJSON(t, dir, "gateway-stdio--closed-small.bench.json", g)
	if rs, err = loadResults(dir, ""); err != nil {
		t.Fatal(err)
	}
	md = renderMD(rs.document())
	if !strings.Contains(md, "gateway 60.0 us (split not recorded), supergateway 90.0 us (own 40.0 + child 50.0): 0.67 x; server-everything alone not measured | **not met** |") {
		t.Errorf("report without the worker-alone run:\n%s", md)
	}
}

// Late sends make a run generator-limited; the generator's cores are
// reported with them, and alone (lag under half the p99) only noted.
func TestGeneratorLimited(t *testing.T) {
	r := &run{server: "gateway", rep: callRun(1000, 10)}
	r.rep.Latency = append(r.rep.Latency, bench.LatencyRow{Name: "send_lag", P99: 0.1})
	if got := generatorLimited(r); got != "" {
		t.Fatalf("no evidence, got %q", got)
	}
	r.gen = &generatorStats{Cores: 0.95}
	if got := generatorLimited(r); got != "; gateway's generator at 0.95 cores, its send lag p99 (0.100 ms) under half the call p99" {
		t.Fatalf("cores: %q", got)
	}
	r.rep.Latency[1].P99 = 0.9
	if got := generatorLimited(r); !strings.Contains(got, "send lag p99 (0.900 ms) is 90% of its call p99, and its generator used 0.95 cores") {
		t.Fatalf("both: %q", got)
	}
	r.gen = nil
	if got := generatorLimited(r); !strings.Contains(got, "send lag") || strings.Contains(got, "cores") {
		t.Fatalf("send lag only: %q", got)
	}
	// The section is read from the bench JSON by name.
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "gateway--open-high.bench.json"), []byte(`{"mode":"call","generator":{"cpu_secs":9.5,"cores":0.95}}`), 0o644)
	rs, err := loadResults(dir, "")
	if err != nil || rs.get("gateway", "open-high").gen == nil || rs.get("gateway", "open-high").gen.Cores != 0.95 {
		t.Fatalf("generator section not read: %v", err)
	}
}

// A small .cpuprofile: startup, a long idle stretch (the pause before the
// calls), then the calls. Only the samples after the pause count, idle
// ones apart; self time is a sample's gap to the next one.
func TestSummarizeProfile(t *testing.T) {
	prof := `{"nodes":[
	 {"id":1,"callFrame":{"functionName":"(root)","url":"","lineNumber":-1},"hitCount":0},
	 {"id":2,"callFrame":{"functionName":"compileSourceTextModule","url":"node:internal/modules/esm/utils","lineNumber":342},"hitCount":2},
	 {"id":3,"callFrame":{"functionName":"(idle)","url":"","lineNumber":-1},"hitCount":3},
	 {"id":4,"callFrame":{"functionName":"serializeMessage","url":"file:///x/node_modules/@modelcontextprotocol/sdk/dist/esm/shared/stdio.js","lineNumber":36},"hitCount":2},
	 {"id":5,"callFrame":{"functionName":"(garbage collector)","url":"","lineNumber":-1},"hitCount":1},
	 {"id":6,"callFrame":{"functionName":"","url":"","lineNumber":2},"hitCount":1},
	 {"id":7,"callFrame":{"functionName":"serializeMessage","url":"file:///x/node_modules/@modelcontextprotocol/sdk/dist/esm/shared/stdio.js","lineNumber":36},"hitCount":1}],
	 "startTime":0,"endTime":1000000,
	 "samples":    [2,     2,     3,      3,      3,      4,    5,    4,    3,   6,    7],
	 "timeDeltas": [0,     1000,  1000,   200000, 200000, 100000, 1000, 2000, 500, 100, 400]}`
	s, err := summarizeProfile([]byte(prof), 3)
	if err != nil {
		t.Fatal(err)
	}
	// Skipped: samples 0-4 (1000 + 1000 + 200000 + 200000 + 100000 µs).
	if s.SkippedMS != 502 || s.Samples != 6 {
		t.Fatalf("skipped %v ms, %d samples", s.SkippedMS, s.Samples)
	}
	// Window: 4 (1 ms), 5 (2 ms), 4 (0.5 ms), idle (0.1 ms), anonymous (0.4 ms), 7 (to the end).
	if len(s.Top) != 3 || s.Top[0].Function != "serializeMessage" || s.Top[0].Where != "@modelcontextprotocol/sdk/dist/esm/shared/stdio.js:37" {
		t.Fatalf("top %+v", s.Top)
	}
	if s.Top[1].Function != "(garbage collector)" || s.Top[1].SelfMS != 2 || s.Top[2].Function != "(anonymous)" || s.Top[2].SelfMS != 0.4 {
		t.Fatalf("top %+v", s.Top)
	}
	if s.IdleMS != 0.1 {
		t.Fatalf("idle %v", s.IdleMS)
	}
	// The last sample runs to endTime: 1e6 - 506000 µs.
	if s.Top[0].SelfMS != 1+0.5+494 || s.CPUMS != 1+2+0.5+0.4+494 {
		t.Fatalf("serializeMessage %v ms of %v", s.Top[0].SelfMS, s.CPUMS)
	}
	if _, err := summarizeProfile([]byte(`{"nodes":[]}`), 10); err == nil {
		t.Fatal("empty profile accepted")
	}
}

// Open loop in rounds: each server stands by its median round by p99, the
// 20,000/s target reads the gateway's median p99, and the 40,000/s ratio is
// the median of the rounds' own gateway/seed ratios.
func TestReportOpenRounds(t *testing.T) {
	dir := t.TempDir()
	openRun := func(rate, p99 float64) *bench.Report {
		r := callRun(1000, 20)
		r.Settings.Rate = rate
		r.Latency = []bench.LatencyRow{{Name: "call", Count: 1000, P50: 0.1, P99: p99}, {Name: "send_lag", Count: 1000, P99: 0.05}}
		return r
	}
	for i, p := range []float64{3, 1.5, 1.8} {
		writeJSON(t, dir, fmt.Sprintf("gateway--open-low-r%d.bench.json", i+1), openRun(20000, p))
	}
	// Gateway 4, 2, 9 ms; seed 40, 100, 30 ms: rounds' ratios 0.10, 0.02,
	// 0.30 (median 0.10); medians 4 and 40 (also 0.10 here).
	for i, p := range [][2]float64{{4, 40}, {2, 100}, {9, 30}} {
		writeJSON(t, dir, fmt.Sprintf("gateway--open-high-r%d.bench.json", i+1), openRun(40000, p[0]))
		writeJSON(t, dir, fmt.Sprintf("seed--open-high-r%d.bench.json", i+1), openRun(40000, p[1]))
	}
	rs, err := loadResults(dir, "")
	if err != nil {
		t.Fatal(err)
	}
	if r := rs.pickBy("gateway", "open-low", callP99); r == nil || callP99(r) != 1.8 {
		t.Fatalf("median round by p99: %+v", r)
	}
	md := renderMD(rs.document())
	mdHas(t, md,
		"| open loop, 1,000 connections, 20,000 calls/s: p99 <= 2 ms | p99 1.800 ms (median of rounds 3.000, 1.500, 1.800) (generator send lag p99 0.050 ms;",
		"| open loop, 40,000 calls/s: p99 <= 1/3 of the Node design's | gateway 4.000 ms (median of rounds 4.000, 2.000, 9.000), Node 40.000 ms (median of rounds 40.000, 100.000, 30.000): 0.10 x (median of the rounds' ratios; ratio of the medians 0.10) | met |",
		"| gateway (builtin) (median of 3 rounds by p99) | 100.0 | 0.100 | 1.800 |",
	)
}
