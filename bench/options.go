package bench

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"
)

// Hard bounds: the tool is a load generator, so it refuses runs that could
// not be meant (a typo in --conns or --duration must not become a flood).
const (
	maxConnsHard      = 100_000
	maxDurationHard   = time.Hour
	maxRateHard       = 1_000_000
	maxInflightHard   = 1024
	maxMessageHard    = 16 << 20
	maxPerProcessHard = 18_000 // stays under the 20,000-file hard limit with room for pipes
)

// Modes of a run.
const (
	ModeConnect = "connect"
	ModeIdle    = "idle"
	ModeCall    = "call"
)

// Options are the parsed flags of one run. They travel to worker processes
// as JSON, so every field that a worker needs is exported.
type Options struct {
	Mode            string        `json:"mode"`
	URL             string        `json:"url"`
	Token           string        `json:"token,omitempty"`
	Auth            string        `json:"auth"` // message, header or none
	Conns           int           `json:"conns"`
	Duration        time.Duration `json:"duration"`
	Ramp            float64       `json:"ramp"` // connections per second, 0 = as fast as dial_concurrency allows
	DialConcurrency int           `json:"dial_concurrency"`
	Rate            float64       `json:"rate"` // calls per second in all, 0 = closed loop
	Inflight        int           `json:"inflight"`
	MessageSize     int           `json:"message_size"`
	Tool            string        `json:"tool"`
	Timeout         time.Duration `json:"timeout"`
	NoInit          bool          `json:"no_init"`
	Origin          string        `json:"origin,omitempty"`
	Subprotocol     string        `json:"subprotocol"`
	ProtocolVersion string        `json:"protocol_version"`
	AllowRemote     []string      `json:"allow_remote,omitempty"`
	SourceIPs       int           `json:"source_ips"` // 0 = auto
	PerProcess      int           `json:"per_process"`
	Pacers          int           `json:"pacers"`
	Settle          time.Duration `json:"settle"`
	TLSInsecure     bool          `json:"tls_insecure,omitempty"`

	// Parent-only settings (not used by workers).
	OutJSON    string `json:"-"`
	OutHTML    string `json:"-"`
	ServerPIDs []int  `json:"-"`
	MetricsURL string `json:"-"`
	Quiet      bool   `json:"-"`
	worker     bool
}

// listFlag collects a repeatable or comma-separated flag.
type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, ",") }
func (l *listFlag) Set(s string) error {
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			*l = append(*l, p)
		}
	}
	return nil
}

const usageHead = `usage: gateway bench [flags]

Load generator for MCP WebSocket servers (ours or others). Targets only loopback
unless --allow-remote names the host. Modes:
  connect  connect, authenticate, initialize, close (per connection, once)
  idle     open --conns connections, authenticate, initialize, hold --duration
  call     tools/call echo for --duration: --rate R calls/s open loop (latency from
           the intended send time), or --rate 0 closed loop with --inflight per conn

flags:
`

