package config

import "time"

// Config is the whole gateway configuration, as decoded from YAML.
// Field tags name the YAML keys documented in docs/config.md.
type Config struct {
	Listen Listeners `yaml:"listen"`
	Path   string    `yaml:"path"`
	// ReusePort (default true) gives each event loop its own SO_REUSEPORT
	// listener that accepts on that loop, one connection at a time, so the
	// connection cap holds at accept(); it also lets several gateway
	// processes of the same user share the address.
	ReusePort         bool       `yaml:"reuse_port"`
	TLS               TLS        `yaml:"tls"`
	Proxy             Proxy      `yaml:"proxy"`
	InsecurePlaintext bool       `yaml:"insecure_plaintext"`
	Origins           Origins    `yaml:"origins"`
	Auth              Auth       `yaml:"auth"`
	Limits            Limits     `yaml:"limits"`
	RateLimit         RateLimit  `yaml:"ratelimit"`
	Redis             Redis      `yaml:"redis"`
	Upstreams         []Upstream `yaml:"upstreams"`
	Routes            []Route    `yaml:"routes"`
	Admin             Admin      `yaml:"admin"`
	DrainTimeout      Duration   `yaml:"drain_timeout"`
	Rebalance         Rebalance  `yaml:"rebalance"`
	Log               Log        `yaml:"log"`
	Tracing           Tracing    `yaml:"tracing"`

	// defaultRoute is true while Routes is the implicit route of Path to the
	// first upstream (the file set no routes); ApplyEnv keeps it on Path.
	defaultRoute bool
	// keyLines maps each setting the file gave (its YAML path, as Error's
	// Setting) to the line of its key, so that Load can point a semantic
	// error at the line it concerns; envSet holds the settings a GATEWAY_*
	// variable replaced (the file's line no longer says where they came from).
	keyLines map[string]int
	envSet   map[string]string
}

// Listeners is one address or a list of addresses ("host:port").
type Listeners []string

// TLS turns the main listeners into wss:// listeners. Both files must be set
// together; they are reloaded when they change on disk.
type TLS struct {
	CertFile   string `yaml:"cert_file"`
	KeyFile    string `yaml:"key_file"`
	MinVersion string `yaml:"min_version"` // "1.2" or "1.3"
}

// Proxy describes the TLS-terminating load balancers in front of the gateway.
// Only peers inside TrustedCIDRs may send PROXY protocol headers or X-Forwarded-*.
type Proxy struct {
	TrustedCIDRs  []string `yaml:"trusted_cidrs"`
	ProxyProtocol bool     `yaml:"proxy_protocol"`
}

// Origins is the browser Origin allow-list checked before any upgrade.
type Origins struct {
	Allowed     []string `yaml:"allowed"`
	AllowAbsent bool     `yaml:"allow_absent"`
}

// Auth configures how a connection authenticates (SPEC section 4.2, 4.3).
type Auth struct {
	Timeout          Duration `yaml:"timeout"`
	Header           bool     `yaml:"header"`
	StaticTokensFile string   `yaml:"static_tokens_file"`
	JWT              JWT      `yaml:"jwt"`
	Tickets          Tickets  `yaml:"tickets"`
	// ExtraTokens are added programmatically (never from YAML).
	ExtraTokens []StaticToken `yaml:"-"`
}

// JWT configures signed-token verification (HS256 secret and/or JWKS public keys).
type JWT struct {
	HS256SecretFile string `yaml:"hs256_secret_file"`
	JWKSFile        string `yaml:"jwks_file"`
	Issuer          string `yaml:"issuer"`
	Audience        string `yaml:"audience"`
}

// Tickets configures single-use URL tickets for browsers.
type Tickets struct {
	TTL Duration `yaml:"ttl"`
}

// Limits bounds sizes, times and connection counts.
type Limits struct {
	MaxMessageBytes     Size     `yaml:"max_message_bytes"`
	MaxPreAuthBytes     Size     `yaml:"max_preauth_message_bytes"`
	MaxHeaderBytes      Size     `yaml:"max_header_bytes"`
	HandshakeTimeout    Duration `yaml:"handshake_timeout"`
	MaxConnections      int      `yaml:"max_connections"`
	MaxConnectionsPerIP int      `yaml:"max_connections_per_ip"`
	MaxPendingAuth      int      `yaml:"max_pending_auth"`
	IdleTimeout         Duration `yaml:"idle_timeout"`
	PingInterval        Duration `yaml:"ping_interval"`
	WriteBufferBytes    Size     `yaml:"write_buffer_bytes"`
	// MaxBatch is the most elements a JSON-RPC batch may have (SPEC 10);
	// a longer batch is refused whole with -32600 "Invalid Request".
	MaxBatch int `yaml:"max_batch"`
	// MaxBufferedBytes bounds the bytes of partially received messages held
	// for all connections together (SPEC 10); past it: close 1013.
	MaxBufferedBytes Size `yaml:"max_buffered_bytes"`
	// MessageTimeout is how long a message may take from its first frame to
	// its last; trickled bytes do not extend it (close 1008 "Message timeout").
	MessageTimeout Duration `yaml:"message_timeout"`
	// IPv6Prefix and IPv4Prefix are the prefix lengths that the per-IP
	// limits (max_connections_per_ip, ratelimit.handshakes_per_ip) key a
	// client address on: one IPv6 client commonly holds a whole /64, so
	// its /128s count as one client.
	IPv6Prefix int `yaml:"ipv6_prefix"`
	IPv4Prefix int `yaml:"ipv4_prefix"`
}

