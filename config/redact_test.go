package config

import (
	"reflect"
	"strings"
	"testing"
)

func TestRedactedHidesSecrets(t *testing.T) {
	c := withToken()
	c.Redis.URL = "redis://default:hunter2@10.0.0.5:6379/0"
	out := string(c.Redacted())
	if strings.Contains(out, "hunter2") {
		t.Fatalf("password printed:\n%s", out)
	}
	if !strings.Contains(out, "url: redis://default:REDACTED@10.0.0.5:6379/0") {
		t.Errorf("redis url not shown redacted:\n%s", out)
	}
	if strings.Contains(out, c.Auth.ExtraTokens[0].SHA256Hex) || strings.Contains(strings.ToLower(out), "extra") {
		t.Errorf("extra tokens printed:\n%s", out)
	}
	if c.Redis.URL != "redis://default:hunter2@10.0.0.5:6379/0" {
		t.Error("Redacted modified the config")
	}
	for _, want := range []string{"max_message_bytes: 1MiB", "timeout: 5s", "idle_timeout: 2m", "- 127.0.0.1:8080", "on_failure: local"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}

	for in, want := range map[string]string{
		"":                               "",
		"redis://h:6379":                 "redis://h:6379",
		"redis://:pw@h:6379":             "redis://:REDACTED@h:6379",
		"rediss://u@h:6379":              "rediss://u@h:6379",
		"redis://h:6379/0?password=pw":   "redis://h:6379/0?password=REDACTED",
		"redis://u:p%zz@h":               "REDACTED",
		"redis://us%3Aer:s3cr%40t@h:1/2": "redis://us%3Aer:REDACTED@h:1/2",
	} {
		if got := RedactURL(in); got != want {
			t.Errorf("RedactURL(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestRedactedRoundTrip(t *testing.T) {
	c := withToken()
	c.Upstreams = append(c.Upstreams,
		Upstream{Name: "s", Type: "stdio", Command: []string{"npx", "-y", "x y"}, MinIdle: 2, Max: 9,
			EnvPassthrough: []string{}},
		Upstream{Name: "h", Type: "http", URLs: []string{"http://127.0.0.1:3001/mcp"}})
	c.Routes = append(c.Routes, Route{Path: "/s", Upstream: "s"})
	c.Limits.MaxMessageBytes = 1536
	c.RateLimit.FramesPerConnection.Count = 77
	back, err := Parse(c.Redacted(), "redacted.yaml")
	if err != nil {
		t.Fatalf("the printed config does not parse: %v\n%s", err, c.Redacted())
	}
	for i := range c.Upstreams {
		c.Upstreams[i] = defaultUpstream(c.Upstreams[i])
	}
	back.Auth.ExtraTokens = c.Auth.ExtraTokens
	back.defaultRoute = c.defaultRoute
	back.keyLines = nil // where each key was in the printed file
	if !reflect.DeepEqual(normalize(back), normalize(c)) {
		t.Errorf("round trip differs:\n%s\nvs\n%s", back.Redacted(), c.Redacted())
	}
}

// normalize makes nil and empty lists equal for comparison.
func normalize(c *Config) *Config {
	for i := range c.Upstreams {
		if len(c.Upstreams[i].Command) == 0 {
			c.Upstreams[i].Command = nil
		}
		if len(c.Upstreams[i].URLs) == 0 {
			c.Upstreams[i].URLs = nil
		}
		if c.Upstreams[i].Type != "stdio" && len(c.Upstreams[i].EnvPassthrough) == 0 {
			c.Upstreams[i].EnvPassthrough = nil
		}
	}
	return c
}

func TestRedactedHidesWorkerEnv(t *testing.T) {
	c := withToken()
	c.Upstreams = append(c.Upstreams, Upstream{Name: "s", Type: "stdio", Command: []string{"x"}, Max: 2,
		Env: map[string]string{"API_KEY": "sk-live-secret"}})
	out := string(c.Redacted())
	if strings.Contains(out, "sk-live-secret") || !strings.Contains(out, "API_KEY: REDACTED") {
		t.Fatalf("env values must be redacted:\n%s", out)
	}
	if c.Upstreams[1].Env["API_KEY"] != "sk-live-secret" {
		t.Fatal("Redacted changed the config it printed")
	}
}
