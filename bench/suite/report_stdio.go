package main

import (
	"fmt"
	"math"
	"strings"
)

// The stdio target compares two relays with their workers counted: the
// gateway's pool of server-everything children against supergateway and its
// one server-everything child. Both sides pay the worker's own CPU per call,
// which no relay can remove, so the rows split each side into the relay's
// own CPU and its children's, and set them against what server-everything
// costs alone (suite stdiofloor): if a third of supergateway's total is
// already below that, the 1/3 target cannot be met by any relay that counts
// its worker, and the verdict says so with the figures.

// floorRun is the worker-alone measurement, if the run has one.
func (rs *results) floorRun() *StdioFloorResult {
	if r := rs.get("everything", "alone"); r != nil {
		return r.floor
	}
	return nil
}

// workerAloneUS is server-everything's CPU per call on its own (NaN if not
// measured).
func (rs *results) workerAloneUS() float64 {
	if f := rs.floorRun(); f != nil && f.USPerCall > 0 {
		return f.USPerCall
	}
	return math.NaN()
}

// cpuSplit returns a run's own and children's µs/call (NaN when the bench
// JSON has no split: older runs, or --metrics-url).
func cpuSplit(r *run) (own, children float64) {
	if r == nil || r.rep == nil || r.rep.Server == nil || r.rep.Calls == nil || r.rep.Calls.Completed == 0 {
		return math.NaN(), math.NaN()
	}
	sv := r.rep.Server
	if sv.USPerCallOwn == nil || sv.USPerCallChildren == nil {
		return math.NaN(), math.NaN()
	}
	return *sv.USPerCallOwn, *sv.USPerCallChildren
}

// splitText is "own X + children Y us" for a relay with workers.
func splitText(r *run, children string) string {
	own, ch := cpuSplit(r)
	if math.IsNaN(own) {
		return "split not recorded"
	}
	return fmt.Sprintf("own %s + %s %s", f1(own), children, f1(ch))
}

// usCell is µs/call with its own + children split when the server has
// child processes: "62.3 (20.1 + 42.2)".
func usCell(r *run, us float64) string {
	own, ch := cpuSplit(r)
	if math.IsNaN(own) || r.rep.Server.ChildProcs == 0 {
		return f1(us)
	}
	return fmt.Sprintf("%s (%s + %s)", f1(us), f1(own), f1(ch))
}

// stdioRow is the "measured" cell and the verdict of one stdio target row
// (sc: closed-small or closed-large). The lower bound for any relay that
// counts its worker is what the floor server spends per call at the same
// size (the WebSocket read and write every server pays) plus what
// server-everything spends alone at its cheapest: when a third of
// supergateway's is below that, no relay can meet the target here.
func (rs *results) stdioRow(g, s *run, sc string) (string, string) {
	gu, su := usPerCall(g), usPerCall(s)
	r := ratio(gu, su)
	measured := fmt.Sprintf("gateway %s us (%s), supergateway %s us (%s): %s x",
		f1(gu), splitText(g, "children"), f1(su), splitText(s, "child"), f2(r))
	v := verdict(r, 1.0/3)
	alone := rs.workerAloneUS()
	if math.IsNaN(alone) {
		return measured + "; server-everything alone not measured", v
	}
	third := su / 3
	bound, parts := alone, fmt.Sprintf("server-everything alone %s us", f1(alone))
	if fl := rs.medianUS("floor", sc); !math.IsNaN(fl) && fl > 0 {
		bound += fl
		parts = fmt.Sprintf("floor server %s us (the socket I/O any WebSocket server pays) + %s", f1(fl), parts)
	}
	measured += fmt.Sprintf("; lower bound for any relay: %s = %s us/call", parts, f1(bound))
	if math.IsNaN(third) {
		return measured, v
	}
	if third < bound {
		measured += fmt.Sprintf("; 1/3 of supergateway's is %s us, **below** it", f1(third))
		if v == "**not met**" {
			v = fmt.Sprintf("**not met**, unreachable here: 1/3 of supergateway's (%s us) is below the lower bound (%s us)", f1(third), f1(bound))
		}
	} else {
		measured += fmt.Sprintf("; 1/3 of supergateway's is %s us, above it", f1(third))
	}
	return measured, v
}

// floorBlocks: the worker-alone measurement and its profile.
func (rs *results) floorBlocks() []block {
	f := rs.floorRun()
	if f == nil {
		return nil
	}
	var per []string
	for _, r := range f.Runs {
		per = append(per, f1(r.USPerCall))
	}
	startup := math.NaN()
	if len(f.Runs) > 0 {
		startup = f.Runs[0].StartupCPUSecs
	}
	text := []string{fmt.Sprintf("`suite stdiofloor` started server-everything as the stdio pools do (`%s`), sent initialize, "+
		"ran %s warm-up calls, paused, then sent %s tools/call echo requests (%d-byte message, as `gateway bench` sends) to its stdin, %d in flight, and read the %s answers. "+
		"Its CPU (from /proc) for those calls, startup and warm-up not counted (%s s CPU up to the pause): "+
		"**%s us/call** (median of %d run(s): %s). With that many in flight it reads them in large batches and never waits "+
		"(one at a time costs it several times more in wake-ups, all at once more in garbage collection), so this is about the cheapest "+
		"the worker ever is: in a relay it also wakes up for smaller reads.",
		strings.Join(f.Command, " "), thousands(int64(f.WarmupCalls)), thousands(int64(f.Calls)), f.MessageSize, f.Window, thousands(int64(f.Calls)), f2(startup),
		f1(f.USPerCall), len(f.Runs), strings.Join(per, ", "))}
	for _, sc := range []string{"closed-small", "closed-large"} {
		if r := rs.get("gateway-stdio", sc); r != nil && r.rep != nil && r.rep.Settings.MessageSize != f.MessageSize {
			text = append(text, fmt.Sprintf("Note: the relay runs sent %d-byte messages, the worker-alone run %d.", r.rep.Settings.MessageSize, f.MessageSize))
			break
		}
	}
	out := []block{{heading: "Stdio worker alone (server-everything)", text: text}}
	p := f.Profile
	if p == nil {
		if f.ProfileError != "" {
			out = append(out, block{text: []string{"No CPU profile: " + f.ProfileError}})
		}
		return out
	}
	t := &table{head: []string{"top functions by self time (node --cpu-prof)", "where", "self ms", "% of sampled CPU"}}
	for _, fn := range p.Top {
		t.add(fn.Function, orNA(fn.Where), f1(fn.SelfMS), f1(fn.Percent))
	}
	window := fmt.Sprintf("after the first %s ms (startup and warm-up, up to the pause before the calls)", f1(p.SkippedMS))
	if p.SkippedMS == 0 {
		window = "over the whole process (startup included: no pause found in the profile)"
	}
	out = append(out, block{table: t}, block{text: []string{fmt.Sprintf("One more run of the same %s calls under "+
		"`node --cpu-prof --cpu-prof-interval 250`: %s ms of CPU sampled %s, in %s samples (plus %s ms idle). "+
		"Self time is summed over every call path of a function; \"(garbage collector)\" and \"(program)\" are V8's own.",
		thousands(int64(f.Calls)), f1(p.CPUMS), window, thousands(int64(p.Samples)), f1(p.IdleMS))}})
	return out
}
