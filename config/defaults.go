package config

import "time"

// Per-upstream defaults, filled in by Parse (and in Default) for fields left at 0.
const (
	// DefaultStdioMax is an stdio upstream's max when the file leaves it at 0.
	DefaultStdioMax = 64
	// DefaultQueueDepth is a builtin upstream's queue_depth when left at 0.
	DefaultQueueDepth = 4096
	// DefaultRequestTimeout is an upstream's request_timeout when left at 0.
	DefaultRequestTimeout = 60 * time.Second
	// PreAuthFrames is how many frames a connection may send before it is
	// authenticated (SPEC 10); one more: close 1008 "Rate limit exceeded".
	PreAuthFrames = 32
	// DefaultMaxBatch is limits.max_batch when the file leaves it out: the
	// most elements of one JSON-RPC batch (SPEC 10).
	DefaultMaxBatch = 16
)

// Client-address prefixes of the per-IP limits (limits.ipv6_prefix and
// limits.ipv4_prefix): the defaults and the shortest accepted. An IPv6 /64
// is the usual allocation to one subscriber or host (RFC 6177), so keying
// on /128 would let one client take 2^64 budgets.
const (
	DefaultIPv6Prefix = 64
	DefaultIPv4Prefix = 32
	MinIPv6Prefix     = 32
	MinIPv4Prefix     = 16
)

// DefaultEnvPassthrough names the variables a stdio child inherits from the
// gateway when upstreams[].env_passthrough is not set.
var DefaultEnvPassthrough = []string{"PATH", "HOME", "LANG"}

// Default returns the embedded default configuration. It is the single source
// of defaults: Load decodes a file over it, `gateway serve` without -c runs it
// (after adding a random token to Auth.ExtraTokens, since it configures no
// other credential and Validate refuses an empty auth configuration), and
// docs/config.md documents these values. Each call returns a fresh copy.
func Default() *Config {
	return &Config{
		Listen: Listeners{"127.0.0.1:8080"},
		Path:   "/mcp",
		// Per-loop listeners keep accept() under the connection cap (see
		// Config.ReusePort).
		ReusePort: true,
		TLS:       TLS{MinVersion: "1.2"},
		Proxy:     Proxy{TrustedCIDRs: []string{}},
		Origins: Origins{
			Allowed:     []string{},
			AllowAbsent: true,
		},
		Auth: Auth{
			Timeout: Duration(5 * time.Second),
			Header:  true,
			Tickets: Tickets{TTL: Duration(30 * time.Second)},
		},
		Limits: Limits{
			MaxMessageBytes:     1 << 20,
			MaxPreAuthBytes:     16 << 10,
			MaxHeaderBytes:      8 << 10,
			HandshakeTimeout:    Duration(10 * time.Second),
			MaxConnections:      0,
			MaxConnectionsPerIP: 256,
			IPv6Prefix:          DefaultIPv6Prefix,
			IPv4Prefix:          DefaultIPv4Prefix,
			MaxPendingAuth:      20000,
			IdleTimeout:         Duration(120 * time.Second),
			PingInterval:        Duration(30 * time.Second),
			WriteBufferBytes:    4 << 20,
			MaxBatch:            DefaultMaxBatch,
			MaxBufferedBytes:    256 << 20,
			MessageTimeout:      Duration(30 * time.Second),
		},
		RateLimit: RateLimit{
			PerConnection:       Window{Messages: 100, Window: Duration(10 * time.Second)},
			PerSubject:          Window{Messages: 1000, Window: Duration(10 * time.Second)},
			HandshakesPerIP:     CountWindow{Count: 30, Window: Duration(10 * time.Second)},
			FramesPerConnection: CountWindow{Count: 1000, Window: Duration(10 * time.Second)},
		},
		Redis:        Redis{URL: "", OnFailure: "local"},
		Upstreams:    []Upstream{defaultUpstream(Upstream{Name: "demo", Type: "builtin"})},
		Routes:       []Route{{Path: "/mcp", Upstream: "demo"}},
		Admin:        Admin{Listen: "127.0.0.1:9090"},
		DrainTimeout: Duration(30 * time.Second),
		Rebalance:    Rebalance{Margin: 0.1, Rate: 20},
		Log:          Log{Format: "text", Level: "info"},

		defaultRoute: true,
	}
}

// defaultUpstream fills the per-upstream defaults into the fields left at 0.
func defaultUpstream(u Upstream) Upstream {
	if u.Type == "stdio" && u.Max == 0 {
		u.Max = DefaultStdioMax
	}
	if u.Type == "builtin" && u.QueueDepth == 0 {
		u.QueueDepth = DefaultQueueDepth
	}
	if u.Type == "stdio" && u.MaxPerSubject == 0 {
		u.MaxPerSubject = max(1, u.Max/4)
	}
	if u.Type == "stdio" && u.EnvPassthrough == nil {
		u.EnvPassthrough = append([]string(nil), DefaultEnvPassthrough...)
	}
	if u.RequestTimeout == 0 {
		u.RequestTimeout = Duration(DefaultRequestTimeout)
	}
	return u
}