// Window is "at most Messages in any Window".
type Window struct {
	Messages int      `yaml:"messages"`
	Window   Duration `yaml:"window"`
}

// CountWindow is "at most Count in any Window".
type CountWindow struct {
	Count  int      `yaml:"count"`
	Window Duration `yaml:"window"`
}

// RateLimit holds the sliding-window message and handshake limits.
type RateLimit struct {
	PerConnection   Window      `yaml:"per_connection"`
	PerSubject      Window      `yaml:"per_subject"`
	HandshakesPerIP CountWindow `yaml:"handshakes_per_ip"`
	// FramesPerConnection counts every frame, control frames and empty
	// fragments included (before authentication at most PreAuthFrames).
	FramesPerConnection CountWindow `yaml:"frames_per_connection"`
}

// Redis enables distributed mode (shared limits, tickets, revocation).
type Redis struct {
	URL       string `yaml:"url"`
	OnFailure string `yaml:"on_failure"` // local | deny
	// Nodes splits the cluster limit in the local fallback (0: the most
	// nodes seen sharing a subject in the last minute).
	Nodes int `yaml:"nodes"`
	// LocalShare, when > 0, is this node's per-subject limit per window in
	// the local fallback, instead of the limit divided by Nodes.
	LocalShare int `yaml:"local_share"`
}

// Rebalance evens out long-lived connections across nodes (needs redis):
// every node publishes its connection count each second, and a node above
// its fair share (the cluster's connections over its nodes) by more than
// Margin asks the excess of its idle clients to reconnect, at most Rate a
// second, with the drain protocol (-31000, then 1001 once quiet).
// Tracing exports a span per relayed request over OTLP/HTTP (SPEC 12).
// Off (no endpoint): no span, no cost.
type Tracing struct {
	// OTLPEndpoint is the collector's OTLP/HTTP traces URL
	// ("http://otel-collector:4318/v1/traces"); empty turns tracing off.
	OTLPEndpoint string `yaml:"otlp_endpoint"`
	// SampleRatio is the share of new traces sampled (0 to 1); a request
	// whose traceparent says sampled is always traced (parent-based).
	SampleRatio float64 `yaml:"sample_ratio"`
}

type Rebalance struct {
	Enabled bool    `yaml:"enabled"`
	Margin  float64 `yaml:"margin"` // fraction above the fair share tolerated
	Rate    int     `yaml:"rate"`   // reconnect requests per second, at most
}

// Upstream is one pool of MCP servers. Which fields apply depends on Type.
type Upstream struct {
	Name string `yaml:"name"`
	Type string `yaml:"type"` // builtin | stdio | http
	// Command is the argv of a stdio child (stdio only).
	Command []string `yaml:"command"`
	// MinIdle is the number of warm stdio children kept ready (stdio only).
	MinIdle int `yaml:"min_idle"`
	// Max is the number of stdio children in all (stdio only; 0 = 64).
	Max int `yaml:"max"`
	// URLs are the MCP Streamable HTTP endpoints (http only).
	URLs []string `yaml:"urls"`
	// Workers is the number of goroutines serving a builtin upstream (0 = GOMAXPROCS).
	Workers int `yaml:"workers"`
	// QueueDepth bounds the messages waiting for a worker (0 = 4096).
	QueueDepth int `yaml:"queue_depth"`
	// RequestTimeout bounds one request to the upstream (0 = 60s).
	RequestTimeout Duration `yaml:"request_timeout"`
	// MaxPerSubject is the number of session-mode stdio children one subject
	// may hold (stdio only; 0 = max/4, at least 1).
	MaxPerSubject int `yaml:"max_per_subject"`
	// Env is the environment of a stdio child, besides EnvPassthrough.
	Env map[string]string `yaml:"env,omitempty"`
	// EnvPassthrough names the gateway's variables a stdio child inherits
	// (nil = DefaultEnvPassthrough; an empty list passes none).
	EnvPassthrough []string `yaml:"env_passthrough"`
}

// Route sends WebSocket upgrades on Path to the upstream named Upstream.
type Route struct {
	Path     string `yaml:"path"`
	Upstream string `yaml:"upstream"`
}

// Admin is the admin listener (/metrics, /healthz, /readyz, /admin/*).
// An empty Listen disables it.
type Admin struct {
	// Pprof serves /debug/pprof/ on the admin listener (for profiling under load).
	Pprof     bool   `yaml:"pprof"`
	Listen    string `yaml:"listen"`
	TokenFile string `yaml:"token_file"`
}

// Log configures the process log.
type Log struct {
	Format string `yaml:"format"` // text | json
	Level  string `yaml:"level"`  // debug | info | warn | error
}

// Duration is a time.Duration decoded from a Go duration string ("5s").
type Duration time.Duration

// Size is a byte count decoded from an integer or a string such as "1MiB", "8KiB", "512".
type Size int64

// StaticToken is a token known only by its SHA-256, with the subject it names.
// Tokens minted at run time (the embedded default's printed token) are added here
// by the caller; they never come from YAML.
type StaticToken struct {
	SHA256Hex string
	Subject   string
}
