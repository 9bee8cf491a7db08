package main

import (
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"math"
	"net"
	"os"
	"strings"
	"time"
)

// The TLS speed report of bench/scripts/tls.sh (issue 12, item 6): the
// gateway over wss:// and ws:// next to bench/tlsref (net/http +
// crypto/tls) over wss:// and ws://, in interleaved rounds. Files in the
// results directory, as for make bench:
//
//	<server>--connect-r<N>.bench.json       --mode connect, the storm
//	<server>--closed-small-r<N>.bench.json  closed-loop calls, few connections
//	<server>--closed-large-r<N>.bench.json  closed-loop calls, many connections
//	<server>--idle.bench.json               idle RSS per connection
//
// with server one of tlsServers.

var (
	tlsServers = []string{"gateway-tls", "tlsref", "gateway", "tlsref-plain"}
	tlsNames   = map[string]string{
		"gateway-tls":  "gateway (wss)",
		"tlsref":       "net/http tlsref (wss)",
		"gateway":      "gateway (ws)",
		"tlsref-plain": "net/http tlsref (ws)",
	}
)

// Targets of issue 12, item 6.
const (
	idleKiBBound = 6.0 // KiB RSS per idle wss:// connection
)

// connRate is a connect run's established connections per second.
func connRate(r *run) float64 {
	if r == nil || r.rep == nil || r.rep.Connections.PerSec <= 0 {
		return math.NaN()
	}
	return r.rep.Connections.PerSec
}

// usPerConn is a connect run's server CPU per established connection.
func usPerConn(r *run) float64 {
	if r == nil || r.rep == nil || r.rep.Server == nil || r.rep.Connections.Established == 0 {
		return math.NaN()
	}
	return r.rep.Server.USPerConn
}

// genCores is the load generator's cores over the measured phase.
func genCores(r *run) float64 {
	if r == nil || r.gen == nil {
		return math.NaN()
	}
	return r.gen.Cores
}

// failedConns is how many connections of the run did not get through.
func failedConns(r *run) int64 {
	if r == nil || r.rep == nil {
		return 0
	}
	return int64(r.rep.Connections.Target) - r.rep.Connections.Established
}

// byRound maps round -> figure for one server and scenario (rounds without
// the figure are left out).
func (rs *results) byRound(server, scenario string, key func(*run) float64) map[int]float64 {
	out := map[int]float64{}
	for _, r := range rs.rounds(server, scenario) {
		if v := key(r); !math.IsNaN(v) {
			out[max(r.round, 1)] = v
		}
	}
	return out
}

// medianOf is the median of a server's figure over the rounds (NaN
// without one).
func (rs *results) medianOf(server, scenario string, key func(*run) float64) float64 {
	m := rs.byRound(server, scenario, key)
	if len(m) == 0 {
		return math.NaN()
	}
	var v []float64
	for _, x := range m {
		v = append(v, x)
	}
	return median(v)
}

// overheadRounds is, round by round, the TLS overhead of server tlsS over
// its plaintext twin plainS: tlsS's figure minus plainS's.
func (rs *results) overheadRounds(tlsS, plainS, scenario string, key func(*run) float64) map[int]float64 {
	a, b := rs.byRound(tlsS, scenario, key), rs.byRound(plainS, scenario, key)
	out := map[int]float64{}
	for k, x := range a {
		if y, ok := b[k]; ok {
			out[k] = x - y
		}
	}
	return out
}

// overheadExcess is, round by round, the gateway's TLS overhead minus
// net/http's (µs): <= 0 means TLS costs the gateway no more than it costs
// net/http.
func (rs *results) overheadExcess(scenario string, key func(*run) float64) map[int]float64 {
	g := rs.overheadRounds("gateway-tls", "gateway", scenario, key)
	n := rs.overheadRounds("tlsref", "tlsref-plain", scenario, key)
	out := map[int]float64{}
	for k, x := range g {
		if y, ok := n[k]; ok {
			out[k] = x - y
		}
	}
	return out
}

func medianMap(m map[int]float64) float64 {
	if len(m) == 0 {
		return math.NaN()
	}
	var v []float64
	for _, x := range m {
		v = append(v, x)
	}
	return median(v)
}

// atLeast is verdict's mirror: "met" when v >= bound.
func atLeast(v, bound float64) string {
	switch {
	case math.IsNaN(v):
		return "not measured"
	case v >= bound:
		return "met"
	default:
		return "**not met**"
	}
}

// tlsTarget is one row of the verdict table.
type tlsTarget struct {
	target, measured, verdict string
}

