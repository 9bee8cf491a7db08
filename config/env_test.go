package config

import (
	"slices"
	"strings"
	"testing"
	"time"
)

type mapEnv map[string]string

func (m mapEnv) lookup(k string) (string, bool) { v, ok := m[k]; return v, ok }

func TestApplyEnv(t *testing.T) {
	c := Default()
	err := c.ApplyEnv(mapEnv{
		"GATEWAY_PATH":                               "/agents",
		"GATEWAY_LISTEN":                             "127.0.0.1:1, [::1]:2,",
		"GATEWAY_AUTH_TIMEOUT":                       "2s",
		"GATEWAY_AUTH_HEADER":                        "false",
		"GATEWAY_LIMITS_MAX_MESSAGE_BYTES":           "2MiB",
		"GATEWAY_LIMITS_MAX_CONNECTIONS":             "777",
		"GATEWAY_REDIS_URL":                          "redis://127.0.0.1:6379/0",
		"GATEWAY_ADMIN_LISTEN":                       "",
		"GATEWAY_ORIGINS_ALLOW_ABSENT":               "0",
		"GATEWAY_ORIGINS_ALLOWED":                    "https://a.com,https://b.com",
		"GATEWAY_LOG_FORMAT":                         "json",
		"GATEWAY_RATELIMIT_PER_SUBJECT_MESSAGES":     "5",
		"GATEWAY_RATELIMIT_HANDSHAKES_PER_IP_WINDOW": "1m",
		"GATEWAY_TLS_MIN_VERSION":                    "1.3",
		"GATEWAY_NO_SUCH_SETTING":                    "ignored",
		"GATEWAY_UPSTREAMS":                          "ignored",
	}.lookup)
	if err != nil {
		t.Fatal(err)
	}
	want := Default()
	want.Path = "/agents"
	want.Routes[0].Path = "/agents" // the default route follows path
	want.Listen = Listeners{"127.0.0.1:1", "[::1]:2"}
	want.Auth.Timeout = Duration(2 * time.Second)
	want.Auth.Header = false
	want.Limits.MaxMessageBytes = 2 << 20
	want.Limits.MaxConnections = 777
	want.Redis.URL = "redis://127.0.0.1:6379/0"
	want.Admin.Listen = ""
	want.Origins.AllowAbsent = false
	want.Origins.Allowed = []string{"https://a.com", "https://b.com"}
	want.Log.Format = "json"
	want.RateLimit.PerSubject.Messages = 5
	want.RateLimit.HandshakesPerIP.Window = Duration(time.Minute)
	want.TLS.MinVersion = "1.3"
	if got, exp := string(c.Redacted()), string(want.Redacted()); got != exp {
		t.Errorf("got\n%s\nwant\n%s", got, exp)
	}
}

func TestApplyEnvBadValues(t *testing.T) {
	for env, val := range map[string]string{
		"GATEWAY_AUTH_TIMEOUT":                    "5",
		"GATEWAY_LIMITS_MAX_MESSAGE_BYTES":        "1Mb",
		"GATEWAY_LIMITS_MAX_CONNECTIONS":          "lots",
		"GATEWAY_ORIGINS_ALLOW_ABSENT":            "perhaps",
		"GATEWAY_INSECURE_PLAINTEXT":              "yes please",
		"GATEWAY_RATELIMIT_PER_CONNECTION_WINDOW": "",
	} {
		err := Default().ApplyEnv(mapEnv{env: val}.lookup)
		if err == nil || !strings.Contains(err.Error(), env) {
			t.Errorf("%s=%q: got %v, want an error naming the variable", env, val, err)
		}
		if _, ok := err.(*Error); !ok {
			t.Errorf("%s: %T is not *Error", env, err)
		}
	}
}

func TestEnvNames(t *testing.T) {
	names := EnvNames()
	for _, want := range []string{
		"GATEWAY_PATH", "GATEWAY_LISTEN", "GATEWAY_AUTH_TIMEOUT", "GATEWAY_LIMITS_MAX_MESSAGE_BYTES",
		"GATEWAY_REDIS_URL", "GATEWAY_ADMIN_LISTEN", "GATEWAY_ORIGINS_ALLOW_ABSENT", "GATEWAY_LOG_FORMAT",
		"GATEWAY_AUTH_JWT_HS256_SECRET_FILE", "GATEWAY_AUTH_TICKETS_TTL", "GATEWAY_DRAIN_TIMEOUT",
		"GATEWAY_PROXY_TRUSTED_CIDRS", "GATEWAY_INSECURE_PLAINTEXT", "GATEWAY_LIMITS_MAX_PREAUTH_MESSAGE_BYTES",
		"GATEWAY_LIMITS_IPV6_PREFIX", "GATEWAY_LIMITS_IPV4_PREFIX",
	} {
		if !slices.Contains(names, want) {
			t.Errorf("EnvNames lacks %s", want)
		}
	}
	for i := 1; i < len(names); i++ {
		if names[i] == names[i-1] {
			t.Errorf("two settings share %s", names[i])
		}
	}
	for _, n := range names {
		if strings.Contains(n, "UPSTREAMS") || strings.Contains(n, "ROUTES") || strings.Contains(n, "EXTRA") {
			t.Errorf("%s must not be overridable", n)
		}
	}
	got := UnknownEnv([]string{"GATEWAY_PATH=/x", "GATEWAY_LISEN=1", "HOME=/root", "GATEWAY_UPSTREAMS="})
	if !slices.Equal(got, []string{"GATEWAY_LISEN", "GATEWAY_UPSTREAMS"}) {
		t.Errorf("UnknownEnv = %v", got)
	}
}
