package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"html"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/mcpgate/gateway/bench"
)

// Result files in the results directory, written by run.sh:
//
//	<server>--<scenario>.bench.json      gateway bench --out-json
//	<server>--<scenario>.sockwatch.json  suite sockwatch
//	<server>--<scenario>.bigframe.json   suite bigframe
//
// and the run's meta file: one "key<TAB>value" per line (keys may repeat).

// Servers and scenarios in report order.
var (
	serverOrder = []string{"gateway", "gateway-tls", "gateway-stdio", "gateway-x4", "floor", "seed", "supergateway"}
	serverNames = map[string]string{
		"gateway":       "gateway (builtin)",
		"gateway-tls":   "gateway (builtin, TLS)",
		"gateway-stdio": "gateway (stdio pool)",
		"gateway-x4":    "gateway x4 (SO_REUSEPORT)",
		"floor":         "floor (gnet+gobwas)",
		"seed":          "Node seed design (ws)",
		"supergateway":  "supergateway 4.0.0 (ws)",
	}
	scenarioOrder = []string{"idle", "idle-init", "attack", "closed-small", "closed-large", "open-low", "open-high", "bigframe"}
)

type run struct {
	server, scenario string
	rep              *bench.Report
	watch            *WatchResult
	big              *BigframeResult
	mid              *MidholdResult
}

type results struct {
	meta     map[string][]string
	runs     map[string]*run // server--scenario
	loadRuns map[string]string
}

func (rs *results) get(server, scenario string) *run { return rs.runs[server+"--"+scenario] }

func (rs *results) meta1(k string) string {
	if v := rs.meta[k]; len(v) > 0 {
		return v[len(v)-1]
	}
	return ""
}

func loadResults(dir, metaPath string) (*results, error) {
	rs := &results{meta: map[string][]string{}, runs: map[string]*run{}, loadRuns: map[string]string{}}
	if metaPath != "" {
		b, err := os.ReadFile(metaPath)
		if err != nil {
			return nil, err
		}
		sc := bufio.NewScanner(bytes.NewReader(b))
		for sc.Scan() {
			k, v, ok := strings.Cut(sc.Text(), "\t")
			if !ok {
				continue
			}
			if k == "load" {
				if name, l, ok := strings.Cut(v, "\t"); ok {
					rs.loadRuns[name] = l
				}
				continue
			}
			rs.meta[k] = append(rs.meta[k], v)
		}
	}
	files, err := filepath.Glob(filepath.Join(dir, "*--*.json"))
	if err != nil {
		return nil, err
	}
	for _, f := range files {
		base := filepath.Base(f)
		name, kind, ok := strings.Cut(strings.TrimSuffix(base, ".json"), ".")
		if !ok {
			continue
		}
		server, scenario, _ := strings.Cut(name, "--")
		r := rs.runs[name]
		if r == nil {
			r = &run{server: server, scenario: scenario}
			rs.runs[name] = r
		}
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		switch kind {
		case "bench":
			r.rep = &bench.Report{}
			err = json.Unmarshal(b, r.rep)
		case "sockwatch":
			r.watch = &WatchResult{}
			err = json.Unmarshal(b, r.watch)
		case "bigframe":
			r.big = &BigframeResult{}
			err = json.Unmarshal(b, r.big)
		case "midhold":
			r.mid = &MidholdResult{}
			err = json.Unmarshal(b, r.mid)
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", base, err)
		}
	}
	return rs, nil
}

// sortedRuns returns the runs in report order.
func (rs *results) sortedRuns() []*run {
	idx := func(list []string, s string) int {
		for i, x := range list {
			if x == s {
				return i
			}
		}
		return len(list)
	}
	var out []*run
	for _, r := range rs.runs {
		out = append(out, r)
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if x, y := idx(scenarioOrder, a.scenario), idx(scenarioOrder, b.scenario); x != y {
			return x < y
		}
		if x, y := idx(serverOrder, a.server), idx(serverOrder, b.server); x != y {
			return x < y
		}
		return a.server+a.scenario < b.server+b.scenario
	})
	return out
}

