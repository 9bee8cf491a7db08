// Package bench is the load generator behind `gateway bench` (SPEC 7).
//
// It opens N WebSocket connections to an MCP endpoint, authenticates them
// (first-message auth, a bearer header, or none), runs the MCP initialize
// handshake, and then closes them (connect mode), holds them (idle mode) or
// sends tools/call echo requests (call mode) either open loop at a fixed
// rate, with latency measured from each call's intended send time so that a
// stalled server cannot hide its stall (no coordinated omission), or closed
// loop with a fixed number in flight per connection.
//
// Latencies go into HDR histograms; errors are counted by kind. Given the
// server's PID (or its /metrics URL) it reports the server's RSS growth per
// connection and CPU time per call. Output is a text table, JSON and a
// self-contained HTML report with inline SVG plots.
//
// One process holds at most --per-process connections (this machine's hard
// limit is 20,000 open files per process); larger runs re-execute the binary
// as worker processes (`gateway bench --worker`, JSON over stdin and stdout)
// and merge their histograms. Connections to an IPv4 loopback target are
// spread over source addresses 127.0.0.1..k so that one destination is not
// limited to one address's ephemeral ports.
//
// The tool is bounded: it targets only loopback unless --allow-remote names
// the host, and caps connections, duration and rates.
package bench

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// usageError is a bad command line or an unusable target (exit 2).
type usageError struct{ error }

// Main runs `gateway bench` with its arguments and returns the exit code:
// 0 ok, 1 runtime failure or interrupted (the report is still written), 2
// usage error.
func Main(args []string, stdout, stderr io.Writer) int {
	o, err := parseOptions(args, stdout) // -h: the usage, on stdout
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "gateway bench: %v (see gateway bench -h)\n", err)
		return 2
	}
	if o.worker {
		if os.Getenv(workerEnv) != "1" {
			fmt.Fprintln(stderr, "gateway bench: --worker is internal (used by the parent process)")
			return 2
		}
		return workerMain(os.Stdin, stdout)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// The first Ctrl-C ends the run early with a report; a second one kills.
	context.AfterFunc(ctx, stop)
	rep, err := runBench(ctx, o, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "gateway bench: %v\n", err)
		var ue usageError
		if errors.As(err, &ue) {
			return 2
		}
		return 1
	}
	if err := writeOutputs(o, rep, stdout); err != nil {
		fmt.Fprintf(stderr, "gateway bench: %v\n", err)
		return 1
	}
	if rep.Interrupted {
		fmt.Fprintln(stderr, "gateway bench: interrupted; the report covers the run up to the interruption")
		return 1
	}
	if rep.Connections.Established == 0 {
		fmt.Fprintln(stderr, "gateway bench: no connection was established")
		return 1
	}
	return 0
}

func writeOutputs(o *Options, rep *Report, stdout io.Writer) error {
	if o.OutJSON == "-" {
		if err := rep.WriteJSON(stdout); err != nil {
			return err
		}
	} else if err := rep.WriteText(stdout); err != nil {
		return err
	}
	if o.OutJSON != "" && o.OutJSON != "-" {
		if err := writeFile(o.OutJSON, rep.WriteJSON); err != nil {
			return err
		}
	}
	if o.OutHTML != "" {
		if err := writeFile(o.OutHTML, rep.WriteHTML); err != nil {
			return err
		}
	}
	return nil
}

