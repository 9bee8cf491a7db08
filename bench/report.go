package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"
	"text/tabwriter"
	"time"
)

// Report is the outcome of a run: printed as a table, written as JSON
// (--out-json) and rendered as HTML (--out-html).
type Report struct {
	Tool        string          `json:"tool"`
	Started     time.Time       `json:"started"`
	Mode        string          `json:"mode"`
	Interrupted bool            `json:"interrupted,omitempty"` // Ctrl-C or SIGTERM ended the run early
	URL         string          `json:"url"`
	Settings    Settings        `json:"settings"`
	Machine     Machine         `json:"machine"`
	Connections ConnStats       `json:"connections"`
	Calls       *CallStats      `json:"calls,omitempty"`
	Latency     []LatencyRow    `json:"latency_ms"`
	Errors      []ErrorRow      `json:"errors"`
	ErrorTotal  int64           `json:"error_total"`
	Hints       []string        `json:"hints,omitempty"` // the gateway limit behind the errors (limitHints)
	Server      *ServerStats    `json:"server,omitempty"`
	Generator   *GeneratorStats `json:"generator,omitempty"` // the bench's own CPU in the call phase (bench.go)
	Host        *HostStats      `json:"host,omitempty"`      // the machine's CPUs over the run phase; connect mode: the connect phase (host.go)
	PerSecond   []int64         `json:"calls_per_second,omitempty"`
	Hists       map[string]Hist `json:"hdr,omitempty"` // HdrHistogram V2 base64, µs
}

// Settings echo the options that shape the numbers.
type Settings struct {
	Conns       int     `json:"conns"`
	Duration    string  `json:"duration"`
	Rate        float64 `json:"rate"` // 0 = closed loop
	Inflight    int     `json:"inflight,omitempty"`
	MessageSize int     `json:"message_size"`
	Ramp        float64 `json:"ramp"`
	Auth        string  `json:"auth"`
	Init        bool    `json:"initialize"`
	Subprotocol string  `json:"subprotocol"`
	Origin      string  `json:"origin,omitempty"`
	SourceIPs   int     `json:"source_ips"`
	Workers     int     `json:"workers"`
	Pacers      int     `json:"pacers,omitempty"`
	Timeout     string  `json:"timeout"`
}

// Machine describes where the run happened.
type Machine struct {
	CPU        string `json:"cpu,omitempty"`
	CPUs       int    `json:"cpus"`
	MemTotal   string `json:"mem_total,omitempty"`
	Kernel     string `json:"kernel,omitempty"`
	OS         string `json:"os"`
	GoVersion  string `json:"go"`
	GOMAXPROCS int    `json:"gomaxprocs"`
}

// ConnStats count connections.
type ConnStats struct {
	Target      int     `json:"target"`
	Attempted   int64   `json:"attempted"`
	Established int64   `json:"established"`
	Failed      int64   `json:"failed"`
	Lost        int64   `json:"lost"`
	ConnectSecs float64 `json:"connect_secs"`
	PerSec      float64 `json:"per_sec"`
}

// CallStats count calls.
type CallStats struct {
	Sent       int64   `json:"sent"`
	Completed  int64   `json:"completed"`
	Secs       float64 `json:"secs"`
	Throughput float64 `json:"per_sec"`
	TargetRate float64 `json:"target_rate,omitempty"`
	Notices    int64   `json:"notices,omitempty"`
}

// LatencyRow is one histogram's summary in milliseconds.
type LatencyRow struct {
	Name  string  `json:"name"`
	Count int64   `json:"count"`
	Min   float64 `json:"min"`
	Mean  float64 `json:"mean"`
	P50   float64 `json:"p50"`
	P90   float64 `json:"p90"`
	P99   float64 `json:"p99"`
	P999  float64 `json:"p99_9"`
	Max   float64 `json:"max"`
}

// ErrorRow is one error kind.
type ErrorRow struct {
	Kind  string `json:"kind"`
	Count int64  `json:"count"`
}

