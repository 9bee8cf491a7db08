package config

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestDefaultsValid(t *testing.T) {
	if err := withToken().Validate(); err != nil {
		t.Fatalf("embedded default (with its token) refused: %v", err)
	}
	// Without a token the default configures no credential: refused.
	wantSettingErr(t, Default().Validate(), "auth", "no credential")

	d := Default()
	if d.Listen[0] != "127.0.0.1:8080" || d.Path != "/mcp" || d.Limits.MaxMessageBytes != 1<<20 ||
		d.Limits.MaxPreAuthBytes != 16<<10 || d.Auth.Timeout.D() != 5*time.Second ||
		d.RateLimit.PerConnection.Messages != 100 || d.Redis.OnFailure != "local" ||
		d.Admin.Listen != "127.0.0.1:9090" || d.Log.Format != "text" || d.UpstreamByName("demo") == nil ||
		d.Routes[0] != (Route{Path: "/mcp", Upstream: "demo"}) {
		t.Errorf("unexpected defaults: %+v", d)
	}
	if Default() == Default() || &Default().Listen[0] == &Default().Listen[0] {
		t.Error("Default must return a fresh copy")
	}
}

func TestValidTLSAndProxyConfigs(t *testing.T) {
	dir := t.TempDir()
	cert, key := writeCert(t, dir)
	c := withToken()
	c.Listen = Listeners{"0.0.0.0:8443", "[::]:8443"}
	c.TLS.CertFile, c.TLS.KeyFile, c.TLS.MinVersion = cert, key, "1.3"
	c.Origins.Allowed = []string{"https://claude.ai", "https://app.example.com:8443", "http://[::1]:3000", "chrome-extension://abcdef"}
	c.Redis.URL = "rediss://user:pw@redis.internal:6380/2"
	c.Redis.OnFailure = "deny"
	if err := c.Validate(); err != nil {
		t.Fatalf("TLS config refused: %v", err)
	}

	c = withToken()
	c.Listen = Listeners{"0.0.0.0:8080"}
	c.InsecurePlaintext = true
	c.Proxy.TrustedCIDRs = []string{"10.0.0.0/8", "192.168.1.7", "fd00::/8", "::1"}
	if err := c.Validate(); err != nil {
		t.Fatalf("plaintext behind trusted proxies refused: %v", err)
	}
}

