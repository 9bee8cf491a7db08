package config

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// tokens is a static tokens file line: sha256("secret") and a subject.
const tokens = "2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b alice\n"

func TestLoadFullExample(t *testing.T) {
	dir := t.TempDir()
	writeCert(t, dir)
	writeFile(t, dir, "tokens.txt", tokens)
	writeFile(t, dir, "jwt.key", "0123456789abcdef0123456789abcdef")
	cfg := writeFile(t, dir, "gateway.yaml", `
listen: "0.0.0.0:8443"
path: /mcp
tls:
  cert_file: server.crt
  key_file: server.key
  min_version: "1.3"
proxy:
  trusted_cidrs: [10.0.0.0/8]
  proxy_protocol: true
origins:
  allowed: ["https://claude.ai", "https://app.example.com"]
  allow_absent: false
auth:
  timeout: 3s
  header: false
  static_tokens_file: tokens.txt
  jwt:
    hs256_secret_file: jwt.key
    issuer: me
    audience: you
  tickets: {ttl: 1m}
limits:
  max_message_bytes: 2MiB
  max_preauth_message_bytes: 4096
  max_header_bytes: 16KiB
  max_connections: 1000
  write_buffer_bytes: 8MB
  ipv6_prefix: 48
ratelimit:
  per_connection: {messages: 50, window: 5s}
  handshakes_per_ip: {count: 10, window: 1s}
redis:
  url: redis://:hunter2@127.0.0.1:6379/0
  on_failure: deny
upstreams:
  - name: demo
    type: builtin
  - name: everything
    type: stdio
    command: ["npx", "-y", "@modelcontextprotocol/server-everything"]
    min_idle: 2
    max: 512
  - name: remote
    type: http
    urls: ["http://127.0.0.1:3001/mcp"]
routes:
  - {path: /mcp, upstream: demo}
  - {path: /everything, upstream: everything}
admin:
  listen: 127.0.0.1:9191
drain_timeout: 5s
log: {format: json, level: debug}
`)
	c, err := Load(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if c.TLS.CertFile != filepath.Join(dir, "server.crt") || c.Auth.StaticTokensFile != filepath.Join(dir, "tokens.txt") {
		t.Errorf("relative files not resolved against the config's directory: %q %q", c.TLS.CertFile, c.Auth.StaticTokensFile)
	}
	if c.Limits.MaxMessageBytes != 2<<20 || c.Limits.MaxPreAuthBytes != 4096 || c.Limits.WriteBufferBytes != 8e6 {
		t.Errorf("sizes: %+v", c.Limits)
	}
	if c.Limits.IPv6Prefix != 48 {
		t.Errorf("limits.ipv6_prefix = %d, want 48", c.Limits.IPv6Prefix)
	}
	if c.Limits.HandshakeTimeout.D() != 10*time.Second || c.Limits.MaxConnectionsPerIP != 256 || c.Limits.IPv4Prefix != 32 {
		t.Errorf("unset limits lost their defaults: %+v", c.Limits)
	}
	if c.RateLimit.PerSubject.Messages != 1000 || c.RateLimit.PerConnection.Window.D() != 5*time.Second {
		t.Errorf("ratelimit: %+v", c.RateLimit)
	}
	if len(c.Upstreams) != 3 || len(c.Routes) != 2 || c.UpstreamByName("everything").Max != 512 ||
		c.UpstreamByName("remote").RequestTimeout.D() != DefaultRequestTimeout || c.UpstreamByName("nope") != nil {
		t.Errorf("upstreams/routes: %+v %+v", c.Upstreams, c.Routes)
	}
	if c.Auth.Header || c.Origins.AllowAbsent || !c.Proxy.ProxyProtocol || c.Log.Format != "json" || c.EffectiveMaxConnections() != 1000 {
		t.Errorf("booleans/log: %+v", c)
	}
}

func TestUnknownKeyNamesKeyAndLine(t *testing.T) {
	data := "path: /mcp\n# comment\n\nauth:\n  timeout: 5s\n\nlisen: 127.0.0.1:1\n"
	_, err := Parse([]byte(data), "config.yaml")
	if err == nil || !strings.Contains(err.Error(), `config.yaml: line 7: unknown key "lisen"`) {
		t.Fatalf("got %v", err)
	}
	if !strings.Contains(err.Error(), `did you mean "listen"`) {
		t.Errorf("no suggestion: %v", err)
	}
	for data, want := range map[string]string{
		"limits:\n  max_mesage_bytes: 1MiB\n":                      `line 2: unknown key "max_mesage_bytes" in "limits"`,
		"ratelimit:\n  per_connection: {messages: 1, windw: 1s}\n": `line 2: unknown key "windw" in "ratelimit.per_connection"`,
		"upstreams:\n  - name: a\n    type: stdio\n    cmd: [x]\n": `line 4: unknown key "cmd" in "upstreams[0]"`,
		"auth:\n  extra_tokens: [a]\n":                             `line 2: unknown key "extra_tokens" in "auth"`,
		"x: &a {y: 1}\nlimits: *a\n":                               `line 1: unknown key "x"`,
		"limits: &a\n  idle_timeout: 5s\nadmin: *a\n":              `unknown key "idle_timeout"`,
	} {
		_, err := Parse([]byte(data), "c.yaml")
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: got %v, want %q", data, err, want)
		}
	}
}

