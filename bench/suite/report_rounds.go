package main

import (
	"fmt"
	"math"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

// The closed-loop CPU-per-call runs of the gateway, the floor and the seed
// go in rounds (run.sh): the three servers run side by side and take turns
// inside each round, so that a burst from the machine's other tenants lands
// on one round of all three rather than on one server's only run. The
// report takes each server's median µs/call over the rounds and the ratios
// from those medians, and lists every round.

var roundRE = regexp.MustCompile(`^(.+)-r([0-9]+)$`)

// splitRound parses "closed-small-r2" into ("closed-small", 2); a scenario
// without the suffix is round 0 (not one of several).
func splitRound(sc string) (string, int) {
	m := roundRE.FindStringSubmatch(sc)
	if m == nil {
		return sc, 0
	}
	n, err := strconv.Atoi(m[2])
	if err != nil || n < 1 {
		return sc, 0
	}
	return m[1], n
}

// rounds returns the runs of server/scenario in round order: the rounds if
// there are any, else the one run of that name.
func (rs *results) rounds(server, scenario string) []*run {
	if r := rs.get(server, scenario); r != nil {
		return []*run{r}
	}
	var out []*run
	for _, r := range rs.runs {
		if r.server == server && r.base == scenario && r.round > 0 {
			out = append(out, r)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].round < out[j].round })
	return out
}

// maxRound is the number of rounds of the scenario (0 without rounds).
func (rs *results) maxRound(scenario string) int {
	n := 0
	for _, r := range rs.runs {
		if r.base == scenario && r.round > n {
			n = r.round
		}
	}
	return n
}

// medianUS is the median µs/call over the rounds that measured one.
func (rs *results) medianUS(server, scenario string) float64 {
	var v []float64
	for _, r := range rs.rounds(server, scenario) {
		if x := usPerCall(r); !math.IsNaN(x) {
			v = append(v, x)
		}
	}
	if len(v) == 0 {
		return math.NaN()
	}
	return median(v)
}

// pairedRatio is the median over the rounds of a/b within each round (NaN
// without a round that measured both). The runs of one round are seconds
// apart, so the drift of this VM's CPU speed over tens of seconds, which
// moves every server's µs/call together, cancels in each round's ratio;
// the ratio of the per-server medians does not pair the runs and keeps it.
// Without rounds it is the ratio of the two runs.
func (rs *results) pairedRatio(a, b, scenario string) float64 {
	return rs.pairedRatioOf(a, b, scenario, usPerCall)
}

// pairedRatioOf is pairedRatio for any per-run figure (the open-loop runs
// compare call p99).
func (rs *results) pairedRatioOf(a, b, scenario string, key func(*run) float64) float64 {
	byRound := map[int]float64{}
	for _, r := range rs.rounds(b, scenario) {
		byRound[r.round] = key(r)
	}
	var v []float64
	for _, r := range rs.rounds(a, scenario) {
		if d, ok := byRound[r.round]; ok {
			if x := ratio(key(r), d); !math.IsNaN(x) {
				v = append(v, x)
			}
		}
	}
	if len(v) == 0 {
		return math.NaN()
	}
	return median(v)
}

// pick returns the run that stands for server/scenario in the figure
// tables: the run itself, or the median round by µs/call (with an even
// number of rounds, the lower of the two middle ones).
func (rs *results) pick(server, scenario string) *run {
	return rs.pickBy(server, scenario, usPerCall)
}

// callP99 is a run's call latency p99 in ms.
func callP99(r *run) float64 { return pct(r, "call", p99) }

// pickBy is pick ordered by any per-run figure: the open-loop runs stand
// by their median round by call p99.
func (rs *results) pickBy(server, scenario string, key func(*run) float64) *run {
	rr := rs.rounds(server, scenario)
	switch len(rr) {
	case 0:
		return nil
	case 1:
		return rr[0]
	}
	s := append([]*run(nil), rr...)
	sort.SliceStable(s, func(i, j int) bool {
		a, b := key(s[i]), key(s[j])
		if math.IsNaN(b) {
			return !math.IsNaN(a)
		}
		return a < b
	})
	return s[(len(s)-1)/2]
}