func TestRefusals(t *testing.T) {
	dir := t.TempDir()
	cert, key := writeCert(t, dir)
	unreadable := writeFile(t, dir, "unreadable.key", "x")
	os.Chmod(unreadable, 0)
	garbage := writeFile(t, dir, "garbage.pem", "not a certificate")
	missing := filepath.Join(dir, "missing.crt")

	cases := []struct {
		name, setting string
		mutate        func(c *Config)
		contains      []string
	}{
		{"cert missing", "tls.cert_file", func(c *Config) { c.TLS.CertFile, c.TLS.KeyFile = missing, key }, []string{"missing.crt"}},
		{"key missing", "tls.key_file", func(c *Config) { c.TLS.CertFile, c.TLS.KeyFile = cert, missing }, nil},
		{"cert is a dir", "tls.cert_file", func(c *Config) { c.TLS.CertFile, c.TLS.KeyFile = dir, key }, []string{"not a regular file"}},
		{"cert garbage", "tls.cert_file", func(c *Config) { c.TLS.CertFile, c.TLS.KeyFile = garbage, key }, []string{"not a valid certificate"}},
		{"only cert", "tls.key_file", func(c *Config) { c.TLS.CertFile = cert }, []string{"set both"}},
		{"only key", "tls.cert_file", func(c *Config) { c.TLS.KeyFile = key }, []string{"set both"}},
		{"tls version", "tls.min_version", func(c *Config) { c.TLS.MinVersion = "1.1" }, []string{`"1.1"`}},
		{"plaintext off loopback", "listen", func(c *Config) { c.Listen = Listeners{"0.0.0.0:8080"} }, []string{"insecure_plaintext", "loopback"}},
		{"plaintext empty host", "listen", func(c *Config) { c.Listen = Listeners{":8080"} }, nil},
		{"plaintext one of two", "listen", func(c *Config) { c.Listen = Listeners{"127.0.0.1:1", "10.1.2.3:1"} }, []string{"10.1.2.3:1"}},
		{"insecure without cidrs", "insecure_plaintext", func(c *Config) {
			c.Listen, c.InsecurePlaintext = Listeners{"0.0.0.0:8080"}, true
		}, []string{"proxy.trusted_cidrs"}},
		{"no listen", "listen", func(c *Config) { c.Listen = nil }, []string{"at least one"}},
		{"bad listen", "listen", func(c *Config) { c.Listen = Listeners{"localhost"} }, []string{"host:port"}},
		{"bad port", "listen", func(c *Config) { c.Listen = Listeners{"127.0.0.1:99999"} }, []string{"port"}},
		{"dup listen", "listen", func(c *Config) { c.Listen = Listeners{"127.0.0.1:1", "127.0.0.1:1"} }, []string{"twice"}},
		{"empty auth", "auth", func(c *Config) { c.Auth.ExtraTokens = nil }, []string{"no credential"}},
		{"tokens file missing", "auth.static_tokens_file", func(c *Config) { c.Auth.StaticTokensFile = missing }, nil},
		{"jwt secret missing", "auth.jwt.hs256_secret_file", func(c *Config) { c.Auth.JWT.HS256SecretFile = missing }, nil},
		{"jwks missing", "auth.jwt.jwks_file", func(c *Config) { c.Auth.JWT.JWKSFile = missing }, nil},
		{"bad extra token", "auth.extra_tokens[0]", func(c *Config) { c.Auth.ExtraTokens[0].SHA256Hex = "zz" }, nil},
		{"auth timeout", "auth.timeout", func(c *Config) { c.Auth.Timeout = 0 }, []string{"positive"}},
		{"ticket ttl", "auth.tickets.ttl", func(c *Config) { c.Auth.Tickets.TTL = -1 }, nil},
		{"unknown upstream", "routes[0].upstream", func(c *Config) { c.Routes[0].Upstream = "nope" }, []string{`unknown upstream "nope"`}},
		{"dup upstream", "upstreams[1].name", func(c *Config) { c.Upstreams = append(c.Upstreams, c.Upstreams[0]) }, []string{"duplicate"}},
		{"no upstream name", "upstreams[0].name", func(c *Config) { c.Upstreams[0].Name = "" }, nil},
		{"no upstreams", "upstreams", func(c *Config) { c.Upstreams = nil }, nil},
		{"dup route", "routes[1].path", func(c *Config) { c.Routes = append(c.Routes, c.Routes[0]) }, []string{"duplicate"}},
		{"no routes", "routes", func(c *Config) { c.Routes = nil }, nil},
		{"route path", "routes[0].path", func(c *Config) { c.Routes[0].Path = "mcp" }, []string{`start with "/"`}},
		{"route tickets", "routes[0].path", func(c *Config) { c.Routes[0].Path = "/tickets" }, nil},
		{"route query", "routes[0].path", func(c *Config) { c.Routes[0].Path = "/mcp?x=1" }, nil},
		{"path", "path", func(c *Config) { c.Path = "mcp" }, nil},
		{"upstream type", "upstreams[0].type", func(c *Config) { c.Upstreams[0].Type = "grpc" }, []string{"builtin, stdio or http"}},
		{"stdio no command", "upstreams[0].command", func(c *Config) {
			c.Upstreams[0] = Upstream{Name: "demo", Type: "stdio", Max: 4, RequestTimeout: Duration(time.Second)}
		}, nil},
		{"stdio min_idle", "upstreams[0].min_idle", func(c *Config) {
			c.Upstreams[0] = Upstream{Name: "demo", Type: "stdio", Command: []string{"x"}, MinIdle: 5, Max: 4, RequestTimeout: Duration(time.Second)}
		}, nil},
		{"http no urls", "upstreams[0].urls", func(c *Config) {
			c.Upstreams[0] = Upstream{Name: "demo", Type: "http", RequestTimeout: Duration(time.Second)}
		}, nil},
		{"http bad url", "upstreams[0].urls[1]", func(c *Config) {
			c.Upstreams[0] = Upstream{Name: "demo", Type: "http", URLs: []string{"http://a/mcp", "ftp://b/"}, RequestTimeout: Duration(time.Second)}
		}, []string{"ftp://b/"}},
		{"http relative url", "upstreams[0].urls[0]", func(c *Config) {
			c.Upstreams[0] = Upstream{Name: "demo", Type: "http", URLs: []string{"/mcp"}, RequestTimeout: Duration(time.Second)}
		}, nil},
		{"builtin with command", "upstreams[0].command", func(c *Config) { c.Upstreams[0].Command = []string{"x"} }, nil},
		{"request timeout", "upstreams[0].request_timeout", func(c *Config) { c.Upstreams[0].RequestTimeout = 0 }, nil},
		{"on_failure", "redis.on_failure", func(c *Config) { c.Redis.OnFailure = "ignore" }, nil},
		{"redis scheme", "redis.url", func(c *Config) { c.Redis.URL = "http://x:6379" }, []string{"redis://"}},
		{"redis no host", "redis.url", func(c *Config) { c.Redis.URL = "redis://" }, nil},
		{"redis db", "redis.url", func(c *Config) { c.Redis.URL = "redis://h:1/abc" }, nil},
		{"origin star", "origins.allowed[0]", func(c *Config) { c.Origins.Allowed = []string{"*"} }, []string{"wildcard", "defeats"}},
		{"origin slash", "origins.allowed[0]", func(c *Config) { c.Origins.Allowed = []string{"https://claude.ai/"} }, []string{"trailing slash"}},
		{"origin path", "origins.allowed[1]", func(c *Config) { c.Origins.Allowed = []string{"https://a.com", "https://b.com/app"} }, nil},
		{"origin no scheme", "origins.allowed[0]", func(c *Config) { c.Origins.Allowed = []string{"claude.ai"} }, nil},
		{"origin wildcard host", "origins.allowed[0]", func(c *Config) { c.Origins.Allowed = []string{"https://*.example.com"} }, nil},
		{"origin null", "origins.allowed[0]", func(c *Config) { c.Origins.Allowed = []string{"null"} }, nil},
		{"origin case", "origins.allowed[0]", func(c *Config) { c.Origins.Allowed = []string{"https://Claude.ai"} }, []string{"lower case"}},
		{"origin default port", "origins.allowed[0]", func(c *Config) { c.Origins.Allowed = []string{"https://claude.ai:443"} }, []string{"default port"}},
		{"bad cidr", "proxy.trusted_cidrs[0]", func(c *Config) { c.Proxy.TrustedCIDRs = []string{"10.0.0.0/33"} }, nil},
		{"bad cidr name", "proxy.trusted_cidrs[1]", func(c *Config) { c.Proxy.TrustedCIDRs = []string{"10.0.0.0/8", "lb.internal"} }, nil},
		{"max message", "limits.max_message_bytes", func(c *Config) { c.Limits.MaxMessageBytes = 0 }, nil},
		{"preauth", "limits.max_preauth_message_bytes", func(c *Config) { c.Limits.MaxPreAuthBytes = 2 << 20 }, []string{"larger than"}},
		{"header bytes", "limits.max_header_bytes", func(c *Config) { c.Limits.MaxHeaderBytes = 100 }, nil},
		{"handshake timeout", "limits.handshake_timeout", func(c *Config) { c.Limits.HandshakeTimeout = 0 }, nil},
		{"max conns", "limits.max_connections", func(c *Config) { c.Limits.MaxConnections = -1 }, nil},
		{"per ip", "limits.max_connections_per_ip", func(c *Config) { c.Limits.MaxConnectionsPerIP = 0 }, nil},
		{"ipv6 prefix short", "limits.ipv6_prefix", func(c *Config) { c.Limits.IPv6Prefix = 31 }, []string{"from 32 to 128"}},
		{"ipv6 prefix long", "limits.ipv6_prefix", func(c *Config) { c.Limits.IPv6Prefix = 129 }, nil},
		{"ipv6 prefix zero", "limits.ipv6_prefix", func(c *Config) { c.Limits.IPv6Prefix = 0 }, nil},
		{"ipv4 prefix short", "limits.ipv4_prefix", func(c *Config) { c.Limits.IPv4Prefix = 15 }, []string{"from 16 to 32"}},
		{"ipv4 prefix long", "limits.ipv4_prefix", func(c *Config) { c.Limits.IPv4Prefix = 33 }, nil},
		{"pending", "limits.max_pending_auth", func(c *Config) { c.Limits.MaxPendingAuth = 0 }, nil},
		{"idle", "limits.idle_timeout", func(c *Config) { c.Limits.IdleTimeout = 0 }, nil},
		{"ping >= idle", "limits.ping_interval", func(c *Config) { c.Limits.PingInterval = c.Limits.IdleTimeout }, []string{"idle_timeout"}},
		{"write buffer", "limits.write_buffer_bytes", func(c *Config) { c.Limits.WriteBufferBytes = -1 }, nil},
		{"per conn msgs", "ratelimit.per_connection.messages", func(c *Config) { c.RateLimit.PerConnection.Messages = 0 }, nil},
		{"per subject window", "ratelimit.per_subject.window", func(c *Config) { c.RateLimit.PerSubject.Window = 0 }, nil},
		{"handshakes count", "ratelimit.handshakes_per_ip.count", func(c *Config) { c.RateLimit.HandshakesPerIP.Count = -3 }, nil},
		{"drain", "drain_timeout", func(c *Config) { c.DrainTimeout = -1 }, nil},
		{"rebalance without redis", "rebalance.enabled", func(c *Config) { c.Rebalance.Enabled = true }, []string{"redis.url"}},
		{"rebalance margin", "rebalance.margin", func(c *Config) { c.Rebalance.Margin = 0 }, nil},
		{"rebalance rate", "rebalance.rate", func(c *Config) { c.Rebalance.Rate = 0 }, nil},
		{"log format", "log.format", func(c *Config) { c.Log.Format = "xml" }, []string{"text or json"}},
		{"log level", "log.level", func(c *Config) { c.Log.Level = "loud" }, nil},
		{"admin listen", "admin.listen", func(c *Config) { c.Admin.Listen = "9090" }, []string{"host:port"}},
		{"admin clash", "admin.listen", func(c *Config) { c.Admin.Listen = c.Listen[0] }, nil},
		{"admin public no token", "admin.token_file", func(c *Config) { c.Admin.Listen = "0.0.0.0:9090" }, nil},
		{"admin token missing", "admin.token_file", func(c *Config) { c.Admin.TokenFile = missing }, nil},
	}
	if os.Geteuid() != 0 { // root reads any file
		cases = append(cases, struct {
			name, setting string
			mutate        func(c *Config)
			contains      []string
		}{"key unreadable", "tls.key_file", func(c *Config) { c.TLS.CertFile, c.TLS.KeyFile = cert, unreadable }, []string{"permission denied"}})
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := withToken()
			tc.mutate(c)
			wantSettingErr(t, c.Validate(), tc.setting, tc.contains...)
		})
	}
}