func TestParseErrorsNameSettingAndLine(t *testing.T) {
	for data, want := range map[string]string{
		"limits:\n  max_connections: many\n":          `c.yaml: line 2: limits.max_connections: got the string "many", want an integer`,
		"auth:\n  timeout: 5\n":                       `line 2: auth.timeout: invalid duration "5"`,
		"limits:\n  max_message_bytes: 1Mb\n":         `line 2: limits.max_message_bytes: invalid size "1Mb"`,
		"origins:\n  allow_absent: maybe\n":           `line 2: origins.allow_absent: got the string "maybe", want true or false`,
		"ratelimit:\n  per_subject: {messages: x}\n":  `line 2: ratelimit.per_subject.messages`,
		"auth: {timeout: [1s]}\n":                     `line 1: auth.timeout: got a list, want a duration`,
		"tls: yes\n":                                  `line 1: tls: got the string "yes", want a mapping`,
		"path: [a]\n":                                 `line 1: path: got a list, want a string`,
		"a: [\n":                                      `c.yaml: line 1: `,
		"- a\n":                                       `must be a mapping`,
		"path: /a\n---\npath: /b\n":                   `line 2: only one YAML document`,
		"path: /a\npath: /b\n":                        `line 2: path: set twice (first at line 1)`,
		"listen: 127.0.0.1:1\nlimits:\n  max: 1\n  x": `c.yaml: line 4: could not find expected ':'`,
	} {
		_, err := Parse([]byte(data), "c.yaml")
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: got %v, want %q", data, err, want)
		}
	}
}

func TestParseDefaultsUpstreamsAndRoutes(t *testing.T) {
	for _, data := range []string{"", "# nothing\n", "~\n", "---\n"} {
		c, err := Parse([]byte(data), "c.yaml")
		if err != nil {
			t.Fatalf("%q: %v", data, err)
		}
		want := Default()
		if !reflect.DeepEqual(c, want) {
			t.Errorf("%q: not the defaults:\n%s", data, c.Redacted())
		}
	}

	c, err := Parse([]byte("path: /agents\n"), "c.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Routes) != 1 || c.Routes[0] != (Route{Path: "/agents", Upstream: "demo"}) || c.Upstreams[0].Name != "demo" {
		t.Errorf("default route does not follow path: %+v", c.Routes)
	}

	c, err = Parse([]byte("upstreams:\n  - {name: tools, type: stdio, command: [x]}\n"), "c.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Upstreams) != 1 || c.Routes[0] != (Route{Path: "/mcp", Upstream: "tools"}) || c.Upstreams[0].Max != DefaultStdioMax {
		t.Errorf("upstreams without routes: %+v %+v", c.Upstreams, c.Routes)
	}

	c, err = Parse([]byte("path: /x\nroutes:\n  - {path: /y, upstream: demo}\n"), "c.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Routes) != 1 || c.Routes[0].Path != "/y" {
		t.Errorf("explicit routes replaced: %+v", c.Routes)
	}
	if err := c.ApplyEnv(mapEnv{"GATEWAY_PATH": "/z"}.lookup); err != nil || c.Routes[0].Path != "/y" {
		t.Errorf("GATEWAY_PATH moved an explicit route: %+v", c.Routes)
	}
}