// A doc is rendered both as Markdown and as HTML.
type block struct {
	heading string // "## ..." level 2 when set
	text    []string
	table   *table
}

type table struct {
	head []string
	rows [][]string
}

func (t *table) add(cells ...string) { t.rows = append(t.rows, cells) }

// Figure helpers: "-" for missing values.
func f1(v float64) string { return fmtF(v, 1) }
func f2(v float64) string { return fmtF(v, 2) }
func f3(v float64) string { return fmtF(v, 3) }
func fmtF(v float64, d int) string {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return "-"
	}
	return fmt.Sprintf("%.*f", d, v)
}
func thousands(v int64) string {
	s := fmt.Sprint(v)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}
func mib(b int64) string { return fmt.Sprintf("%.1f", float64(b)/(1<<20)) }

func latency(rep *bench.Report, name string) *bench.LatencyRow {
	if rep == nil {
		return nil
	}
	for i := range rep.Latency {
		if rep.Latency[i].Name == name {
			return &rep.Latency[i]
		}
	}
	return nil
}

func errorText(rep *bench.Report) string {
	if rep == nil || len(rep.Errors) == 0 {
		return "none"
	}
	var parts []string
	for _, e := range rep.Errors {
		parts = append(parts, fmt.Sprintf("%s %s", thousands(e.Count), e.Kind))
	}
	if len(parts) > 4 {
		parts = append(parts[:4], fmt.Sprintf("(%d more kinds)", len(parts)-4))
	}
	return strings.Join(parts, "; ")
}

const na = "-"

// value extractors, NaN when absent.
func callsPerSec(r *run) float64 {
	if r == nil || r.rep == nil || r.rep.Calls == nil {
		return math.NaN()
	}
	return r.rep.Calls.Throughput
}
func usPerCall(r *run) float64 {
	if r == nil || r.rep == nil || r.rep.Server == nil || r.rep.Calls == nil || r.rep.Calls.Completed == 0 {
		return math.NaN()
	}
	return r.rep.Server.USPerCall
}
func pct(r *run, name string, p func(*bench.LatencyRow) float64) float64 {
	if r == nil {
		return math.NaN()
	}
	if l := latency(r.rep, name); l != nil {
		return p(l)
	}
	return math.NaN()
}
func p50(l *bench.LatencyRow) float64  { return l.P50 }
func p99(l *bench.LatencyRow) float64  { return l.P99 }
func p999(l *bench.LatencyRow) float64 { return l.P999 }
func kibOpen(r *run) float64 {
	if r == nil || r.rep == nil || r.rep.Server == nil || r.rep.Connections.Established == 0 {
		return math.NaN()
	}
	return r.rep.Server.KiBPerConnOpen
}
func kibEnd(r *run) float64 {
	if r == nil || r.rep == nil || r.rep.Server == nil || r.rep.Connections.Established == 0 {
		return math.NaN()
	}
	return r.rep.Server.KiBPerConnEnd
}
func established(r *run) string {
	if r == nil || r.rep == nil {
		return na
	}
	c := r.rep.Connections
	s := fmt.Sprintf("%s/%s", thousands(c.Established), thousands(int64(c.Target)))
	if c.Lost > 0 {
		s += fmt.Sprintf(" (%s lost)", thousands(c.Lost))
	}
	return s
}

func ratio(a, b float64) float64 {
	if math.IsNaN(a) || math.IsNaN(b) || b == 0 {
		return math.NaN()
	}
	return a / b
}

// verdict compares v against a bound: "met" when v <= bound.
func verdict(v, bound float64) string {
	switch {
	case math.IsNaN(v):
		return "not measured"
	case v <= bound:
		return "met"
	default:
		return "**not met**"
	}
}

func (rs *results) servers(scenario string) []string {
	var out []string
	for _, s := range serverOrder {
		if rs.get(s, scenario) != nil {
			out = append(out, s)
		}
	}
	return out
}