func TestValidateReportsAll(t *testing.T) {
	c := withToken()
	c.Path = "x"
	c.Log.Format = "xml"
	err := c.Validate()
	wantSettingErr(t, err, "path")
	wantSettingErr(t, err, "log.format")
	var e *Error
	if !errors.As(err, &e) || e.Setting != "path" {
		t.Errorf("errors.As: %v", e)
	}
}

func TestAdminDisabledAndPublicWithToken(t *testing.T) {
	c := withToken()
	c.Admin.Listen = ""
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	c.Admin.Listen = "0.0.0.0:9090"
	c.Admin.TokenFile = writeFile(t, t.TempDir(), "admin.token", "tok\n")
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
}

func TestIsLoopback(t *testing.T) {
	yes := []string{"127.0.0.1:8080", "127.1.2.3:1", "[::1]:8080", "localhost:80", "LOCALHOST:1", "localhost.:1",
		"127.0.0.1", "::1", "[::1]", "[::ffff:127.0.0.1]:1", "[::1%lo]:1"}
	no := []string{"0.0.0.0:8080", ":8080", "", "[::]:8080", "::", "0.0.0.0", "10.0.0.1:1", "example.com:80",
		"localhost.example.com:1", "128.0.0.1:1", "[::2]:1"}
	for _, s := range yes {
		if !IsLoopback(s) {
			t.Errorf("IsLoopback(%q) = false", s)
		}
	}
	for _, s := range no {
		if IsLoopback(s) {
			t.Errorf("IsLoopback(%q) = true", s)
		}
	}
}

