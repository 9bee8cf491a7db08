package bench

import (
	"bytes"
	"encoding/json"
	"regexp"
	"strings"
	"testing"
	"time"
)

func sampleReport(t *testing.T) *Report {
	t.Helper()
	var m Partial
	p := partialWith([]int64{200, 300, 400, 900, 5000}, map[string]int64{"call/timeout": 2, "hold/close 1008 Rate limit exceeded": 1}, []int64{3, 2})
	con := newHist()
	con.RecordValue(150)
	p.Hists[hConnect] = Hist{con}
	p.Sent = 7
	m.merge(p)
	m.ConnectSecs = 0.5
	o := &Options{Mode: ModeCall, URL: "ws://127.0.0.1:8080/mcp", Conns: 5, Duration: 2 * time.Second,
		Rate: 100, Pacers: 1, MessageSize: 64, Auth: "message", Subprotocol: "mcp", Timeout: time.Second, SourceIPs: 1}
	rep := buildReport(o, time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), 1, &m)
	rep.Server = serverStats("/proc (pid 1)", serverSample{RSSBytes: 10 << 20, CPUSecs: 1},
		serverSample{RSSBytes: 10<<20 + 5*2048, CPUSecs: 1.5}, serverSample{RSSBytes: 10<<20 + 5*1024, CPUSecs: 2},
		&m, 2, nil)
	rep.Host = &HostStats{Secs: 2, CPUs: []CPUTime{{CPU: 0, BusyPct: 80, SoftIRQPct: 20, StealPct: 0.5, StealMaxPct: 10}, {CPU: 1, BusyPct: 50, StealPct: 3, StealMaxPct: 40}}}
	return rep
}

func TestReportFigures(t *testing.T) {
	rep := sampleReport(t)
	if rep.Calls == nil || rep.Calls.Completed != 5 || rep.Calls.Throughput != 2.5 {
		t.Fatalf("calls %+v", rep.Calls)
	}
	if rep.ErrorTotal != 3 || rep.Errors[0].Kind != "call/timeout" {
		t.Fatalf("errors %+v", rep.Errors)
	}
	if len(rep.Latency) != 2 || rep.Latency[0].Name != hConnect || rep.Latency[1].Name != hCall {
		t.Fatalf("latency rows %+v", rep.Latency)
	}
	call := rep.Latency[1]
	if call.P50 != 0.4 || call.Max < 4.99 || call.Max > 5.01 {
		t.Fatalf("call row %+v", call)
	}
	sv := rep.Server
	if sv.KiBPerConnOpen != 2 || sv.KiBPerConnEnd != 1 || sv.USPerCall != 100000 || sv.USPerConn != 100000 {
		t.Fatalf("server %+v", sv)
	}
}

func TestReportText(t *testing.T) {
	var b bytes.Buffer
	if err := sampleReport(t).WriteText(&b); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{
		"mode=call", "rate=100/s open loop", "5/5 established",
		"p50", "p99.9", "call", "0.400",
		"errors: 3", "call/timeout", "hold/close 1008 Rate limit exceeded",
		"1.00 KiB/conn at end", "100000.00 µs/call",
		"host CPUs over the run (2.0 s, from /proc/stat): cpu0 busy 80.0% (softirq 20.0%), steal 0.5% (worst 100 ms: 10%); cpu1 busy 50.0% (softirq 0.0%), steal 3.0% (worst 100 ms: 40%)",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
}

func TestReportJSONRoundTrip(t *testing.T) {
	rep := sampleReport(t)
	var a bytes.Buffer
	if err := rep.WriteJSON(&a); err != nil {
		t.Fatal(err)
	}
	var back Report
	if err := json.Unmarshal(a.Bytes(), &back); err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	if err := back.WriteJSON(&b); err != nil {
		t.Fatal(err)
	}
	if a.String() != b.String() {
		t.Fatalf("JSON changed in a round trip:\n%s\n---\n%s", a.String(), b.String())
	}
	if !back.Hists[hCall].Equals(rep.Hists[hCall].Histogram) {
		t.Fatal("histogram lost in the JSON")
	}
	// Field names that scripts rely on.
	for _, k := range []string{`"latency_ms"`, `"p99_9"`, `"error_total"`, `"kib_per_conn_end"`, `"cpu_us_per_call"`, `"hdr"`, `"steal_max_pct"`} {
		if !strings.Contains(a.String(), k) {
			t.Errorf("JSON lacks %s", k)
		}
	}
}

func TestReportHTMLSelfContained(t *testing.T) {
	var b bytes.Buffer
	rep := sampleReport(t)
	rep.Errors = append(rep.Errors, ErrorRow{Kind: `<script>alert(1)</script>`, Count: 1})
	if err := rep.WriteHTML(&b); err != nil {
		t.Fatal(err)
	}
	h := b.String()
	if n := strings.Count(h, "<svg"); n != 2 {
		t.Errorf("%d svg plots, want 2 (latency, throughput)", n)
	}
	if !strings.Contains(h, "<polyline") || !strings.Contains(h, ">99%<") {
		t.Error("latency plot lacks its curve or percentile axis")
	}
	if strings.Contains(h, "<script>alert") {
		t.Error("error kind not escaped")
	}
	// No external asset of any kind: no URL-bearing attribute, no CSS url(),
	// no http(s) address at all.
	if m := regexp.MustCompile(`(?i)(src|href)\s*=|url\(|@import|https?://`).FindString(h); m != "" {
		t.Errorf("HTML references something outside itself: %q", m)
	}
	if !strings.Contains(h, "<td>cpu1 over the run</td><td>busy 50.0 % (softirq 0.0 %), steal 3.0 % (worst 100 ms window: 40.0 %)</td>") {
		t.Error("HTML lacks the host CPUs")
	}
	if !strings.Contains(h, "<style>") || !strings.Contains(h, `id="report"`) {
		t.Error("HTML lacks inline CSS or the embedded JSON")
	}
}

func TestPctLabel(t *testing.T) {
	for d, want := range map[float64]string{0: "0%", 1: "90%", 2: "99%", 3: "99.9%", 5: "99.999%"} {
		if got := pctLabel(d); got != want {
			t.Errorf("pctLabel(%v) = %q, want %q", d, got, want)
		}
	}
}