func (rs *results) document() []block {
	var doc []block
	title := fmt.Sprintf("# Benchmark run %s on %s (%s)", rs.meta1("date"), rs.meta1("host"), rs.meta1("mode"))
	doc = append(doc, block{text: []string{title}})
	intro := []string{
		fmt.Sprintf("Made by `%s` in %s s. Every server was started fresh for each scenario and measured by "+
			"`gateway bench` with `--server-pid` (RSS and CPU of the server and its child processes, from /proc).",
			rs.meta1("command"), rs.meta1("duration_s")),
		"Pinning: " + rs.meta1("pinning") + ".",
		fmt.Sprintf("Load average (1, 5, 15 min) before the run: %s; after: %s. The machine was shared with other "+
			"engineers' test runs, so every figure is noisy; the per-run load average is in the last table.",
			rs.meta1("load_before"), rs.meta1("load_after")),
	}
	if rs.meta1("mode") == "quick" {
		intro = append(intro, "**Quick run** (`make bench-quick`): the counts are too small for the per-connection "+
			"figures and the verdicts below to mean anything; it checks that the suite works end to end.")
	}
	doc = append(doc, block{text: intro})

	mt := &table{head: []string{"machine", ""}}
	for _, k := range []string{"cpu", "cores", "memory", "kernel", "os", "go", "node", "npm", "ws", "supergateway", "server_everything", "fd_limit", "port_range", "gateway_build"} {
		if v := rs.meta1(k); v != "" {
			mt.add(k, v)
		}
	}
	doc = append(doc, block{heading: "Machine", table: mt})
	doc = append(doc, rs.targetBlocks()...)
	doc = append(doc, rs.figureBlocks()...)
	doc = append(doc, rs.detailBlocks()...)
	var notes []string
	for _, n := range rs.meta["note"] {
		notes = append(notes, "- "+n)
	}
	for _, n := range rs.meta["fail"] {
		notes = append(notes, "- **failed:** "+n)
	}
	if len(notes) > 0 {
		doc = append(doc, block{heading: "Notes, and what could not be measured", text: notes})
	}
	return doc
}