// runBench runs the phases over every runner: connect, settle and sample,
// run (hold or calls), sample, close and merge.
func runBench(ctx context.Context, o *Options, stderr io.Writer) (*Report, error) {
	t, err := resolveTarget(ctx, o.URL, o.AllowRemote, systemResolver)
	if err != nil {
		return nil, usageError{err}
	}
	if o.SourceIPs == 0 {
		o.SourceIPs = autoSourceIPs(o.Conns)
	}
	t.sources = sourceAddrs(t, o.SourceIPs)
	smp := newSampler(o)
	var sampleErrs []string
	sample := func() (serverSample, bool) {
		if smp == nil {
			return serverSample{}, false
		}
		s, err := smp.sample(context.Background())
		if err != nil {
			sampleErrs = append(sampleErrs, err.Error())
			return s, false
		}
		return s, true
	}
	before, ok := sample()
	if smp != nil && !ok {
		return nil, usageError{fmt.Errorf("reading the server: %s", sampleErrs[0])}
	}

	started := time.Now()
	var interruptedAt atomic.Int64 // Unix ns of the Ctrl-C, 0 if none
	defer context.AfterFunc(ctx, func() { interruptedAt.Store(time.Now().UnixNano()) })()
	nw := o.workers()
	runners := make([]runner, 0, nw)
	finished := false
	defer func() {
		if finished {
			return
		}
		for _, r := range runners {
			if rr, ok := r.(*remoteRunner); ok {
				rr.stop() // an error cut the run short: let no worker linger
			}
		}
	}()
	if nw == 1 {
		runners = append(runners, &localRunner{newEngine(o, t, 0, o.Conns, o.Conns, started)})
	} else {
		stderr = &lockedWriter{w: stderr} // workers' stderr is copied by one goroutine each
		for w := range nw {
			first, last := w*o.Conns/nw, (w+1)*o.Conns/nw
			r, err := startWorker(o, first, last-first, o.Conns, started, stderr)
			if err != nil {
				return nil, err
			}
			runners = append(runners, r)
		}
	}
	prog := startProgress(stderr, !o.Quiet && isTerminal(stderr), o.Conns, func() liveCounts {
		var l liveCounts
		for _, r := range runners {
			l.add(r.live())
		}
		return l
	})
	defer prog.end()

	prog.set("connecting", 0)
	// The host's CPUs (steal) over the phase that is measured: in connect
	// mode that is the connect phase itself, else the run phase below.
	var host *hostSampler
	if o.Mode == ModeConnect {
		host = startHostSampler(readProcStat)
	}
	if err := each(runners, func(_ int, r runner) error { return r.connect(ctx) }); err != nil {
		host.stop()
		return nil, err
	}
	prog.set("settling", o.Settle)
	if o.Mode != ModeConnect {
		sleepUntil(ctx, time.Now().Add(o.Settle))
	}
	connected, _ := sample()
	prog.set(map[string]string{ModeConnect: "closing", ModeIdle: "holding", ModeCall: "calling"}[o.Mode], o.Duration)
	// A short lead so that every worker has the start instant before it passes.
	start := time.Now().Add(50 * time.Millisecond)
	cpu0, cpuOK := processCPUSecs()
	if host == nil {
		host = startHostSampler(readProcStat)
	}
	if err := each(runners, func(_ int, r runner) error { return r.run(ctx, start) }); err != nil {
		host.stop()
		return nil, err
	}
	runSecs := time.Since(start).Seconds()
	cpu1, _ := processCPUSecs()
	hostStats := host.stop()
	end, _ := sample()
	prog.set("closing", 0)
	parts := make([]*Partial, len(runners))
	err = each(runners, func(i int, r runner) error {
		var err error
		parts[i], err = r.finish()
		return err
	})
	finished = true // finish stopped the workers
	if err != nil {
		return nil, err
	}
	prog.end()
	var m Partial
	for _, p := range parts {
		m.merge(p)
	}
	rep := buildReport(o, started, nw, &m)
	rep.Host = hostStats
	if o.Mode == ModeCall && cpuOK {
		// This process's CPU (its own engine, or the driving of the
		// workers) plus what each worker measured over its call phase.
		cpu := cpu1 - cpu0
		for i, r := range runners {
			if _, ok := r.(*remoteRunner); ok {
				cpu += parts[i].CPUSecs
			}
		}
		rep.Generator = generatorStats(cpu, runSecs, m.Completed, m.Engine)
	}
	if o.Mode == ModeConnect && cpuOK {
		// Each process measured its own connect phase (engine.connect).
		var cpu float64
		for _, p := range parts {
			cpu += p.CPUSecs
		}
		rep.Generator = connectGeneratorStats(cpu, m.ConnectSecs, m.Established)
	}
	if at := interruptedAt.Load(); at != 0 {
		// Rates are over the part of the call phase that ran.
		rep.Interrupted = true
		if rep.Calls != nil {
			rep.Calls.Secs = min(max(time.Unix(0, at).Sub(start).Seconds(), 0.001), o.Duration.Seconds())
			rep.Calls.Throughput = float64(m.Completed) / rep.Calls.Secs
		}
	}
	if smp != nil {
		rep.Server = serverStats(smp.source(), before, connected, end, &m, runSecs, sampleErrs)
	}
	return rep, nil
}