// ServerStats is the server's footprint, from /proc or /metrics.
type ServerStats struct {
	Source         string  `json:"source"`
	Procs          int     `json:"procs"`
	RSSBefore      int64   `json:"rss_before_bytes"`
	RSSConnected   int64   `json:"rss_connected_bytes"`
	RSSEnd         int64   `json:"rss_end_bytes"`
	KiBPerConnOpen float64 `json:"kib_per_conn_connected"` // just after connecting (+ --settle)
	KiBPerConnEnd  float64 `json:"kib_per_conn_end"`       // at the end of the hold or call phase
	CPUConnectSecs float64 `json:"cpu_connect_secs"`
	CPURunSecs     float64 `json:"cpu_run_secs"`
	USPerConn      float64 `json:"cpu_us_per_conn"`
	USPerCall      float64 `json:"cpu_us_per_call,omitempty"`
	// USPerCall split between the given processes and their descendants
	// (/proc only; absent from /metrics or without calls).
	USPerCallOwn      *float64 `json:"cpu_us_per_call_own,omitempty"`
	USPerCallChildren *float64 `json:"cpu_us_per_call_children,omitempty"`
	ChildProcs        int      `json:"child_procs,omitempty"` // descendants counted at the end
	CoresDuringRun    float64  `json:"cores_during_run"`
	SampleErrorText   []string `json:"sample_errors,omitempty"`
}

func ms(us int64) float64 { return float64(us) / 1000 }

// latencyRows summarises the histograms in report order.
func latencyRows(h map[string]Hist) []LatencyRow {
	var rows []LatencyRow
	for _, name := range histNames {
		x, ok := h[name]
		if !ok || x.Histogram == nil || x.TotalCount() == 0 {
			continue
		}
		rows = append(rows, LatencyRow{
			Name:  name,
			Count: x.TotalCount(),
			Min:   ms(x.Min()),
			Mean:  x.Mean() / 1000,
			P50:   ms(x.ValueAtQuantile(50)),
			P90:   ms(x.ValueAtQuantile(90)),
			P99:   ms(x.ValueAtQuantile(99)),
			P999:  ms(x.ValueAtQuantile(99.9)),
			Max:   ms(x.Max()),
		})
	}
	return rows
}

func errorRows(m map[string]int64) []ErrorRow {
	rows := []ErrorRow{}
	for _, k := range sortedKinds(m) {
		rows = append(rows, ErrorRow{Kind: k, Count: m[k]})
	}
	return rows
}

// machineInfo reads the little that /proc says about this machine.
func machineInfo() Machine {
	m := Machine{
		CPUs: runtime.NumCPU(), OS: runtime.GOOS + "/" + runtime.GOARCH,
		GoVersion: runtime.Version(), GOMAXPROCS: runtime.GOMAXPROCS(0),
	}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPU = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "MemTotal:"); ok {
				var kb int64
				fmt.Sscan(v, &kb)
				m.MemTotal = fmt.Sprintf("%.1f GiB", float64(kb)/(1<<20))
			}
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	return m
}

func fmtBytes(b int64) string {
	switch {
	case b >= 1<<30 || -b >= 1<<30:
		return fmt.Sprintf("%.2f GiB", float64(b)/(1<<30))
	case b >= 1<<20 || -b >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20))
	default:
		return fmt.Sprintf("%.1f KiB", float64(b)/(1<<10))
	}
}

func (r *Report) rateText() string {
	if r.Mode != ModeCall {
		return ""
	}
	if r.Settings.Rate > 0 {
		return fmt.Sprintf("  rate=%g/s open loop", r.Settings.Rate)
	}
	return fmt.Sprintf("  closed loop, inflight=%d/conn", r.Settings.Inflight)
}