// parseOptions parses the command line. It returns flag.ErrHelp for -h.
// The usage goes to help.
func parseOptions(args []string, help io.Writer) (*Options, error) {
	o := &Options{}
	fs := flag.NewFlagSet("gateway bench", flag.ContinueOnError)
	// Errors are printed once by Main; the full flag list only for -h.
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	var tokenFile, pids string
	var allow listFlag
	fs.StringVar(&o.Mode, "mode", ModeCall, "connect, idle or call")
	fs.StringVar(&o.URL, "url", "ws://127.0.0.1:8080/mcp", "target WebSocket URL (ws:// or wss://)")
	fs.StringVar(&o.Token, "token", "", "access token (default $GATEWAY_BENCH_TOKEN)")
	fs.StringVar(&tokenFile, "token-file", "", "read the access token from this file")
	fs.StringVar(&o.Auth, "auth", "message", `how to authenticate: "message" ({"type":"auth"} first), "header" (Authorization: Bearer) or "none"`)
	fs.IntVar(&o.Conns, "conns", 100, fmt.Sprintf("connections (at most %d)", maxConnsHard))
	fs.DurationVar(&o.Duration, "duration", 10*time.Second, fmt.Sprintf("idle hold or call phase length (at most %s)", maxDurationHard))
	fs.Float64Var(&o.Ramp, "ramp", 0, "connections opened per second (0: as fast as --dial-concurrency allows)")
	fs.IntVar(&o.DialConcurrency, "dial-concurrency", 200, "connection attempts in flight per process")
	fs.Float64Var(&o.Rate, "rate", 0, "call mode: calls per second over all connections, open loop (0: closed loop)")
	fs.IntVar(&o.Inflight, "inflight", 1, "call mode, closed loop: requests in flight per connection")
	fs.IntVar(&o.MessageSize, "message-size", 64, "call mode: bytes of the echo message argument")
	fs.StringVar(&o.Tool, "tool", "echo", "call mode: tool name, called with {\"message\": ...}")
	fs.DurationVar(&o.Timeout, "timeout", 10*time.Second, "bound on each connect, auth, initialize and call")
	fs.BoolVar(&o.NoInit, "no-init", false, "skip the MCP initialize handshake")
	fs.StringVar(&o.Origin, "origin", "", "Origin header to send (default none)")
	fs.StringVar(&o.Subprotocol, "subprotocol", "mcp", `WebSocket subprotocol to offer ("" for none)`)
	fs.StringVar(&o.ProtocolVersion, "protocol-version", "2025-06-18", "MCP protocolVersion sent in initialize")
	fs.Var(&allow, "allow-remote", "allow this non-loopback host as a target (repeatable)")
	fs.IntVar(&o.SourceIPs, "source-ips", 0, "spread connections over this many 127.0.0.x source addresses (0: one per 20,000 connections)")
	fs.IntVar(&o.PerProcess, "per-process", 15000, "connections per process; above it the run is split over worker processes")
	fs.IntVar(&o.Pacers, "pacers", 1, "call mode, open loop: sending threads per process")
	fs.DurationVar(&o.Settle, "settle", time.Second, "wait after connecting before sampling the server and starting")
	fs.BoolVar(&o.TLSInsecure, "insecure", false, "wss: skip certificate verification (self-signed test servers)")
	fs.StringVar(&o.OutJSON, "out-json", "", `write the JSON report to this file ("-": stdout instead of the table)`)
	fs.StringVar(&o.OutHTML, "out-html", "", "write a self-contained HTML report to this file")
	fs.StringVar(&pids, "server-pid", "", "server PID(s), comma-separated: RSS and CPU from /proc (children included)")
	fs.StringVar(&o.MetricsURL, "metrics-url", "", "server Prometheus /metrics URL: RSS and CPU from process_* metrics")
	fs.BoolVar(&o.Quiet, "quiet", false, "no progress line, even on a terminal")
	fs.BoolVar(&o.worker, "worker", false, "internal: run as a worker process (JSON on stdin/stdout)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(help, usageHead)
			fs.SetOutput(help)
			fs.PrintDefaults()
		}
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	o.AllowRemote = allow
	if o.worker {
		return o, nil
	}
	if tokenFile != "" {
		if o.Token != "" {
			return nil, errors.New("--token and --token-file are exclusive")
		}
		b, err := os.ReadFile(tokenFile)
		if err != nil {
			return nil, err
		}
		o.Token = strings.TrimSpace(string(b))
	}
	if o.Token == "" {
		o.Token = os.Getenv("GATEWAY_BENCH_TOKEN")
	}
	for _, p := range strings.Split(pids, ",") {
		if p = strings.TrimSpace(p); p == "" {
			continue
		}
		n, err := strconv.Atoi(p)
		if err != nil || n <= 0 {
			return nil, fmt.Errorf("--server-pid: bad PID %q", p)
		}
		o.ServerPIDs = append(o.ServerPIDs, n)
	}
	return o, o.validate()
}

// validate checks ranges and the hard bounds.
func (o *Options) validate() error {
	switch o.Mode {
	case ModeConnect, ModeIdle, ModeCall:
	default:
		return fmt.Errorf("--mode: %q is not connect, idle or call", o.Mode)
	}
	switch o.Auth {
	case "message", "header":
		if o.Token == "" {
			return fmt.Errorf("--auth %s needs --token, --token-file or $GATEWAY_BENCH_TOKEN", o.Auth)
		}
	case "none":
	default:
		return fmt.Errorf("--auth: %q is not message, header or none", o.Auth)
	}
	switch {
	case o.Conns < 1 || o.Conns > maxConnsHard:
		return fmt.Errorf("--conns must be 1..%d", maxConnsHard)
	case o.Duration < 0 || o.Duration > maxDurationHard:
		return fmt.Errorf("--duration must be 0..%s", maxDurationHard)
	case o.Mode == ModeCall && o.Duration <= 0:
		return errors.New("--duration must be positive in call mode")
	case o.Ramp < 0 || o.Ramp > maxRateHard:
		return fmt.Errorf("--ramp must be 0..%d", maxRateHard)
	case o.Rate < 0 || o.Rate > maxRateHard:
		return fmt.Errorf("--rate must be 0..%d", maxRateHard)
	case o.Inflight < 1 || o.Inflight > maxInflightHard:
		return fmt.Errorf("--inflight must be 1..%d", maxInflightHard)
	case o.MessageSize < 0 || o.MessageSize > maxMessageHard:
		return fmt.Errorf("--message-size must be 0..%d", maxMessageHard)
	case o.Timeout <= 0 || o.Timeout > 5*time.Minute:
		return errors.New("--timeout must be in (0, 5m]")
	case o.DialConcurrency < 1 || o.DialConcurrency > 10_000:
		return errors.New("--dial-concurrency must be 1..10000")
	case o.SourceIPs < 0 || o.SourceIPs > 254:
		return errors.New("--source-ips must be 0..254")
	case o.PerProcess < 1 || o.PerProcess > maxPerProcessHard:
		return fmt.Errorf("--per-process must be 1..%d", maxPerProcessHard)
	case o.Pacers < 1 || o.Pacers > 64:
		return errors.New("--pacers must be 1..64")
	case o.Settle < 0 || o.Settle > time.Minute:
		return errors.New("--settle must be 0..1m")
	case strings.ContainsAny(o.Tool, `"\`):
		return errors.New("--tool must not contain quotes or backslashes")
	}
	if len(o.ServerPIDs) > 0 && o.MetricsURL != "" {
		return errors.New("--server-pid and --metrics-url are exclusive")
	}
	return nil
}

// workers is the number of processes the run is split over (1 = in-process).
func (o *Options) workers() int {
	return (o.Conns + o.PerProcess - 1) / o.PerProcess
}