// targetBlocks: issue 5's targets against this run.
func (rs *results) targetBlocks() []block {
	t := &table{head: []string{"target (issue 5)", "measured in this run", "verdict"}}
	gwIdle := rs.get("gateway", "idle")
	if gwIdle != nil && gwIdle.rep != nil {
		o, e := kibOpen(gwIdle), kibEnd(gwIdle)
		t.add(fmt.Sprintf("idle: <= 1.25 KiB RSS per authenticated plaintext connection at %s", thousands(int64(gwIdle.rep.Settings.Conns))),
			fmt.Sprintf("%s KiB just after open, %s KiB after settling (%s established)", f2(o), f2(e), established(gwIdle)),
			verdict(math.Max(o, e), 1.25))
	} else {
		t.add("idle: <= 1.25 KiB per plaintext connection at 15,000", na, "not measured")
	}
	if r := rs.get("gateway-tls", "idle"); r != nil && r.rep != nil {
		o, e := kibOpen(r), kibEnd(r)
		t.add(fmt.Sprintf("idle: <= 10 KiB per TLS connection at %s", thousands(int64(r.rep.Settings.Conns))),
			fmt.Sprintf("%s KiB just after open, %s KiB after settling (%s established)", f2(o), f2(e), established(r)),
			verdict(math.Max(o, e), 10))
	} else {
		t.add("idle: <= 10 KiB per TLS connection at 10,000", na, "not measured")
	}
	if r := rs.get("gateway-x4", "idle"); r != nil && r.rep != nil {
		v := "met"
		if r.rep.Connections.Established < int64(r.rep.Settings.Conns) || r.rep.Connections.Lost > 0 {
			v = "**not met**"
		}
		procs := 0
		if r.rep.Server != nil {
			procs = r.rep.Server.Procs
		}
		spread := ""
		if r.mid != nil {
			var parts []string
			for _, g := range r.mid.Gained {
				parts = append(parts, thousands(int64(g)))
			}
			spread = " (" + strings.Join(parts, " + ") + " connections per process at mid-hold)"
		}
		t.add(fmt.Sprintf("%s connections held by 4 gateway processes sharing one port (SO_REUSEPORT)", thousands(int64(r.rep.Settings.Conns))),
			fmt.Sprintf("%s established over %d processes%s; %s KiB/conn after open, %s after settling", established(r), procs, spread, f2(kibOpen(r)), f2(kibEnd(r))), v)
	} else {
		t.add("60,000 connections over 4 gateway processes (SO_REUSEPORT)", na, "not measured")
	}
	for _, sc := range []string{"closed-small", "closed-large"} {
		g, f, s := rs.get("gateway", sc), rs.get("floor", sc), rs.get("seed", sc)
		conns := "?"
		if g != nil && g.rep != nil {
			conns = thousands(int64(g.rep.Settings.Conns))
		}
		rf, rsd := ratio(usPerCall(g), usPerCall(f)), ratio(usPerCall(g), usPerCall(s))
		t.add(fmt.Sprintf("CPU per echo call at %s connections: <= 1.25 x floor", conns),
			fmt.Sprintf("gateway %s us, floor %s us: %s x", f1(usPerCall(g)), f1(usPerCall(f)), f2(rf)), verdict(rf, 1.25))
		t.add(fmt.Sprintf("CPU per echo call at %s connections: <= 0.85 x Node seed design", conns),
			fmt.Sprintf("gateway %s us, Node %s us: %s x", f1(usPerCall(g)), f1(usPerCall(s)), f2(rsd)), verdict(rsd, 0.85))
	}
	for _, sc := range []string{"closed-small", "closed-large"} {
		g, s := rs.get("gateway-stdio", sc), rs.get("supergateway", sc)
		if g == nil && s == nil {
			continue
		}
		conns := "?"
		if g != nil && g.rep != nil {
			conns = thousands(int64(g.rep.Settings.Conns))
		}
		r := ratio(usPerCall(g), usPerCall(s))
		t.add(fmt.Sprintf("relayed to a stdio pool of server-everything, %s connections: <= 1/3 of supergateway's CPU per call (children included)", conns),
			fmt.Sprintf("gateway %s us, supergateway %s us: %s x", f1(usPerCall(g)), f1(usPerCall(s)), f2(r)), verdict(r, 1.0/3))
	}
	if g := rs.get("gateway", "open-low"); g != nil && g.rep != nil {
		v := pct(g, "call", p99)
		t.add(fmt.Sprintf("open loop, %s connections, %s calls/s: p99 <= 2 ms", thousands(int64(g.rep.Settings.Conns)), thousands(int64(g.rep.Settings.Rate))),
			fmt.Sprintf("p99 %s ms (generator send lag p99 %s ms; %s calls/s done)%s", f3(v), f3(pct(g, "send_lag", p99)), f1(callsPerSec(g)), generatorLimited(g)),
			verdict(v, 2))
	} else {
		t.add("open loop, 1,000 connections, 20,000 calls/s: p99 <= 2 ms", na, "not measured")
	}
	if g, s := rs.get("gateway", "open-high"), rs.get("seed", "open-high"); g != nil && g.rep != nil {
		r := ratio(pct(g, "call", p99), pct(s, "call", p99))
		t.add(fmt.Sprintf("open loop, %s calls/s: p99 <= 1/3 of the Node design's", thousands(int64(g.rep.Settings.Rate))),
			fmt.Sprintf("gateway %s ms, Node %s ms: %s x%s%s", f3(pct(g, "call", p99)), f3(pct(s, "call", p99)), f2(r), generatorLimited(g), generatorLimited(s)),
			verdict(r, 1.0/3))
	} else {
		t.add("open loop, 40,000 calls/s: p99 <= 1/3 of the Node design's", na, "not measured")
	}
	if a := rs.get("gateway", "attack"); a != nil && a.rep != nil {
		kib := math.NaN()
		if a.watch != nil {
			kib = a.watch.KiBPerConnPeak
		}
		t.add(fmt.Sprintf("attack: %s connections that never authenticate cost <= 1.25 KiB each", thousands(int64(a.rep.Settings.Conns))),
			fmt.Sprintf("%s KiB at the peak (%s open at once); bench: %s KiB after open", f2(kib), peakOpen(a), f2(kibOpen(a))),
			verdict(kib, 1.25))
		life, txt := math.NaN(), "no socket watch"
		if w := a.watch; w != nil {
			if w.StillOpen == 0 && w.Closed > 0 {
				life = w.LifetimeMaxS
			}
			txt = fmt.Sprintf("longest life <= %s s (p50 %s s, %s closed, %s still open); all closed %s s after the last opened",
				f2(w.LifetimeMaxS), f2(w.LifetimeP50S), thousands(int64(w.Closed)), thousands(int64(w.StillOpen)), optF(w.ClosedAfter))
		}
		t.add("attack: all closed within the auth deadline (5 s) + 1 s", txt, verdict(life, 6))
	} else {
		t.add("attack: 10,000 unauthenticated connections", na, "not measured")
	}
	if b := rs.get("gateway", "bigframe"); b != nil && b.big != nil {
		kib := b.big.KiBPerConn
		t.add("a frame header declaring 2 GiB costs 0 payload bytes",
			fmt.Sprintf("%d authenticated connections each sent a 2 GiB header + %s KiB: RSS growth %s KiB/conn; %s",
				b.big.Authenticated, f1(float64(b.big.PayloadPerConn)/1024), f2(kib), closesText(b.big.Closes)),
			verdict(kib, float64(b.big.PayloadPerConn)/1024/16))
	}
	text := []string{"Verdicts are for this one run on a shared, noisy machine; \"met\" for the 2 GiB header means the RSS growth stayed " +
		"below 1/16 of the payload bytes sent after the header (the kernel's socket buffers hold those bytes, not the process)."}
	return []block{{heading: "Issue 5 targets", table: t}, {text: text}}
}