// tlsTargets gives issue 12's TLS speed targets a verdict from this run.
func (rs *results) tlsTargets() []tlsTarget {
	var out []tlsTarget
	n := "?"
	if r := rs.pickBy("gateway-tls", "connect", connRate); r != nil && r.rep != nil {
		n = thousands(int64(r.rep.Settings.Conns))
	}
	// Storm rate: the median of the rounds' own ratios.
	rate := rs.pairedRatioOf("gateway-tls", "tlsref", "connect", connRate)
	v := atLeast(rate, 1)
	var failed int64
	for _, r := range rs.rounds("gateway-tls", "connect") {
		failed += failedConns(r)
	}
	meas := fmt.Sprintf("gateway %s/s, net/http %s/s (medians); gateway / net/http %s (median of the rounds' ratios)",
		f1(rs.medianOf("gateway-tls", "connect", connRate)), f1(rs.medianOf("tlsref", "connect", connRate)), f2(rate))
	if failed > 0 {
		meas += fmt.Sprintf("; %s gateway connections failed", thousands(failed))
		if v == "met" {
			v = "**not met**"
		}
	}
	out = append(out, tlsTarget{fmt.Sprintf("reconnect storm over wss:// (%s connects): gateway's connections/s >= net/http's", n), meas, v})

	cpu := rs.pairedRatioOf("gateway-tls", "tlsref", "connect", usPerConn)
	out = append(out, tlsTarget{"... at no more server CPU per connection (TLS handshake + upgrade + auth + initialize)",
		fmt.Sprintf("gateway %s µs, net/http %s µs (medians); gateway / net/http %s (median of the rounds' ratios)",
			f1(rs.medianOf("gateway-tls", "connect", usPerConn)), f1(rs.medianOf("tlsref", "connect", usPerConn)), f2(cpu)),
		verdict(cpu, 1)})

	for _, sc := range []string{"open-small", "open-large"} {
		conns, rate := "?", "?"
		if r := rs.pick("gateway-tls", sc); r != nil && r.rep != nil {
			conns = thousands(int64(r.rep.Settings.Conns))
			rate = thousands(int64(r.rep.Settings.Rate))
		}
		ex := medianMap(rs.overheadExcess(sc, usPerCall))
		g := medianMap(rs.overheadRounds("gateway-tls", "gateway", sc, usPerCall))
		h := medianMap(rs.overheadRounds("tlsref", "tlsref-plain", sc, usPerCall))
		out = append(out, tlsTarget{
			fmt.Sprintf("steady state at %s connections (%s calls/s on every server): TLS overhead per tools/call echo (wss - ws server CPU) of the gateway <= net/http's", conns, rate),
			fmt.Sprintf("gateway +%s µs/call, net/http +%s µs/call (medians of the rounds' overheads); gateway's minus net/http's %s µs (median of the rounds' own differences)",
				f2(g), f2(h), signed(ex)),
			verdict(ex, 0)})
	}

	if r := rs.get("gateway-tls", "idle"); r != nil && r.rep != nil {
		// Idle is the end of the hold: 1 s after the last connect the
		// figure still holds the storm's garbage, which the gateway gives
		// back once the connections settle; both are shown.
		o, e := kibOpen(r), kibEnd(r)
		v := verdict(e, idleKiBBound)
		if failedConns(r) > 0 || r.rep.Connections.Lost > 0 {
			v = "**not met**"
		}
		out = append(out, tlsTarget{fmt.Sprintf("idle: <= %s KiB RSS per wss:// connection at %s", f1(idleKiBBound), thousands(int64(r.rep.Settings.Conns))),
			fmt.Sprintf("%s KiB at the end of the %s hold (%s KiB 1 s after the last connect; %s established)", f2(e), r.rep.Settings.Duration, f2(o), established(r)), v})
	} else {
		out = append(out, tlsTarget{fmt.Sprintf("idle: <= %s KiB RSS per wss:// connection at 10,000", f1(idleKiBBound)), na, "not measured"})
	}
	return out
}

func signed(v float64) string {
	if math.IsNaN(v) {
		return na
	}
	return fmt.Sprintf("%+.2f", v)
}

// roundTable is one figure per server and round, the median last, then
// derived rows.
func (rs *results) roundTable(title, scenario string, key func(*run) float64, digits int) (*table, int) {
	n := max(rs.maxRound(scenario), 1)
	head := []string{title}
	for i := 1; i <= n; i++ {
		head = append(head, fmt.Sprintf("round %d", i))
	}
	head = append(head, "median")
	t := &table{head: head}
	for _, s := range tlsServers {
		if len(rs.rounds(s, scenario)) == 0 {
			continue
		}
		t.add(roundRow(tlsNames[s], rs.byRound(s, scenario, key), n, digits, fmtF(rs.medianOf(s, scenario, key), digits))...)
	}
	return t, n
}

