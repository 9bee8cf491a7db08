package config

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"os"
	"strconv"
	"strings"
)

// Error is a configuration error. Its message names the setting (its YAML
// path, "limits.max_message_bytes") and, when known, where the bad value came
// from: the file and line, or the environment variable. Validate and Parse may
// return several at once joined with errors.Join; use errors.As to get one.
type Error struct {
	Setting string // YAML path of the setting; may be empty when Msg names the key
	Msg     string
	Source  string // file name or GATEWAY_* variable, if known
	Line    int    // line in the file, if known
}

func (e *Error) Error() string {
	var b strings.Builder
	if e.Source != "" {
		b.WriteString(e.Source)
		b.WriteString(": ")
	}
	if e.Line > 0 {
		fmt.Fprintf(&b, "line %d: ", e.Line)
	}
	if e.Setting != "" {
		b.WriteString(e.Setting)
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// maxSecretFileBytes bounds the files Validate reads (TLS certificate and key).
const maxSecretFileBytes = 1 << 20

// minHeaderBytes is the smallest useful limits.max_header_bytes: a browser's
// upgrade request is larger than this, so anything below refuses every client.
const minHeaderBytes = 512

// Validate refuses unsafe or inconsistent configurations. It returns nil, one
// *Error, or several *Error joined with errors.Join, each naming its setting.
// It reads (but does not keep) the files the configuration names, to refuse
// missing or unreadable ones at start rather than at the first connection.
func (c *Config) Validate() error {
	v := &validator{}
	c.validateListen(v)
	c.validateTLS(v)
	c.validateAuth(v)
	c.validateLimits(v)
	c.validateUpstreams(v)
	c.validateMisc(v)
	switch len(v.errs) {
	case 0:
		return nil
	case 1:
		return v.errs[0]
	}
	errs := make([]error, len(v.errs))
	for i, e := range v.errs {
		errs[i] = e
	}
	return errors.Join(errs...)
}

type validator struct{ errs []*Error }

func (v *validator) add(setting, format string, args ...any) {
	v.errs = append(v.errs, &Error{Setting: setting, Msg: fmt.Sprintf(format, args...)})
}

func (c *Config) tlsEnabled() bool { return c.TLS.CertFile != "" && c.TLS.KeyFile != "" }

func (c *Config) validateListen(v *validator) {
	if len(c.Listen) == 0 {
		v.add("listen", "at least one address is required")
	}
	seen := map[string]bool{}
	for _, addr := range c.Listen {
		if err := checkHostPort(addr); err != nil {
			v.add("listen", "%q: %v", addr, err)
			continue
		}
		if seen[addr] {
			v.add("listen", "%q is listed twice", addr)
		}
		seen[addr] = true
		if IsLoopback(addr) || c.tlsEnabled() {
			continue
		}
		switch {
		case !c.InsecurePlaintext:
			v.add("listen", "%q is not a loopback address and tls.cert_file/tls.key_file are not set: "+
				"plaintext ws:// off loopback is refused; configure TLS, or set insecure_plaintext: true "+
				"and proxy.trusted_cidrs when a TLS-terminating load balancer is in front", addr)
		case len(c.Proxy.TrustedCIDRs) == 0:
			v.add("insecure_plaintext", "plaintext on %q requires proxy.trusted_cidrs (the load balancers "+
				"allowed to connect); it is empty", addr)
		}
	}
	if c.Admin.Listen != "" {
		if err := checkHostPort(c.Admin.Listen); err != nil {
			v.add("admin.listen", "%q: %v (empty disables the admin listener)", c.Admin.Listen, err)
		} else {
			if seen[c.Admin.Listen] {
				v.add("admin.listen", "%q is also a main listen address", c.Admin.Listen)
			}
			if !IsLoopback(c.Admin.Listen) && c.Admin.TokenFile == "" {
				v.add("admin.token_file", "admin.listen %q is not a loopback address: an admin token file is required", c.Admin.Listen)
			}
		}
	}
	for i, p := range c.Proxy.TrustedCIDRs {
		if _, err := ParsePrefix(p); err != nil {
			v.add(fmt.Sprintf("proxy.trusted_cidrs[%d]", i), "%q is not a CIDR (\"10.0.0.0/8\") or an IP address", p)
		}
	}
}

// checkHostPort accepts "host:port" with a numeric port (0 picks a free port)
// and an empty, IP or DNS-name host.
func checkHostPort(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("want host:port")
	}
	if n, err := strconv.ParseUint(port, 10, 16); err != nil || strconv.FormatUint(n, 10) != port {
		return fmt.Errorf("port %q is not a number from 0 to 65535", port)
	}
	if strings.ContainsAny(host, " /?#@") {
		return fmt.Errorf("bad host %q", host)
	}
	return nil
}

// IsLoopback reports whether a listen address ("host:port", or a bare host)
// is reachable only from this machine: 127.0.0.0/8, ::1 (also as an
// IPv4-mapped address) or "localhost". The wildcard hosts "", "0.0.0.0" and
// "::" and any other name are not loopback.
func IsLoopback(hostport string) bool {
	host, _, err := net.SplitHostPort(hostport)
	if err != nil {
		host = strings.TrimSuffix(strings.TrimPrefix(hostport, "["), "]")
	}
	if h := strings.ToLower(strings.TrimSuffix(host, ".")); h == "localhost" {
		return true
	}
	addr, err := netip.ParseAddr(host)
	if err != nil {
		return false
	}
	return addr.WithZone("").IsLoopback()
}

// ParsePrefix parses a proxy.trusted_cidrs entry: a CIDR ("10.0.0.0/8") or a
// bare IP address, taken as a /32 or /128. The result is masked.
func ParsePrefix(s string) (netip.Prefix, error) {
	s = strings.TrimSpace(s)
	if p, err := netip.ParsePrefix(s); err == nil {
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil || a.Zone() != "" {
		return netip.Prefix{}, fmt.Errorf("config: %q is not a CIDR or an IP address", s)
	}
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// TrustedPrefixes returns proxy.trusted_cidrs parsed by ParsePrefix, skipping
// entries that do not parse (Validate refuses those).
func (p Proxy) TrustedPrefixes() []netip.Prefix {
	out := make([]netip.Prefix, 0, len(p.TrustedCIDRs))
	for _, s := range p.TrustedCIDRs {
		if pr, err := ParsePrefix(s); err == nil {
			out = append(out, pr)
		}
	}
	return out
}

func (c *Config) validateTLS(v *validator) {
	switch {
	case c.TLS.CertFile != "" && c.TLS.KeyFile == "":
		v.add("tls.key_file", "tls.cert_file is set but tls.key_file is not; set both or neither")
	case c.TLS.CertFile == "" && c.TLS.KeyFile != "":
		v.add("tls.cert_file", "tls.key_file is set but tls.cert_file is not; set both or neither")
	case c.tlsEnabled():
		certOK := checkFile(v, "tls.cert_file", c.TLS.CertFile)
		keyOK := checkFile(v, "tls.key_file", c.TLS.KeyFile)
		if certOK && keyOK {
			if _, err := tls.LoadX509KeyPair(c.TLS.CertFile, c.TLS.KeyFile); err != nil {
				v.add("tls.cert_file", "%q and tls.key_file %q are not a valid certificate and key pair: %v",
					c.TLS.CertFile, c.TLS.KeyFile, err)
			}
		}
	}
	if c.TLS.MinVersion != "1.2" && c.TLS.MinVersion != "1.3" {
		v.add("tls.min_version", "%q: want \"1.2\" or \"1.3\"", c.TLS.MinVersion)
	}
}

// checkFile refuses a file that is missing, not a regular file, too large for
// a key or token file, or unreadable by this process.
func checkFile(v *validator, setting, path string) bool {
	fi, err := os.Stat(path)
	if err != nil {
		v.add(setting, "%v", err)
		return false
	}
	if !fi.Mode().IsRegular() {
		v.add(setting, "%q is not a regular file", path)
		return false
	}
	if fi.Size() > maxSecretFileBytes {
		v.add(setting, "%q is larger than %d bytes", path, maxSecretFileBytes)
		return false
	}
	f, err := os.Open(path)
	if err != nil {
		v.add(setting, "%v", err)
		return false
	}
	f.Close()
	return true
}

func (c *Config) validateAuth(v *validator) {
	a := &c.Auth
	if a.StaticTokensFile == "" && a.JWT.HS256SecretFile == "" && a.JWT.JWKSFile == "" && len(a.ExtraTokens) == 0 {
		v.add("auth", "no credential is configured: set auth.static_tokens_file, auth.jwt.hs256_secret_file "+
			"or auth.jwt.jwks_file (a gateway that accepts no token serves nobody, and one that accepts any serves everybody)")
	}
	for _, f := range []struct{ setting, path string }{
		{"auth.static_tokens_file", a.StaticTokensFile},
		{"auth.jwt.hs256_secret_file", a.JWT.HS256SecretFile},
		{"auth.jwt.jwks_file", a.JWT.JWKSFile},
		{"admin.token_file", c.Admin.TokenFile},
	} {
		if f.path != "" {
			checkFile(v, f.setting, f.path)
		}
	}
	for i, t := range a.ExtraTokens {
		if len(t.SHA256Hex) != 64 || strings.Trim(strings.ToLower(t.SHA256Hex), "0123456789abcdef") != "" {
			v.add(fmt.Sprintf("auth.extra_tokens[%d]", i), "not a SHA-256 in hex")
		}
	}
	positive(v, "auth.timeout", int64(a.Timeout))
	positive(v, "auth.tickets.ttl", int64(a.Tickets.TTL))
}

func positive(v *validator, setting string, n int64) {
	if n <= 0 {
		v.add(setting, "must be positive")
	}
}

func (c *Config) validateLimits(v *validator) {
	l := &c.Limits
	positive(v, "limits.max_message_bytes", int64(l.MaxMessageBytes))
	positive(v, "limits.max_preauth_message_bytes", int64(l.MaxPreAuthBytes))
	if l.MaxPreAuthBytes > l.MaxMessageBytes {
		v.add("limits.max_preauth_message_bytes", "%v is larger than limits.max_message_bytes (%v)",
			l.MaxPreAuthBytes, l.MaxMessageBytes)
	}
	if l.MaxHeaderBytes < minHeaderBytes {
		v.add("limits.max_header_bytes", "%v is below %d bytes: no browser upgrade request fits", l.MaxHeaderBytes, minHeaderBytes)
	}
	positive(v, "limits.handshake_timeout", int64(l.HandshakeTimeout))
	if l.MaxConnections < 0 {
		v.add("limits.max_connections", "must be 0 (no cap but the descriptor budget) or positive")
	}
	positive(v, "limits.max_connections_per_ip", int64(l.MaxConnectionsPerIP))
	if l.IPv6Prefix < MinIPv6Prefix || l.IPv6Prefix > 128 {
		v.add("limits.ipv6_prefix", "%d is not a prefix length from %d to 128", l.IPv6Prefix, MinIPv6Prefix)
	}
	if l.IPv4Prefix < MinIPv4Prefix || l.IPv4Prefix > 32 {
		v.add("limits.ipv4_prefix", "%d is not a prefix length from %d to 32", l.IPv4Prefix, MinIPv4Prefix)
	}
	positive(v, "limits.max_pending_auth", int64(l.MaxPendingAuth))
	positive(v, "limits.idle_timeout", int64(l.IdleTimeout))
	positive(v, "limits.ping_interval", int64(l.PingInterval))
	if l.PingInterval > 0 && l.IdleTimeout > 0 && l.PingInterval >= l.IdleTimeout {
		v.add("limits.ping_interval", "%v must be shorter than limits.idle_timeout (%v), or live idle clients are cut",
			l.PingInterval, l.IdleTimeout)
	}
	positive(v, "limits.write_buffer_bytes", int64(l.WriteBufferBytes))
	positive(v, "limits.max_batch", int64(l.MaxBatch))
	positive(v, "limits.max_buffered_bytes", int64(l.MaxBufferedBytes))
	positive(v, "limits.message_timeout", int64(l.MessageTimeout))

	r := &c.RateLimit
	positive(v, "ratelimit.per_connection.messages", int64(r.PerConnection.Messages))
	positive(v, "ratelimit.per_connection.window", int64(r.PerConnection.Window))
	positive(v, "ratelimit.per_subject.messages", int64(r.PerSubject.Messages))
	positive(v, "ratelimit.per_subject.window", int64(r.PerSubject.Window))
	positive(v, "ratelimit.handshakes_per_ip.count", int64(r.HandshakesPerIP.Count))
	positive(v, "ratelimit.handshakes_per_ip.window", int64(r.HandshakesPerIP.Window))
	if r.FramesPerConnection.Count < PreAuthFrames {
		v.add("ratelimit.frames_per_connection.count", "%d is below %d, the frames allowed before authentication",
			r.FramesPerConnection.Count, PreAuthFrames)
	}
	positive(v, "ratelimit.frames_per_connection.window", int64(r.FramesPerConnection.Window))
}

func (c *Config) validateUpstreams(v *validator) {
	if len(c.Upstreams) == 0 {
		v.add("upstreams", "at least one upstream is required")
	}
	names := map[string]bool{}
	for i, u := range c.Upstreams {
		s := fmt.Sprintf("upstreams[%d]", i)
		if u.Name == "" {
			v.add(s+".name", "is required")
		} else if names[u.Name] {
			v.add(s+".name", "duplicate upstream name %q", u.Name)
		}
		names[u.Name] = true
		switch u.Type {
		case "builtin":
		case "stdio":
			if len(u.Command) == 0 || u.Command[0] == "" {
				v.add(s+".command", "a stdio upstream needs a command (argv list)")
			}
			if u.Max < 1 {
				v.add(s+".max", "must be at least 1")
			}
			if u.MinIdle < 0 || u.MinIdle > u.Max {
				v.add(s+".min_idle", "%d must be between 0 and max (%d)", u.MinIdle, u.Max)
			}
			if u.MaxPerSubject < 1 || u.MaxPerSubject > u.Max {
				v.add(s+".max_per_subject", "%d must be between 1 and max (%d)", u.MaxPerSubject, u.Max)
			}
			for k := range u.Env {
				if k == "" || strings.ContainsAny(k, "=\x00") {
					v.add(s+".env", "invalid variable name %q", k)
				}
			}
			for _, k := range u.EnvPassthrough {
				if k == "" || strings.ContainsAny(k, "=\x00") {
					v.add(s+".env_passthrough", "invalid variable name %q", k)
				}
			}
		case "http":
			if len(u.URLs) == 0 {
				v.add(s+".urls", "an http upstream needs at least one URL")
			}
			for j, raw := range u.URLs {
				p, err := url.Parse(raw)
				if err != nil || (p.Scheme != "http" && p.Scheme != "https") || p.Host == "" {
					v.add(fmt.Sprintf("%s.urls[%d]", s, j), "%q is not an http:// or https:// URL", raw)
				}
			}
		default:
			v.add(s+".type", "%q: want builtin, stdio or http", u.Type)
		}
		if u.Type != "stdio" && len(u.Command) > 0 {
			v.add(s+".command", "only stdio upstreams have a command")
		}
		if u.Type != "http" && len(u.URLs) > 0 {
			v.add(s+".urls", "only http upstreams have urls")
		}
		if u.Workers < 0 {
			v.add(s+".workers", "must not be negative")
		}
		if u.QueueDepth < 0 {
			v.add(s+".queue_depth", "must not be negative")
		}
		positive(v, s+".request_timeout", int64(u.RequestTimeout))
	}
	if len(c.Routes) == 0 {
		v.add("routes", "at least one route is required")
	}
	paths := map[string]bool{}
	for i, r := range c.Routes {
		s := fmt.Sprintf("routes[%d]", i)
		checkPath(v, s+".path", r.Path)
		if paths[r.Path] {
			v.add(s+".path", "duplicate route path %q", r.Path)
		}
		paths[r.Path] = true
		if c.UpstreamByName(r.Upstream) == nil {
			v.add(s+".upstream", "unknown upstream %q", r.Upstream)
		}
	}
}

// checkPath refuses a URL path that does not start with "/", carries a query
// or fragment, or collides with the ticket endpoint.
func checkPath(v *validator, setting, p string) {
	switch {
	case !strings.HasPrefix(p, "/"):
		v.add(setting, "%q must start with \"/\"", p)
	case strings.ContainsAny(p, "?# \t\r\n"):
		v.add(setting, "%q must be a plain path (no query, fragment or space)", p)
	case p == "/tickets":
		v.add(setting, "\"/tickets\" is the ticket endpoint")
	}
}

func (c *Config) validateMisc(v *validator) {
	checkPath(v, "path", c.Path)
	for i, o := range c.Origins.Allowed {
		if msg := checkOrigin(o); msg != "" {
			v.add(fmt.Sprintf("origins.allowed[%d]", i), "%s", msg)
		}
	}
	if c.Redis.Nodes < 0 {
		v.add("redis.nodes", "%d: must be 0 (auto) or positive", c.Redis.Nodes)
	}
	if c.Redis.LocalShare < 0 {
		v.add("redis.local_share", "%d: must be 0 (limit / nodes) or positive", c.Redis.LocalShare)
	}
	if c.Redis.OnFailure != "local" && c.Redis.OnFailure != "deny" {
		v.add("redis.on_failure", "%q: want local or deny", c.Redis.OnFailure)
	}
	if c.Redis.URL != "" {
		if msg := checkRedisURL(c.Redis.URL); msg != "" {
			v.add("redis.url", "%s", msg)
		}
	}
	if c.DrainTimeout < 0 {
		v.add("drain_timeout", "must not be negative")
	}
	if e := c.Tracing.OTLPEndpoint; e != "" {
		if u, err := url.Parse(e); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			v.add("tracing.otlp_endpoint", "%q: want an http:// or https:// URL (the collector's OTLP/HTTP traces endpoint)", RedactURL(e))
		}
	}
	if r := c.Tracing.SampleRatio; r < 0 || r > 1 || r != r {
		v.add("tracing.sample_ratio", "%g: want 0 to 1", r)
	}
	if c.Rebalance.Margin <= 0 || c.Rebalance.Margin > 10 {
		v.add("rebalance.margin", "%g: want a fraction above 0 (0.1 = 10 %% above the fair share), at most 10", c.Rebalance.Margin)
	}
	if c.Rebalance.Rate < 1 {
		v.add("rebalance.rate", "%d: must be at least 1 (reconnects per second)", c.Rebalance.Rate)
	}
	if c.Rebalance.Enabled && c.Redis.URL == "" {
		v.add("rebalance.enabled", "needs redis.url (nodes share their connection counts there)")
	}
	if f := c.Log.Format; f != "text" && f != "json" {
		v.add("log.format", "%q: want text or json", f)
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		v.add("log.level", "%q: want debug, info, warn or error", c.Log.Level)
	}
}

// checkOrigin returns why o is not an exact origin as browsers send it, or "".
func checkOrigin(o string) string {
	switch o {
	case "*":
		return "\"*\" is refused: a wildcard accepts every site's pages and defeats Origin checking " +
			"(cross-site WebSocket hijacking); list the exact origins"
	case "null":
		return "\"null\" is refused: any sandboxed page or local file can send Origin: null"
	}
	u, err := url.Parse(o)
	if err != nil || u.Scheme == "" || u.Host == "" || u.Opaque != "" {
		return fmt.Sprintf("%q is not an origin: want scheme://host[:port], e.g. \"https://app.example.com\"", o)
	}
	if u.User != nil || u.Path != "" || u.RawQuery != "" || u.Fragment != "" || strings.ContainsAny(o, "?#") {
		return fmt.Sprintf("%q is not an origin: no user, path, trailing slash, query or fragment "+
			"(want %q)", o, u.Scheme+"://"+u.Host)
	}
	if strings.Contains(u.Host, "*") {
		return fmt.Sprintf("%q: wildcards are refused; list the exact origins", o)
	}
	if o != strings.ToLower(o) {
		return fmt.Sprintf("%q: write it in lower case, as browsers send it (%q)", o, strings.ToLower(o))
	}
	if port := u.Port(); port != "" {
		n, err := strconv.ParseUint(port, 10, 16)
		if err != nil || n == 0 || strconv.FormatUint(n, 10) != port {
			return fmt.Sprintf("%q: bad port", o)
		}
		if (u.Scheme == "https" && port == "443") || (u.Scheme == "http" && port == "80") {
			return fmt.Sprintf("%q: browsers omit the default port; write %q", o, u.Scheme+"://"+u.Hostname())
		}
	} else if strings.HasSuffix(u.Host, ":") {
		return fmt.Sprintf("%q: empty port", o)
	}
	return ""
}

// checkRedisURL returns why raw is not a usable Redis URL, or "". The message
// never repeats the URL, which may hold a password.
func checkRedisURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "not a valid URL (want redis://[user:password@]host:port[/db] or rediss://...)"
	}
	if u.Scheme != "redis" && u.Scheme != "rediss" {
		return fmt.Sprintf("scheme %q: want redis:// or rediss:// (TLS)", u.Scheme)
	}
	if u.Host == "" {
		return "no host (want redis://host:port[/db])"
	}
	if db := strings.TrimPrefix(u.Path, "/"); db != "" {
		if _, err := strconv.ParseUint(db, 10, 8); err != nil {
			return fmt.Sprintf("database %q is not a number", db)
		}
	}
	return ""
}
