package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
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
//	<server>--<scenario>.midhold.json    suite midhold
//	everything--alone.stdiofloor.json    suite stdiofloor
//
// and the run's meta file: one "key<TAB>value" per line (keys may repeat).
// A scenario named <scenario>-r<N> is round N of that scenario (the
// interleaved closed-loop rounds); results without rounds (older runs) read
// as one round each.

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
	base             string // scenario without its round suffix
	round            int    // 0: not one of several rounds
	rep              *bench.Report
	gen              *generatorStats // the bench JSON's "generator" section, when it has one
	watch            *WatchResult
	big              *BigframeResult
	mid              *MidholdResult
	floor            *StdioFloorResult
}

// generatorStats is read from the bench JSON by name rather than through
// bench.Report, so that reports with and without the section both load.
type generatorStats struct {
	CPUSecs float64 `json:"cpu_secs"`
	Cores   float64 `json:"cores"`
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
			sc, round := splitRound(scenario)
			r = &run{server: server, scenario: scenario, base: sc, round: round}
			rs.runs[name] = r
		}
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		switch kind {
		case "bench":
			r.rep = &bench.Report{}
			if err = json.Unmarshal(b, r.rep); err == nil {
				var g struct {
					Generator *generatorStats `json:"generator"`
				}
				err = json.Unmarshal(b, &g)
				r.gen = g.Generator
			}
		case "sockwatch":
			r.watch = &WatchResult{}
			err = json.Unmarshal(b, r.watch)
		case "bigframe":
			r.big = &BigframeResult{}
			err = json.Unmarshal(b, r.big)
		case "midhold":
			r.mid = &MidholdResult{}
			err = json.Unmarshal(b, r.mid)
		case "stdiofloor":
			r.floor = &StdioFloorResult{}
			err = json.Unmarshal(b, r.floor)
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
		if x, y := idx(scenarioOrder, a.base), idx(scenarioOrder, b.base); x != y {
			return x < y
		}
		if a.round != b.round {
			return a.round < b.round
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
		if rs.pick(s, scenario) != nil {
			out = append(out, s)
		}
	}
	return out
}

func (rs *results) document() []block {
	var doc []block
	title := fmt.Sprintf("# Benchmark run %s on %s (%s)", rs.meta1("date"), rs.meta1("host"), rs.meta1("mode"))
	doc = append(doc, block{text: []string{title}})
	together := ""
	if rs.maxRound("closed-small") > 0 || rs.maxRound("closed-large") > 0 {
		together = " (the gateway, the floor and the seed together for their call runs, taking turns: see \"CPU per call, round by round\")"
	}
	intro := []string{
		fmt.Sprintf("Made by `%s` in %s s. Every server was started fresh for each scenario%s and measured by "+
			"`gateway bench` with `--server-pid` (RSS and CPU of the server and its child processes, from /proc).",
			rs.meta1("command"), rs.meta1("duration_s"), together),
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
	doc = append(doc, rs.floorBlocks()...)
	doc = append(doc, rs.figureBlocks()...)
	doc = append(doc, rs.roundsBlocks()...)
	doc = append(doc, rs.hostBlocks()...)
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

func orNA(s string) string {
	if s == "" {
		return na
	}
	return s
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
