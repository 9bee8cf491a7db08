package config

import (
	"bytes"
	"fmt"
	"math"
	"net/url"

	"go.yaml.in/yaml/v3"
)

// Redacted returns the effective configuration as YAML, as `gateway check`
// prints it: every setting with its value after defaults and overrides, the
// password of redis.url replaced by "REDACTED" (an unparseable URL is replaced
// whole), the values of upstreams[].env (API keys for the children, often)
// replaced by "REDACTED", and Auth.ExtraTokens never printed. File paths are printed, never the
// files' contents.
func (c *Config) Redacted() []byte {
	cp := *c
	cp.Redis.URL = RedactURL(c.Redis.URL)
	cp.Tracing.OTLPEndpoint = RedactURL(c.Tracing.OTLPEndpoint)
	cp.Upstreams = append([]Upstream(nil), c.Upstreams...)
	for i := range cp.Upstreams {
		if env := cp.Upstreams[i].Env; env != nil {
			red := make(map[string]string, len(env))
			for k := range env {
				red[k] = "REDACTED"
			}
			cp.Upstreams[i].Env = red
		}
	}
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(&cp); err != nil {
		return []byte(fmt.Sprintf("# cannot print the configuration: %v\n", err))
	}
	enc.Close()
	return buf.Bytes()
}

// RedactURL returns raw with its password (user info password or a
// "password" query parameter) replaced by "REDACTED"; a URL that does not
// parse is replaced whole. Use it to log redis.url.
func RedactURL(raw string) string {
	if raw == "" {
		return ""
	}
	u, err := url.Parse(raw)
	if err != nil {
		return "REDACTED"
	}
	if u.User != nil {
		if _, has := u.User.Password(); has {
			u.User = url.UserPassword(u.User.Username(), "REDACTED")
		}
	}
	if q := u.Query(); q.Has("password") {
		q.Set("password", "REDACTED")
		u.RawQuery = q.Encode()
	}
	return u.String()
}

// UpstreamByName returns the upstream called name, or nil.
func (c *Config) UpstreamByName(name string) *Upstream {
	for i := range c.Upstreams {
		if c.Upstreams[i].Name == name {
			return &c.Upstreams[i]
		}
	}
	return nil
}

// EffectiveMaxConnections returns limits.max_connections, the operator's
// cap, or when it is 0, the process's soft RLIMIT_NOFILE (Go raises it to
// the hard limit at start on Linux), at least 1: no more connections than
// descriptors. Descriptors themselves are the descriptor budget's
// (package fdbudget): it counts every descriptor the process holds and
// refuses clients with 503 before the limit, so no static reserve is kept
// here.
func (c *Config) EffectiveMaxConnections() int {
	if c.Limits.MaxConnections > 0 {
		return c.Limits.MaxConnections
	}
	soft, ok := softNOFILE()
	if !ok {
		soft = 1024
	}
	return maxConnsFromLimit(soft)
}

func maxConnsFromLimit(soft uint64) int {
	return int(max(1, min(soft, math.MaxInt32)))
}