// WriteText prints the report as a plain-text table.
func (r *Report) WriteText(w io.Writer) error {
	var b strings.Builder
	s := r.Settings
	fmt.Fprintf(&b, "gateway bench  mode=%s  url=%s  conns=%d", r.Mode, r.URL, s.Conns)
	if r.Mode != ModeConnect {
		fmt.Fprintf(&b, "  duration=%s", s.Duration)
	}
	if r.Mode == ModeCall {
		fmt.Fprintf(&b, "%s  message=%d B", r.rateText(), s.MessageSize)
	}
	b.WriteString("\n")
	fmt.Fprintf(&b, "machine: %s, %d CPUs, %s, linux %s, %s; %d worker process(es), %d source address(es)\n",
		orDash(r.Machine.CPU), r.Machine.CPUs, orDash(r.Machine.MemTotal), orDash(r.Machine.Kernel),
		r.Machine.GoVersion, s.Workers, s.SourceIPs)
	if r.Interrupted {
		b.WriteString("INTERRUPTED: the figures cover the run up to the interruption\n")
	}
	c := r.Connections
	fmt.Fprintf(&b, "connections: %d/%d established in %.2f s (%.0f/s), %d failed, %d lost\n",
		c.Established, c.Target, c.ConnectSecs, c.PerSec, c.Failed, c.Lost)
	if k := r.Calls; k != nil {
		fmt.Fprintf(&b, "calls: %d sent, %d completed in %.2f s: %.0f calls/s", k.Sent, k.Completed, k.Secs, k.Throughput)
		if k.TargetRate > 0 {
			fmt.Fprintf(&b, " (target %g/s)", k.TargetRate)
		}
		b.WriteString("\n")
	}
	if g := r.Generator; g != nil {
		b.WriteString(g.text())
	}
	if h := r.Host; h != nil && len(h.CPUs) > 0 {
		b.WriteString(h.text())
	}
	b.WriteString("\n")
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "latency (ms)\tcount\tp50\tp90\tp99\tp99.9\tmax\tmean\t")
	for _, l := range r.Latency {
		fmt.Fprintf(tw, "%s\t%d\t%.3f\t%.3f\t%.3f\t%.3f\t%.3f\t%.3f\t\n",
			l.Name, l.Count, l.P50, l.P90, l.P99, l.P999, l.Max, l.Mean)
	}
	tw.Flush()
	b.WriteString("\n")
	if len(r.Errors) == 0 {
		b.WriteString("errors: none\n")
	} else {
		fmt.Fprintf(&b, "errors: %d\n", r.ErrorTotal)
		for _, e := range r.Errors {
			fmt.Fprintf(&b, "  %8d  %s\n", e.Count, e.Kind)
		}
	}
	for _, h := range r.Hints {
		fmt.Fprintf(&b, "hint: %s\n", h)
	}
	if sv := r.Server; sv != nil {
		fmt.Fprintf(&b, "server (%s, %d process(es)):\n", sv.Source, sv.Procs)
		if r.Mode == ModeConnect {
			// The connections are closed again: only growth (a leak) is telling.
			fmt.Fprintf(&b, "  RSS %s before, %s after\n", fmtBytes(sv.RSSBefore), fmtBytes(sv.RSSEnd))
		} else {
			fmt.Fprintf(&b, "  RSS %s before, %s connected, %s at end: %.2f KiB/conn connected, %.2f KiB/conn at end\n",
				fmtBytes(sv.RSSBefore), fmtBytes(sv.RSSConnected), fmtBytes(sv.RSSEnd), sv.KiBPerConnOpen, sv.KiBPerConnEnd)
		}
		fmt.Fprintf(&b, "  CPU %.2f s connecting (%.1f µs/conn), %.2f s running (%.2f cores)",
			sv.CPUConnectSecs, sv.USPerConn, sv.CPURunSecs, sv.CoresDuringRun)
		if sv.USPerCall > 0 {
			fmt.Fprintf(&b, ": %.2f µs/call", sv.USPerCall)
			if sv.ChildProcs > 0 && sv.USPerCallOwn != nil && sv.USPerCallChildren != nil {
				fmt.Fprintf(&b, " (own %.2f + %d child process(es) %.2f)", *sv.USPerCallOwn, sv.ChildProcs, *sv.USPerCallChildren)
			}
		}
		b.WriteString("\n")
		for _, e := range sv.SampleErrorText {
			fmt.Fprintf(&b, "  sample error: %s\n", e)
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// WriteJSON writes the report as indented JSON.
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// writeFile writes with fn to path atomically enough for a report: a
// temporary file renamed into place, so a reader never sees half a file.
func writeFile(path string, fn func(io.Writer) error) error {
	tmp := path + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return err
	}
	if err := fn(f); err != nil {
		f.Close()
		os.Remove(tmp)
		return err
	}
	if err := f.Close(); err != nil {
		os.Remove(tmp)
		return err
	}
	return os.Rename(tmp, path)
}