// generatorLimited warns when the load generator's own send lag is a large
// part of the call latency: then the figure says more about the generator
// (or whatever else ran on its core) than about the server.
func generatorLimited(r *run) string {
	lag, call := pct(r, "send_lag", p99), pct(r, "call", p99)
	if math.IsNaN(lag) || math.IsNaN(call) || lag < call/2 {
		return ""
	}
	return fmt.Sprintf("; **generator-limited**: %s's send lag p99 (%s ms) is %.0f%% of its call p99", r.server, f3(lag), 100*lag/call)
}

func peakOpen(r *run) string {
	if r.watch == nil {
		return na
	}
	return thousands(int64(r.watch.PeakOpen))
}

func optF(p *float64) string {
	if p == nil {
		return "never"
	}
	return f2(*p)
}

func closesText(m map[string]int64) string {
	var parts []string
	for k, v := range m {
		parts = append(parts, fmt.Sprintf("%s %s", thousands(v), k))
	}
	sort.Strings(parts)
	return strings.Join(parts, ", ")
}

// figureBlocks: one table per scenario, servers as rows.
func (rs *results) figureBlocks() []block {
	var out []block
	if ss := rs.servers("idle"); len(ss) > 0 {
		t := &table{head: []string{"(a) idle", "auth, initialize", "conns established", "connect s", "RSS before MiB", "RSS after open MiB", "RSS settled MiB", "KiB/conn after open", "KiB/conn settled", "CPU us/conn (connect)"}}
		for _, sc := range []string{"idle", "idle-init"} {
			for _, s := range rs.servers(sc) {
				r := rs.get(s, sc)
				name := serverNames[s]
				if sc != "idle" {
					name += " (" + sc + ")"
				}
				if r.rep == nil || r.rep.Server == nil {
					t.add(name, na, established(r), na, na, na, na, na, na, na)
					continue
				}
				v := r.rep.Server
				how := r.rep.Settings.Auth + ", "
				if r.rep.Settings.Init {
					how += "initialize"
				} else {
					how += "no initialize"
				}
				t.add(name, how, established(r), f1(r.rep.Connections.ConnectSecs), mib(v.RSSBefore), mib(v.RSSConnected), mib(v.RSSEnd), f2(kibOpen(r)), f2(kibEnd(r)), f1(v.USPerConn))
			}
		}
		out = append(out, block{heading: "Figures", table: t},
			block{text: []string{"\"After open\" is sampled 1 s after the last connection is up; \"settled\" at the end of the hold. " +
				"The Node servers (seed, supergateway) run with `--expose-gc` and get a full GC (SIGUSR2) halfway through the hold, " +
				"so their settled figure is \"once V8 has collected\"; the Go servers are left alone."}})
	}
	for _, sc := range []string{"closed-small", "closed-large"} {
		ss := rs.servers(sc)
		if len(ss) == 0 {
			continue
		}
		r0 := rs.get(ss[0], sc)
		label := "(b) closed loop tools/call echo"
		if r0.rep != nil {
			label = fmt.Sprintf("(b) closed loop echo, %s conns, %s", thousands(int64(r0.rep.Settings.Conns)), r0.rep.Settings.Duration)
		}
		t := &table{head: []string{label, "calls/s", "p50 ms", "p90 ms", "p99 ms", "p99.9 ms", "server CPU us/call", "server cores", "errors"}}
		for _, s := range ss {
			r := rs.get(s, sc)
			cores := math.NaN()
			if r.rep != nil && r.rep.Server != nil {
				cores = r.rep.Server.CoresDuringRun
			}
			t.add(serverNames[s], f1(callsPerSec(r)), f3(pct(r, "call", p50)), f3(pct(r, "call", func(l *bench.LatencyRow) float64 { return l.P90 })),
				f3(pct(r, "call", p99)), f3(pct(r, "call", p999)), f1(usPerCall(r)), f2(cores), errorText(r.rep))
		}
		out = append(out, block{table: t})
	}
	for _, sc := range []string{"open-low", "open-high"} {
		ss := rs.servers(sc)
		if len(ss) == 0 {
			continue
		}
		r0 := rs.get(ss[0], sc)
		label := "(c) open loop"
		if r0.rep != nil {
			label = fmt.Sprintf("(c) open loop, %s conns, %s calls/s, %s", thousands(int64(r0.rep.Settings.Conns)), thousands(int64(r0.rep.Settings.Rate)), r0.rep.Settings.Duration)
		}
		t := &table{head: []string{label, "calls/s done", "p50 ms", "p99 ms", "p99.9 ms", "max ms", "send lag p99 ms", "server CPU us/call", "errors"}}
		for _, s := range ss {
			r := rs.get(s, sc)
			t.add(serverNames[s], f1(callsPerSec(r)), f3(pct(r, "call", p50)), f3(pct(r, "call", p99)), f3(pct(r, "call", p999)),
				f3(pct(r, "call", func(l *bench.LatencyRow) float64 { return l.Max })), f3(pct(r, "send_lag", p99)), f1(usPerCall(r)), errorText(r.rep))
		}
		out = append(out, block{table: t})
	}
	if len(rs.servers("open-low")) > 0 {
		out = append(out, block{text: []string{"Open loop: a call's latency runs from the instant it was due, so the generator's own lateness " +
			"(send lag: due to actually sent) is inside it. When a server's send lag p99 is not small against its call p99, the " +
			"generator's core (CPU 0, shared with other jobs on this machine) was the limit of that run, not the server."}})
	}
	if ss := rs.servers("attack"); len(ss) > 0 {
		t := &table{head: []string{"(d) never authenticate (--auth none --no-init)", "conns established", "peak open at once", "KiB/conn at peak", "KiB/conn after open (bench)", "lifetime p50 s", "longest life s", "all closed after last open s", "still open", "closed by"}}
		for _, s := range ss {
			r := rs.get(s, "attack")
			w := r.watch
			if w == nil {
				t.add(serverNames[s], established(r), na, na, f2(kibOpen(r)), na, na, na, na, errorText(r.rep))
				continue
			}
			p50s, maxs := na, na
			if w.Closed > 0 {
				p50s, maxs = f2(w.LifetimeP50S), f2(w.LifetimeMaxS)
			}
			t.add(serverNames[s], established(r), thousands(int64(w.PeakOpen)), f2(w.KiBPerConnPeak), f2(kibOpen(r)),
				p50s, maxs, optF(w.ClosedAfter), thousands(int64(w.StillOpen)), errorText(r.rep))
		}
		out = append(out, block{table: t}, block{text: []string{"Socket lifetimes are the server's own: each accepted socket is followed by its inode in /proc/PID/fd " +
			"(sampled every 100 ms, so a life is known to within 0.2 s; \"longest life\" is the upper bound). The floor and supergateway have no auth deadline: " +
			"their connections stay open until the client leaves."}})
	}
	if b := rs.get("gateway", "bigframe"); b != nil && b.big != nil {
		t := &table{head: []string{"2 GiB frame header", "connections", "payload after header", "RSS before MiB", "RSS max MiB", "KiB/conn", "server's answer", "close p50 ms", "close max ms"}}
		t.add(serverNames["gateway"], fmt.Sprintf("%d/%d", b.big.Authenticated, b.big.Conns), fmt.Sprintf("%s KiB", f1(float64(b.big.PayloadPerConn)/1024)),
			mib(b.big.RSSBefore), mib(b.big.RSSMax), f2(b.big.KiBPerConn), closesText(b.big.Closes), f1(b.big.CloseP50MS), f1(b.big.CloseMaxMS))
		out = append(out, block{table: t})
	}
	return out
}