// each runs fn on every runner concurrently and returns the first error.
func each(rs []runner, fn func(int, runner) error) error {
	errs := make([]error, len(rs))
	var wg sync.WaitGroup
	for i, r := range rs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = fn(i, r)
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

func buildReport(o *Options, started time.Time, workers int, m *Partial) *Report {
	rep := &Report{
		Tool: "gateway bench", Started: started.UTC().Truncate(time.Second), Mode: o.Mode, URL: o.URL,
		Settings: Settings{
			Conns: o.Conns, Duration: o.Duration.String(), MessageSize: o.MessageSize, Ramp: o.Ramp,
			Auth: o.Auth, Init: !o.NoInit, Subprotocol: o.Subprotocol, Origin: o.Origin,
			SourceIPs: o.SourceIPs, Workers: workers, Timeout: o.Timeout.String(),
		},
		Machine: machineInfo(),
		Connections: ConnStats{
			Target: o.Conns, Attempted: m.Attempted, Established: m.Established,
			Failed: m.Attempted - m.Established, Lost: m.Lost, ConnectSecs: m.ConnectSecs,
		},
		Latency:    latencyRows(m.Hists),
		Errors:     errorRows(m.Errors),
		ErrorTotal: m.errorTotal(),
		Hists:      m.Hists,
	}
	rep.Hints = limitHints(rep.Errors)
	if m.ConnectSecs > 0 {
		rep.Connections.PerSec = float64(m.Established) / m.ConnectSecs
	}
	if o.Mode == ModeCall {
		rep.Settings.Rate = o.Rate
		if o.Rate == 0 {
			rep.Settings.Inflight = o.Inflight
		} else {
			rep.Settings.Pacers = o.Pacers
		}
		secs := o.Duration.Seconds()
		rep.Calls = &CallStats{
			Sent: m.Sent, Completed: m.Completed, Secs: secs,
			Throughput: float64(m.Completed) / secs, TargetRate: o.Rate, Notices: m.Notices,
		}
		rep.PerSecond = m.PerSecond
	}
	return rep
}

// serverStats turns three samples into per-connection and per-call figures:
// before connecting, after connecting (+ --settle), and at the end of the
// hold or call phase.
func serverStats(src string, before, connected, end serverSample, m *Partial, runSecs float64, errs []string) *ServerStats {
	s := &ServerStats{
		Source: src, Procs: end.Procs,
		RSSBefore: before.RSSBytes, RSSConnected: connected.RSSBytes, RSSEnd: end.RSSBytes,
		CPUConnectSecs:  connected.CPUSecs - before.CPUSecs,
		CPURunSecs:      end.CPUSecs - connected.CPUSecs,
		SampleErrorText: errs,
	}
	if n := float64(m.Established); n > 0 {
		s.KiBPerConnOpen = float64(connected.RSSBytes-before.RSSBytes) / 1024 / n
		s.KiBPerConnEnd = float64(end.RSSBytes-before.RSSBytes) / 1024 / n
		s.USPerConn = s.CPUConnectSecs * 1e6 / n
	}
	if m.Completed > 0 {
		s.USPerCall = s.CPURunSecs * 1e6 / float64(m.Completed)
	}
	addCPUSplit(s, connected, end, m.Completed) // server.go
	if runSecs > 0 {
		s.CoresDuringRun = s.CPURunSecs / runSecs
	}
	return s
}

// GeneratorStats is the load generator's own CPU time during the call
// phase: when it nears one core per process, the generator, not the
// server, may be what limits the run (compare send_lag).
type GeneratorStats struct {
	CPUSecs   float64 `json:"cpu_secs"`
	Cores     float64 `json:"cores"` // cpu_secs / wall seconds of the call phase (connect mode: the connect phase)
	USPerCall float64 `json:"us_per_call,omitempty"`
	USPerConn float64 `json:"us_per_conn,omitempty"` // connect mode: over the connect phase
	Engine    string  `json:"engine,omitempty"`      // epoll or goroutine
}

func generatorStats(cpu, secs float64, completed int64, engine string) *GeneratorStats {
	g := &GeneratorStats{CPUSecs: cpu, Engine: engine}
	if secs > 0 {
		g.Cores = cpu / secs
	}
	if completed > 0 {
		g.USPerCall = cpu * 1e6 / float64(completed)
	}
	return g
}

// connectGeneratorStats is the generator's CPU over the connect phase of
// connect mode: near one core per process, the client's own handshakes
// (TLS above all) and not the server set the rate.
func connectGeneratorStats(cpu, secs float64, established int64) *GeneratorStats {
	g := &GeneratorStats{CPUSecs: cpu}
	if secs > 0 {
		g.Cores = cpu / secs
	}
	if established > 0 {
		g.USPerConn = cpu * 1e6 / float64(established)
	}
	return g
}

// text is the report's table line.
func (g *GeneratorStats) text() string {
	s := fmt.Sprintf("generator: %.2f cores", g.Cores)
	if g.USPerCall > 0 {
		s += fmt.Sprintf(" (%.2f µs/call)", g.USPerCall)
	}
	if g.USPerConn > 0 {
		s += fmt.Sprintf(" (%.1f µs/conn, connect phase)", g.USPerConn)
	}
	if g.Engine != "" {
		s += ", " + g.Engine + " engine"
	}
	return s + "\n"
}

// lockedWriter serialises writes from several goroutines.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