func TestParsePrefix(t *testing.T) {
	for in, want := range map[string]string{
		"10.1.2.3/8": "10.0.0.0/8", "192.168.1.7": "192.168.1.7/32", "::1": "::1/128", "fd00::/8": "fd00::/8",
	} {
		p, err := ParsePrefix(in)
		if err != nil || p.String() != want {
			t.Errorf("ParsePrefix(%q) = %v, %v; want %s", in, p, err, want)
		}
	}
	for _, in := range []string{"", "10.0.0.0/33", "lb", "fe80::1%eth0"} {
		if _, err := ParsePrefix(in); err == nil {
			t.Errorf("ParsePrefix(%q) accepted", in)
		}
	}
	got := Proxy{TrustedCIDRs: []string{"10.0.0.0/8", "bad", "1.2.3.4"}}.TrustedPrefixes()
	if len(got) != 2 || got[1].String() != "1.2.3.4/32" {
		t.Errorf("TrustedPrefixes = %v", got)
	}
}

func TestEffectiveMaxConnections(t *testing.T) {
	c := Default()
	c.Limits.MaxConnections = 500
	if c.EffectiveMaxConnections() != 500 {
		t.Error("explicit max_connections ignored")
	}
	c.Limits.MaxConnections = 0
	if n := c.EffectiveMaxConnections(); n < 1 {
		t.Errorf("EffectiveMaxConnections = %d", n)
	}
	// The open-file limit itself: the descriptor budget refuses before it.
	for soft, want := range map[uint64]int{1024: 1024, 1048576: 1048576, 10: 10, 0: 1, 1 << 62: 1<<31 - 1} {
		if got := maxConnsFromLimit(soft); got != want {
			t.Errorf("maxConnsFromLimit(%d) = %d, want %d", soft, got, want)
		}
	}
}