func TestLoadAppliesEnvThenValidates(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir, "tokens.txt", tokens)
	cfg := writeFile(t, dir, "c.yaml", "auth:\n  static_tokens_file: tokens.txt\n")
	t.Setenv("GATEWAY_PATH", "/env")
	t.Setenv("GATEWAY_LIMITS_MAX_MESSAGE_BYTES", "64KiB")
	c, err := Load(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if c.Path != "/env" || c.Routes[0].Path != "/env" || c.Limits.MaxMessageBytes != 64<<10 {
		t.Errorf("env not applied: %q %+v %v", c.Path, c.Routes, c.Limits.MaxMessageBytes)
	}

	t.Setenv("GATEWAY_LISTEN", "0.0.0.0:8080")
	_, err = Load(cfg)
	wantSettingErr(t, err, "listen", "0.0.0.0:8080")

	t.Setenv("GATEWAY_LISTEN", "127.0.0.1:8080")
	t.Setenv("GATEWAY_AUTH_TIMEOUT", "soon")
	_, err = Load(cfg)
	wantSettingErr(t, err, "auth.timeout", "GATEWAY_AUTH_TIMEOUT")
}

func TestLoadRefusals(t *testing.T) {
	dir := t.TempDir()
	if _, err := Load(filepath.Join(dir, "missing.yaml")); err == nil || !strings.Contains(err.Error(), "missing.yaml") {
		t.Errorf("missing file: %v", err)
	}
	// A file that configures no credential is refused (the embedded default's
	// token is added by `gateway serve` only when it runs without a file).
	cfg := writeFile(t, dir, "c.yaml", "path: /mcp\n")
	_, err := Load(cfg)
	wantSettingErr(t, err, "auth")

	cfg = writeFile(t, dir, "c2.yaml", "auth:\n  static_tokens_file: tokens.txt\n")
	_, err = Load(cfg)
	wantSettingErr(t, err, "auth.static_tokens_file", filepath.Join(dir, "tokens.txt"))

	big := writeFile(t, dir, "big.yaml", "# "+strings.Repeat("x", MaxFileBytes)+"\n")
	if _, err := Load(big); err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Errorf("big file: %v", err)
	}
	if err := os.WriteFile(cfg, []byte("lisen: x\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(cfg); err == nil || !strings.Contains(err.Error(), cfg+`: line 1: unknown key "lisen"`) {
		t.Errorf("unknown key through Load: %v", err)
	}
}

// TestSemanticErrorLines: an error found by Validate (not by the YAML
// decoder) names the file and the line of the key it concerns, or the
// GATEWAY_* variable that set the value; a setting the file did not give
// points at the nearest key it did.
func TestSemanticErrorLines(t *testing.T) {
	dir := t.TempDir()
	tokens := filepath.Join(dir, "tokens")
	if err := os.WriteFile(tokens, []byte("t1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dir, "gateway.yaml")
	yaml := "listen: \"127.0.0.1:0\"\n" + // 1
		"auth:\n" + // 2
		"  static_tokens_file: tokens\n" + // 3
		"limits:\n" + // 4
		"  max_message_bytes: 1024\n" + // 5
		"  max_preauth_message_bytes: 4096\n" + // 6
		"  ipv6_prefix: 200\n" + // 7
		"tls:\n" + // 8
		"  min_version: \"1.1\"\n" // 9
	if err := os.WriteFile(file, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Load(file)
	if err == nil {
		t.Fatal("Load accepted an invalid file")
	}
	for _, want := range []string{
		file + ": line 6: limits.max_preauth_message_bytes: ",
		file + ": line 7: limits.ipv6_prefix: ",
		file + ": line 9: tls.min_version: ",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not contain %q", err, want)
		}
	}

	t.Setenv("GATEWAY_LIMITS_IPV6_PREFIX", "300")
	_, err = Load(file)
	if err == nil || !strings.Contains(err.Error(), "GATEWAY_LIMITS_IPV6_PREFIX: limits.ipv6_prefix: ") {
		t.Errorf("a value from the environment is not blamed on it: %v", err)
	}

	if p := parentPath("upstreams[0].command[2]"); p != "upstreams[0].command" {
		t.Errorf("parentPath = %q", p)
	}
	if p := parentPath(parentPath("upstreams[0].command")); p != "upstreams" {
		t.Errorf("parentPath twice = %q", p)
	}
}