func roundRow(label string, m map[int]float64, n, digits int, last string) []string {
	row := []string{label}
	for i := 1; i <= n; i++ {
		if x, ok := m[i]; ok {
			row = append(row, fmtF(x, digits))
		} else {
			row = append(row, na)
		}
	}
	return append(row, last)
}

// ratioRounds is a/b round by round.
func (rs *results) ratioRounds(a, b, scenario string, key func(*run) float64) map[int]float64 {
	x, y := rs.byRound(a, scenario, key), rs.byRound(b, scenario, key)
	out := map[int]float64{}
	for k, v := range x {
		if w, ok := y[k]; ok && w != 0 {
			out[k] = v / w
		}
	}
	return out
}

func (rs *results) tlsDocument() []block {
	var doc []block
	doc = append(doc, block{text: []string{fmt.Sprintf("# TLS speed: the gateway next to net/http + crypto/tls, %s on %s (%s)",
		rs.meta1("date"), rs.meta1("host"), rs.meta1("mode"))}})
	intro := []string{
		fmt.Sprintf("Made by `%s` in %s s (issue 12, item 6). Gateway: %s.", rs.meta1("command"), rs.meta1("duration_s"), rs.meta1("commit")),
		"Servers: the gateway (`gateway serve`, builtin echo upstream, limits raised as in make bench) over wss:// and, as a second process, over ws://; " +
			"`bench/tlsref` (Go net/http + crypto/tls + coder/websocket, a goroutine per connection, the same echo) over wss:// and with `-plain` over ws://. " +
			"All four ran side by side, each on its own port; in each round every server ran each scenario in turn (one server loaded at a time), " +
			"each round starting with the next server. Pinning: " + rs.meta1("pinning") + ".",
		"Measured by `gateway bench --server-pid PID` (server CPU and RSS from /proc). Storm: `--mode connect` opens each connection " +
			"(TCP + full TLS handshake, no session resumption + WebSocket upgrade + auth message + MCP initialize round trip) and closes it, " +
			"at most 200 in flight; rate = connections established / connect phase; CPU per connection = server CPU over the connect phase / connections. " +
			"Steady state: 64-byte echo; first open loop at the same rate on every server (the CPU per call at equal work: the verdict), then closed loop with 1 call in flight per connection (each server's capacity, with this one-core client); " +
			"TLS overhead = wss µs/call - ws µs/call of the same server in the same round.",
		fmt.Sprintf("Sizes: %s. Load average before: %s; after: %s. The machine is a shared 2-vCPU VM: compare within a round; the verdicts use the rounds' own ratios and differences.",
			rs.meta1("sizes"), rs.meta1("load_before"), rs.meta1("load_after")),
	}
	if rs.meta1("mode") == "quick" {
		intro = append(intro, "**Quick run**: counts too small for the verdicts to mean anything.")
	}
	doc = append(doc, block{text: intro})

	mt := &table{head: []string{"machine and setup", ""}}
	for _, k := range []string{"cpu", "cores", "memory", "kernel", "os", "go", "fd_limit", "gateway_build", "cert", "tls_gateway-tls", "tls_tlsref", "client_engine", "warmup"} {
		if v := rs.meta1(k); v != "" {
			mt.add(strings.TrimPrefix(k, "tls_")+map[bool]string{true: " (negotiated)", false: ""}[strings.HasPrefix(k, "tls_")], v)
		}
	}
	doc = append(doc, block{heading: "Machine", table: mt})

	tt := &table{head: []string{"target (issue 12, item 6)", "measured in this run", "verdict"}}
	for _, t := range rs.tlsTargets() {
		tt.add(t.target, t.measured, t.verdict)
	}
	doc = append(doc, block{heading: "Targets", table: tt})

	// Storm.
	if rs.maxRound("connect") > 0 || rs.get("gateway-tls", "connect") != nil {
		t, n := rs.roundTable("storm: connections/s", "connect", connRate, 0)
		t.add(roundRow("gateway / net/http, wss", rs.ratioRounds("gateway-tls", "tlsref", "connect", connRate), n, 2,
			f2(rs.pairedRatioOf("gateway-tls", "tlsref", "connect", connRate))+" (median of ratios)")...)
		c, _ := rs.roundTable("storm: server CPU µs per connection", "connect", usPerConn, 1)
		c.add(roundRow("gateway / net/http, wss", rs.ratioRounds("gateway-tls", "tlsref", "connect", usPerConn), n, 2,
			f2(rs.pairedRatioOf("gateway-tls", "tlsref", "connect", usPerConn))+" (median of ratios)")...)
		for _, p := range [][3]string{{"gateway-tls", "gateway", "gateway: TLS share (wss - ws)"}, {"tlsref", "tlsref-plain", "net/http: TLS share (wss - ws)"}} {
			m := rs.overheadRounds(p[0], p[1], "connect", usPerConn)
			c.add(roundRow(p[2], m, n, 1, f1(medianMap(m)))...)
		}
		cap, _ := rs.roundTable("storm: server capacity, connections per CPU-second of the server (1e6 / µs per connection)", "connect", func(r *run) float64 {
			return 1e6 / usPerConn(r)
		}, 0)
		sc, _ := rs.roundTable("storm: server cores busy over the connect phase (rate x CPU per connection)", "connect", func(r *run) float64 {
			return connRate(r) * usPerConn(r) / 1e6
		}, 2)
		g, _ := rs.roundTable("storm: the load generator's cores over the connect phase (1 = its one CPU is the limit)", "connect", genCores, 2)
		lt := &table{head: []string{"storm, median round by rate", "established", "connect p50 / p99 ms", "auth p99 ms", "initialize p99 ms", "errors"}}
		for _, s := range tlsServers {
			r := rs.pickBy(s, "connect", func(r *run) float64 { return -connRate(r) })
			if r == nil {
				continue
			}
			lt.add(tlsNames[s], established(r), f2(pct(r, "connect", p50))+" / "+f2(pct(r, "connect", p99)),
				f2(pct(r, "auth", p99)), f2(pct(r, "initialize", p99)), errorText(r.rep))
		}
		doc = append(doc, block{heading: "Reconnect storm, round by round", table: t}, block{table: c}, block{table: cap}, block{table: sc}, block{table: g}, block{table: lt},
			block{text: []string{"The server's capacity in a storm is 1e6 / (µs per connection) connections per second per core it has. " +
				"The measured rate is bounded by more than the server: the load generator makes the client half of every handshake on its one CPU " +
				"(when its cores figure is near 1, it set the rate), and on this shared VM both CPUs are also other jobs' (when neither the server's nor the generator's cores " +
				"is near 1, the run got only part of the machine, and its rate says how much). The CPU per connection is the figure that tells the servers apart most steadily."}})
	}

	// Steady state: the open-loop runs (equal load) carry the verdict, the
	// closed-loop runs give each server's capacity.
	cores := func(r *run) float64 {
		if r == nil || r.rep == nil || r.rep.Server == nil {
			return math.NaN()
		}
		return r.rep.Server.CoresDuringRun
	}
	for _, sc := range []string{"open-small", "open-large", "closed-small", "closed-large"} {
		if rs.maxRound(sc) == 0 && rs.get("gateway-tls", sc) == nil {
			continue
		}
		conns, load := "?", "closed loop"
		if r := rs.pick("gateway-tls", sc); r != nil && r.rep != nil {
			conns = thousands(int64(r.rep.Settings.Conns))
			if r.rep.Settings.Rate > 0 {
				load = "open loop, " + thousands(int64(r.rep.Settings.Rate)) + " calls/s"
			}
		}
		label := fmt.Sprintf("%s connections, %s", conns, load)
		t, n := rs.roundTable(label+": server CPU µs/call", sc, usPerCall, 2)
		for _, p := range [][3]string{{"gateway-tls", "gateway", "gateway: TLS overhead (wss - ws)"}, {"tlsref", "tlsref-plain", "net/http: TLS overhead (wss - ws)"}} {
			m := rs.overheadRounds(p[0], p[1], sc, usPerCall)
			t.add(roundRow(p[2], m, n, 2, f2(medianMap(m)))...)
		}
		ex := rs.overheadExcess(sc, usPerCall)
		t.add(roundRow("gateway's overhead - net/http's", ex, n, 2, signed(medianMap(ex)))...)
		ct, _ := rs.roundTable(label+": calls/s", sc, callsPerSec, 0)
		ctab, _ := rs.roundTable(label+": server cores busy", sc, cores, 2)
		lt, _ := rs.roundTable(label+": call p99 ms", sc, callP99, 2)
		doc = append(doc, block{heading: "Steady state, " + label + ", round by round", table: t}, block{table: ct}, block{table: ctab}, block{table: lt})
	}

	// Idle.
	it := &table{head: []string{"idle", "established", "RSS before -> open -> end of hold (MiB)", "KiB per connection, open / end"}}
	for _, s := range tlsServers {
		r := rs.get(s, "idle")
		if r == nil || r.rep == nil || r.rep.Server == nil {
			continue
		}
		sv := r.rep.Server
		it.add(tlsNames[s], established(r), mib(sv.RSSBefore)+" -> "+mib(sv.RSSConnected)+" -> "+mib(sv.RSSEnd), f2(kibOpen(r))+" / "+f2(kibEnd(r)))
	}
	if len(it.rows) > 0 {
		doc = append(doc, block{heading: "Idle connections (each server started fresh, alone)", table: it})
	}

	doc = append(doc, rs.tlsStealBlocks()...)

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

// tlsStealBlocks: the steal on the servers' CPU for every recorded run.
func (rs *results) tlsStealBlocks() []block {
	n := max(rs.maxRound("connect"), rs.maxRound("open-small"), rs.maxRound("open-large"), rs.maxRound("closed-small"), rs.maxRound("closed-large"), 1)
	head := []string{"steal % on the servers' CPU: run / worst 100 ms"}
	for i := 1; i <= n; i++ {
		head = append(head, fmt.Sprintf("round %d", i))
	}
	t := &table{head: head}
	recorded := false
	for _, sc := range []string{"connect", "open-small", "open-large", "closed-small", "closed-large"} {
		for _, s := range tlsServers {
			rr := rs.rounds(s, sc)
			if len(rr) == 0 {
				continue
			}
			row := []string{tlsNames[s] + ", " + sc}
			for i := 1; i <= n; i++ {
				row = append(row, na)
			}
			for _, r := range rr {
				i := max(r.round, 1)
				if i > n {
					continue
				}
				if run, worst := rs.steal(r); !math.IsNaN(run) {
					row[i] = f1(run) + " / " + f1(worst)
					recorded = true
				}
			}
			t.add(row...)
		}
	}
	if !recorded {
		return nil
	}
	return []block{{heading: "Steal, round by round", table: t}, {text: []string{
		"Steal is the share of the servers' CPU that the hypervisor gave to another tenant during the measured phase (the connect phase for the storm, the call phase otherwise), from /proc/stat as recorded by `gateway bench`. " +
			"A round with tens of percent is one to read with care; the paired ratios cancel what hits both servers of a round alike, not a burst that hits one run."}}}
}

func cmdTLSReport(args []string) error {
	fs := flag.NewFlagSet("tlsreport", flag.ContinueOnError)
	dir := fs.String("dir", "", "directory of the run's JSON files")
	meta := fs.String("meta", "", "the run's meta file (key<TAB>value lines)")
	md := fs.String("md", "", "Markdown output (default stdout)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *dir == "" {
		return errors.New("-dir is required")
	}
	rs, err := loadResults(*dir, *meta)
	if err != nil {
		return err
	}
	text := renderMD(rs.tlsDocument())
	if *md == "" {
		_, err = os.Stdout.WriteString(text)
		return err
	}
	return os.WriteFile(*md, []byte(text), 0o644)
}

// cmdTLSProbe makes one TLS connection as gateway bench's client does
// (crypto/tls defaults, no certificate check) and prints what was
// negotiated: version, cipher suite, key exchange group, certificate key.
func cmdTLSProbe(args []string) error {
	fs := flag.NewFlagSet("tlsprobe", flag.ContinueOnError)
	addr := fs.String("addr", "", "host:port (loopback only)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	host, _, err := net.SplitHostPort(*addr)
	if err != nil {
		return err
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("%s: loopback addresses only", *addr)
	}
	d := &net.Dialer{Timeout: 5 * time.Second}
	c, err := tls.DialWithDialer(d, "tcp", *addr, &tls.Config{ServerName: host, InsecureSkipVerify: true}) //nolint:gosec // loopback probe of a self-signed test server
	if err != nil {
		return err
	}
	defer c.Close()
	st := c.ConnectionState()
	key := "?"
	if len(st.PeerCertificates) > 0 {
		key = st.PeerCertificates[0].PublicKeyAlgorithm.String()
	}
	fmt.Printf("%s, %s, key exchange %s, certificate key %s, resumed %v\n",
		tls.VersionName(st.Version), tls.CipherSuiteName(st.CipherSuite), st.CurveID, key, st.DidResume)
	return nil
}