func TestErrorFormat(t *testing.T) {
	e := &Error{Source: "config.yaml", Line: 7, Msg: `unknown key "lisen"`}
	if e.Error() != `config.yaml: line 7: unknown key "lisen"` {
		t.Error(e.Error())
	}
	e = &Error{Setting: "auth.timeout", Msg: "must be positive"}
	if !strings.HasPrefix(e.Error(), "auth.timeout: ") {
		t.Error(e.Error())
	}
}

func TestValidateBudgets(t *testing.T) {
	c := Default()
	c.Auth.ExtraTokens = []StaticToken{{SHA256Hex: strings.Repeat("a", 64), Subject: "s"}}
	c.Limits.MaxBufferedBytes = 0
	c.Limits.MessageTimeout = 0
	c.RateLimit.FramesPerConnection.Count = 31
	c.Upstreams = append(c.Upstreams, Upstream{Name: "s", Type: "stdio", Command: []string{"x"}, Max: 4,
		MaxPerSubject: 5, Env: map[string]string{"A=B": "x"}, EnvPassthrough: []string{""}})
	err := c.Validate()
	for _, want := range []string{"limits.max_buffered_bytes", "limits.message_timeout",
		"ratelimit.frames_per_connection.count", "upstreams[1].max_per_subject", "upstreams[1].env", "upstreams[1].env_passthrough"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate() = %v, want a complaint about %s", err, want)
		}
	}
}

func TestStdioDefaults(t *testing.T) {
	c, err := Parse([]byte("upstreams:\n  - {name: a, type: stdio, command: [x], max: 10}\n  - {name: b, type: stdio, command: [x], max: 2, env_passthrough: [], env: {K: v}}\n"), "t.yaml")
	if err != nil {
		t.Fatal(err)
	}
	a, b := c.Upstreams[0], c.Upstreams[1]
	if a.MaxPerSubject != 2 || !reflect.DeepEqual(a.EnvPassthrough, DefaultEnvPassthrough) {
		t.Errorf("a: max_per_subject %d, env_passthrough %v", a.MaxPerSubject, a.EnvPassthrough)
	}
	if b.MaxPerSubject != 1 || len(b.EnvPassthrough) != 0 || b.EnvPassthrough == nil || b.Env["K"] != "v" {
		t.Errorf("b: max_per_subject %d, env_passthrough %#v, env %v", b.MaxPerSubject, b.EnvPassthrough, b.Env)
	}
}