// detailBlocks: every run, one row each.
func (rs *results) detailBlocks() []block {
	t := &table{head: []string{"run", "mode", "conns est./target", "lost", "calls/s", "call p50 ms", "call p99 ms", "server us/call", "KiB/conn open", "KiB/conn end", "errors", "load avg at start", "JSON"}}
	for _, r := range rs.sortedRuns() {
		if r.rep == nil {
			continue
		}
		mode := r.rep.Mode
		if r.rep.Mode == "call" {
			if r.rep.Settings.Rate > 0 {
				mode = fmt.Sprintf("call %s/s", thousands(int64(r.rep.Settings.Rate)))
			} else {
				mode = "call closed"
			}
		}
		if !r.rep.Settings.Init {
			mode += ", no init"
		}
		c := r.rep.Connections
		kOpen, kEnd := f2(kibOpen(r)), f2(kibEnd(r))
		if r.rep.Mode == "call" {
			kOpen, kEnd = na, na // a few connections: RSS per connection means nothing there
		}
		t.add(r.server+" / "+r.scenario, mode, fmt.Sprintf("%s/%s", thousands(c.Established), thousands(int64(c.Target))), thousands(c.Lost),
			f1(callsPerSec(r)), f3(pct(r, "call", p50)), f3(pct(r, "call", p99)), f1(usPerCall(r)), kOpen, kEnd,
			errorText(r.rep), orNA(rs.loadRuns[r.server+"--"+r.scenario]), fmt.Sprintf("`%s--%s.bench.json`", r.server, r.scenario))
	}
	return []block{{heading: "Every run", table: t}}
}

