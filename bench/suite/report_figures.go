package main

import (
	"fmt"
	"math"

	"github.com/mcpgate/gateway/bench"
)

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
		r0 := rs.pick(ss[0], sc)
		label := "(b) closed loop tools/call echo"
		if r0.rep != nil {
			label = fmt.Sprintf("(b) closed loop echo, %s conns, %s", thousands(int64(r0.rep.Settings.Conns)), r0.rep.Settings.Duration)
		}
		// With rounds: the median µs/call, the other columns from the median round.
		t := &table{head: []string{label, "calls/s", "p50 ms", "p90 ms", "p99 ms", "p99.9 ms", "server CPU us/call (own + children)", "server cores", "errors"}}
		for _, s := range ss {
			r := rs.pick(s, sc)
			cores := math.NaN()
			if r.rep != nil && r.rep.Server != nil {
				cores = r.rep.Server.CoresDuringRun
			}
			name := serverNames[s]
			if n := len(rs.rounds(s, sc)); n > 1 {
				name += fmt.Sprintf(" (median of %d rounds)", n)
			}
			t.add(name, f1(callsPerSec(r)), f3(pct(r, "call", p50)), f3(pct(r, "call", func(l *bench.LatencyRow) float64 { return l.P90 })),
				f3(pct(r, "call", p99)), f3(pct(r, "call", p999)), usCell(r, rs.medianUS(s, sc)), f2(cores), errorText(r.rep))
		}
		out = append(out, block{table: t})
	}
	for _, sc := range []string{"open-low", "open-high"} {
		ss := rs.servers(sc)
		if len(ss) == 0 {
			continue
		}
		r0 := rs.pickBy(ss[0], sc, callP99)
		label := "(c) open loop"
		if r0.rep != nil {
			label = fmt.Sprintf("(c) open loop, %s conns, %s calls/s, %s", thousands(int64(r0.rep.Settings.Conns)), thousands(int64(r0.rep.Settings.Rate)), r0.rep.Settings.Duration)
		}
		// The generator's CPU, where the bench JSON records it.
		withGen := false
		for _, s := range ss {
			withGen = withGen || rs.pickBy(s, sc, callP99).gen != nil
		}
		head := []string{label, "calls/s done", "p50 ms", "p99 ms", "p99.9 ms", "max ms", "send lag p99 ms"}
		if withGen {
			head = append(head, "generator cores")
		}
		t := &table{head: append(head, "server CPU us/call", "errors")}
		for _, s := range ss {
			r := rs.pickBy(s, sc, callP99)
			name := serverNames[s]
			if n := len(rs.rounds(s, sc)); n > 1 {
				name += fmt.Sprintf(" (median of %d rounds by p99)", n)
			}
			row := []string{name, f1(callsPerSec(r)), f3(pct(r, "call", p50)), f3(pct(r, "call", p99)), f3(pct(r, "call", p999)),
				f3(pct(r, "call", func(l *bench.LatencyRow) float64 { return l.Max })), f3(pct(r, "send_lag", p99))}
			if withGen {
				gen := na
				if r.gen != nil {
					gen = f2(r.gen.Cores)
				}
				row = append(row, gen)
			}
			t.add(append(row, f1(usPerCall(r)), errorText(r.rep))...)
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
		name := r.server + " / " + r.scenario
		if r.round > 0 {
			name = fmt.Sprintf("%s / %s round %d", r.server, r.base, r.round)
		}
		t.add(name, mode, fmt.Sprintf("%s/%s", thousands(c.Established), thousands(int64(c.Target))), thousands(c.Lost),
			f1(callsPerSec(r)), f3(pct(r, "call", p50)), f3(pct(r, "call", p99)), f1(usPerCall(r)), kOpen, kEnd,
			errorText(r.rep), orNA(rs.loadRuns[r.server+"--"+r.scenario]), fmt.Sprintf("`%s--%s.bench.json`", r.server, r.scenario))
	}
	return []block{{heading: "Every run", table: t}}
}
