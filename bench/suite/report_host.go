package main

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// The machine under the call runs. This VM shares its host: the hypervisor
// now and then runs someone else on a vCPU ("steal" in /proc/stat), and
// every thread on that CPU stops for milliseconds. `gateway bench` records
// each CPU's steal over the run and its worst 100 ms window; this block puts
// them next to each round's figure, so that a tail or a slow round can be
// read against the machine that produced it.

// serverCPU is the CPU the servers were pinned to (-1: not pinned).
func (rs *results) serverCPU() int {
	n, err := strconv.Atoi(rs.meta1("server_cpu"))
	if err != nil {
		return -1
	}
	return n
}

// steal is a run's steal share (run and worst window, percent) on the
// server's CPU, or the highest over all CPUs when it is not pinned; NaN when
// the run did not record it.
func (rs *results) steal(r *run) (float64, float64) {
	if r == nil || r.rep == nil || r.rep.Host == nil || len(r.rep.Host.CPUs) == 0 {
		return math.NaN(), math.NaN()
	}
	cpu := rs.serverCPU()
	run, worst := math.NaN(), math.NaN()
	for _, c := range r.rep.Host.CPUs {
		if cpu >= 0 && c.CPU != cpu {
			continue
		}
		if math.IsNaN(run) || c.StealPct > run {
			run = c.StealPct
		}
		if math.IsNaN(worst) || c.StealMaxPct > worst {
			worst = c.StealMaxPct
		}
	}
	return run, worst
}

// stealText is " (steal on CPU 1: 1.2 %, worst 100 ms 30 %)", or "" when
// the run did not record it.
func (rs *results) stealText(r *run) string {
	run, worst := rs.steal(r)
	if math.IsNaN(run) {
		return ""
	}
	where := "the servers' CPU"
	if c := rs.serverCPU(); c >= 0 {
		where = fmt.Sprintf("CPU %d", c)
	}
	return fmt.Sprintf(" (steal on %s: %s %%, worst 100 ms %s %%)", where, f1(run), f1(worst))
}

// floorP99Text is "; floor: p99 4.61 ms (median of rounds ...)" for an
// open-loop scenario the floor ran: the tail of a server with no work to shed
// on the same machine at the same time.
func (rs *results) floorP99Text(scenario string) string {
	f := rs.pickBy("floor", scenario, callP99)
	if f == nil || math.IsNaN(callP99(f)) {
		return ""
	}
	return fmt.Sprintf("; floor: p99 %s ms%s%s", f3(callP99(f)), rs.p99Rounds("floor", scenario), rs.stealText(f))
}

// hostBlocks lists, round by round, each call run's figure with the steal
// on the servers' CPU; nothing when no run recorded steal.
func (rs *results) hostBlocks() []block {
	type scen struct {
		name, label string
		fig         func(*run) float64
		unit        string
		digits      int
	}
	scs := []scen{
		{"closed-small", "closed loop, small", usPerCall, "µs/call", 1},
		{"closed-large", "closed loop, large", usPerCall, "µs/call", 1},
		{"open-low", "open loop, low rate", callP99, "p99 ms", 2},
		{"open-high", "open loop, high rate", callP99, "p99 ms", 2},
	}
	n, recorded := 0, false
	for _, sc := range scs {
		n = max(n, rs.maxRound(sc.name), 1)
		for _, s := range rs.servers(sc.name) {
			for _, r := range rs.rounds(s, sc.name) {
				if v, _ := rs.steal(r); !math.IsNaN(v) {
					recorded = true
				}
			}
		}
	}
	if !recorded {
		return nil
	}
	head := []string{"figure; steal % over the run / worst 100 ms"}
	for i := 1; i <= n; i++ {
		head = append(head, fmt.Sprintf("round %d", i))
	}
	t := &table{head: head}
	for _, sc := range scs {
		for _, s := range rs.servers(sc.name) {
			row := make([]string, n+1)
			row[0] = fmt.Sprintf("%s, %s (%s)", serverNames[s], sc.label, sc.unit)
			for i := 1; i <= n; i++ {
				row[i] = na
			}
			for _, r := range rs.rounds(s, sc.name) {
				i := max(r.round, 1)
				if i > n {
					continue
				}
				cell := fmtF(sc.fig(r), sc.digits)
				if run, worst := rs.steal(r); !math.IsNaN(run) {
					cell += fmt.Sprintf("; %s / %s", f1(run), f1(worst))
				}
				row[i] = cell
			}
			t.add(row...)
		}
	}
	where := "the CPU with the most steal"
	if c := rs.serverCPU(); c >= 0 {
		where = fmt.Sprintf("CPU %d (the servers' CPU)", c)
	}
	return []block{{heading: "Steal, round by round", table: t}, {text: []string{strings.Join([]string{
		"Steal is the share of " + where + " that the hypervisor gave to another tenant during the run (/proc/stat, recorded by `gateway bench`), " +
			"over the whole run and in its worst 100 ms window.",
		"A stolen vCPU stops every thread on it, the server's event loop included, for milliseconds: an open-loop call due in that time waits it out, " +
			"so a few such windows in a run are enough to set its p99. The floor, which does nothing but the socket I/O, runs on the same CPU in the same rounds: its tail is the machine's.",
	}, " ")}}}
}