func orNA(s string) string {
	if s == "" {
		return na
	}
	return s
}

func renderMD(doc []block) string {
	var b strings.Builder
	for _, bl := range doc {
		if bl.heading != "" {
			fmt.Fprintf(&b, "## %s\n\n", bl.heading)
		}
		if len(bl.text) > 0 {
			for _, l := range bl.text {
				b.WriteString(l)
				b.WriteString("\n")
				if !strings.HasPrefix(l, "- ") {
					b.WriteString("\n")
				}
			}
			if strings.HasPrefix(bl.text[len(bl.text)-1], "- ") {
				b.WriteString("\n")
			}
		}
		if t := bl.table; t != nil {
			esc := func(s string) string { return strings.ReplaceAll(s, "|", "\\|") }
			b.WriteString("|")
			for _, h := range t.head {
				b.WriteString(" " + esc(h) + " |")
			}
			b.WriteString("\n|")
			for range t.head {
				b.WriteString("---|")
			}
			b.WriteString("\n")
			for _, row := range t.rows {
				b.WriteString("|")
				for _, c := range row {
					b.WriteString(" " + esc(c) + " |")
				}
				b.WriteString("\n")
			}
			b.WriteString("\n")
		}
	}
	return b.String()
}

// mdInline renders the little Markdown the text uses: **bold** and `code`.
func mdInline(s string) string {
	s = html.EscapeString(s)
	for _, m := range []struct{ mark, open, close string }{{"**", "<b>", "</b>"}, {"`", "<code>", "</code>"}} {
		for {
			i := strings.Index(s, m.mark)
			if i < 0 {
				break
			}
			j := strings.Index(s[i+len(m.mark):], m.mark)
			if j < 0 {
				break
			}
			j += i + len(m.mark)
			s = s[:i] + m.open + s[i+len(m.mark):j] + m.close + s[j+len(m.mark):]
		}
	}
	return s
}