// p99Rounds is " (median of rounds a, b, c)" for an open-loop scenario in
// rounds, "" for one run.
func (rs *results) p99Rounds(server, scenario string) string {
	rr := rs.rounds(server, scenario)
	if len(rr) < 2 {
		return ""
	}
	var v []string
	for _, r := range rr {
		v = append(v, f3(callP99(r)))
	}
	return " (median of rounds " + strings.Join(v, ", ") + ")"
}

// roundsNote says where a figure comes from: "" without rounds.
func (rs *results) roundsNote(scenario string) string {
	switch n := rs.maxRound(scenario); n {
	case 0:
		return ""
	case 1:
		return " (1 round)"
	default:
		return fmt.Sprintf(" (medians of %d rounds)", n)
	}
}

// roundsBlocks lists each round's µs/call and the ratios per round; the
// last column holds the medians, and for the ratio rows the ratio of the
// medians (what the targets use), which is not the median of the ratios.
func (rs *results) roundsBlocks() []block {
	n := max(rs.maxRound("closed-small"), rs.maxRound("closed-large"))
	if n == 0 {
		return nil
	}
	head := []string{"closed loop, server CPU us/call"}
	for i := 1; i <= n; i++ {
		head = append(head, fmt.Sprintf("round %d", i))
	}
	head = append(head, "median (ratios: median of the rounds' ratios; ratio of the medians)")
	t := &table{head: head}
	for _, sc := range []string{"closed-small", "closed-large"} {
		conns := "?"
		if r := rs.pick("gateway", sc); r != nil && r.rep != nil {
			conns = thousands(int64(r.rep.Settings.Conns))
		}
		byRound := func(s string) []float64 {
			v := make([]float64, n)
			for i := range v {
				v[i] = math.NaN()
			}
			for _, r := range rs.rounds(s, sc) {
				if r.round >= 1 && r.round <= n {
					v[r.round-1] = usPerCall(r)
				} else if r.round == 0 && n >= 1 {
					v[0] = usPerCall(r)
				}
			}
			return v
		}
		for _, s := range []string{"gateway", "floor", "seed"} {
			if len(rs.rounds(s, sc)) == 0 {
				continue
			}
			row := []string{fmt.Sprintf("%s, %s conns", serverNames[s], conns)}
			for _, v := range byRound(s) {
				row = append(row, f1(v))
			}
			t.add(append(row, f1(rs.medianUS(s, sc)))...)
		}
		g := byRound("gateway")
		for _, o := range []struct{ server, label string }{{"floor", "gateway / floor"}, {"seed", "gateway / Node seed"}} {
			if len(rs.rounds(o.server, sc)) == 0 || len(rs.rounds("gateway", sc)) == 0 {
				continue
			}
			row := []string{fmt.Sprintf("%s, %s conns", o.label, conns)}
			for i, v := range byRound(o.server) {
				row = append(row, f2(ratio(g[i], v)))
			}
			t.add(append(row, f2(rs.pairedRatio("gateway", o.server, sc))+"; "+
				f2(ratio(rs.medianUS("gateway", sc), rs.medianUS(o.server, sc))))...)
		}
	}
	warm := "after one warm-up each"
	if w := rs.meta1("call_warmup"); w == "0" {
		warm = "without warm-up"
	} else if w != "" {
		warm = "after one " + w + " warm-up each"
	}
	return []block{{heading: "CPU per call, round by round", table: t}, {text: []string{
		fmt.Sprintf("The gateway, the floor and the Node seed design were started together (each pinned to CPU 1, one port each) "+
			"and, %s, ran the closed-loop calls in %d round(s): in each round every size ran on gateway, floor, seed in turn, "+
			"so only one server was loaded at a time, and each round started with the next server. The figure tables use each server's median over the rounds "+
			"(the latency columns are those of its median round). The target ratios are the median of the rounds' own ratios: "+
			"this VM's CPU speed drifts over tens of seconds and moves every server's figure together (see the spread of the floor's own rounds), "+
			"and the runs of one round are seconds apart, so each round's ratio cancels the drift; the ratio of the medians, which does not pair the runs, is shown next to it.", warm, n)}}}
}