const reportCSS = `body{font:14px/1.45 system-ui,sans-serif;margin:2em;max-width:1400px;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#f3f3f3}code{background:#f5f5f5;padding:0 3px}details{margin:.4em 0}summary{cursor:pointer}
iframe{width:100%;height:900px;border:1px solid #ccc}h1{font-size:1.5em}h2{font-size:1.2em;margin-top:2em}`

func renderHTML(doc []block, rs *results) (string, error) {
	var b strings.Builder
	b.WriteString("<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>gateway benchmark</title><style>" + reportCSS + "</style></head><body>\n")
	for _, bl := range doc {
		if bl.heading != "" {
			fmt.Fprintf(&b, "<h2>%s</h2>\n", html.EscapeString(bl.heading))
		}
		inList := false
		for _, l := range bl.text {
			switch {
			case strings.HasPrefix(l, "# "):
				fmt.Fprintf(&b, "<h1>%s</h1>\n", mdInline(l[2:]))
			case strings.HasPrefix(l, "- "):
				if !inList {
					b.WriteString("<ul>\n")
					inList = true
				}
				fmt.Fprintf(&b, "<li>%s</li>\n", mdInline(l[2:]))
			default:
				fmt.Fprintf(&b, "<p>%s</p>\n", mdInline(l))
			}
		}
		if inList {
			b.WriteString("</ul>\n")
		}
		if t := bl.table; t != nil {
			b.WriteString("<table><tr>")
			for _, h := range t.head {
				fmt.Fprintf(&b, "<th>%s</th>", mdInline(h))
			}
			b.WriteString("</tr>\n")
			for _, row := range t.rows {
				b.WriteString("<tr>")
				for _, c := range row {
					fmt.Fprintf(&b, "<td>%s</td>", mdInline(c))
				}
				b.WriteString("</tr>\n")
			}
			b.WriteString("</table>\n")
		}
	}
	b.WriteString("<h2>Each run's report (latency plots)</h2>\n<p>Each is the self-contained report of <code>gateway bench --out-html</code>, embedded whole; open one to see its plots.</p>\n")
	for _, r := range rs.sortedRuns() {
		if r.rep == nil {
			continue
		}
		var one bytes.Buffer
		if err := r.rep.WriteHTML(&one); err != nil {
			return "", err
		}
		fmt.Fprintf(&b, "<details><summary>%s / %s</summary><iframe loading=\"lazy\" srcdoc=\"%s\"></iframe></details>\n",
			html.EscapeString(r.server), html.EscapeString(r.scenario), html.EscapeString(one.String()))
	}
	b.WriteString("</body></html>\n")
	return b.String(), nil
}

func cmdReport(args []string) error {
	fs := flag.NewFlagSet("report", flag.ContinueOnError)
	dir := fs.String("dir", "", "directory of the run's JSON files")
	meta := fs.String("meta", "", "the run's meta file (key<TAB>value lines)")
	md := fs.String("md", "", "Markdown output")
	htmlOut := fs.String("html", "", "HTML output")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *dir == "" {
		return fmt.Errorf("-dir is required")
	}
	rs, err := loadResults(*dir, *meta)
	if err != nil {
		return err
	}
	doc := rs.document()
	text := renderMD(doc)
	if *md == "" {
		_, err = os.Stdout.WriteString(text)
	} else {
		err = os.WriteFile(*md, []byte(text), 0o644)
	}
	if err != nil || *htmlOut == "" {
		return err
	}
	h, err := renderHTML(doc, rs)
	if err != nil {
		return err
	}
	return os.WriteFile(*htmlOut, []byte(h), 0o644)
}
