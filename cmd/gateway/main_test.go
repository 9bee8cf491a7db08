package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mcpgate/gateway/config"
)

// TestHelpEverywhere: --help and -h on every command print its usage to
// stdout and exit 0 (SPEC 12); nothing goes to stderr.
func TestHelpEverywhere(t *testing.T) {
	for _, cmd := range []string{"serve", "check", "token", "audit", "bench", "version"} {
		for _, h := range []string{"--help", "-h"} {
			var out, errb bytes.Buffer
			code := run([]string{cmd, h}, &out, &errb)
			if code != 0 {
				t.Errorf("gateway %s %s: exit %d, stderr %q", cmd, h, code, errb.String())
			}
			if !strings.HasPrefix(out.String(), "usage: gateway "+cmd) {
				t.Errorf("gateway %s %s: stdout %q, want the usage", cmd, h, out.String())
			}
			if errb.Len() != 0 {
				t.Errorf("gateway %s %s: stderr %q", cmd, h, errb.String())
			}
		}
	}
	var out bytes.Buffer
	if code := run([]string{"--help"}, &out, &bytes.Buffer{}); code != 0 || !strings.Contains(out.String(), "gateway version") {
		t.Errorf("gateway --help: exit %d, %q", code, out.String())
	}
}

func TestVersion(t *testing.T) {
	for _, args := range [][]string{{"version"}, {"--version"}} {
		var out bytes.Buffer
		if code := run(args, &out, &bytes.Buffer{}); code != 0 {
			t.Fatalf("%v: exit %d", args, code)
		}
		b := readBuildInfo()
		want := "gateway " + b.Version + " (revision " + b.Revision + ", go"
		if !strings.HasPrefix(out.String(), want) {
			t.Errorf("%v: %q, want it to start with %q", args, out.String(), want)
		}
	}
	old := version
	version = "v9.8.7"
	defer func() { version = old }()
	if b := readBuildInfo(); b.Version != "v9.8.7" {
		t.Errorf("the link-time version is not used: %+v", b)
	}
}

// TestCheckRefusesUnknownEnv: a misspelt GATEWAY_* variable is refused by
// check (exit 2, naming it); the variables that are not settings pass.
func TestCheckRefusesUnknownEnv(t *testing.T) {
	dir := t.TempDir()
	tokens := filepath.Join(dir, "tokens")
	must(t, os.WriteFile(tokens, []byte("2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b alice\n"), 0o600))
	cfg := filepath.Join(dir, "gateway.yaml")
	must(t, os.WriteFile(cfg, []byte("listen: \"127.0.0.1:0\"\nauth:\n  static_tokens_file: tokens\n"), 0o600))

	var out, errb bytes.Buffer
	t.Setenv("GATEWAY_BENCH_TOKEN", "x") // the load generator's: not a setting, not refused
	if code := run([]string{"check", "-c", cfg}, &out, &errb); code != 0 {
		t.Fatalf("check of a good file: exit %d: %s", code, errb.String())
	}
	t.Setenv("GATEWAY_LIMTS_MAX_MESSAGE_BYTES", "1")
	errb.Reset()
	if code := run([]string{"check", "-c", cfg}, &out, &errb); code != 2 || !strings.Contains(errb.String(), "GATEWAY_LIMTS_MAX_MESSAGE_BYTES: no such setting") {
		t.Fatalf("check with a misspelt variable: exit %d, stderr %q", code, errb.String())
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// TestReloadableLimitsExist: every setting a reload applies names a real
// setting (setting panics otherwise), and the comparison sees a change.
func TestReloadableLimitsExist(t *testing.T) {
	for _, p := range reloadableLimits {
		a, b := config.Default(), config.Default()
		setting(a, p) // panics for a misspelt path
		if d := differing(a, b); len(d) != 0 {
			t.Fatalf("two defaults differ: %v", d)
		}
	}
	a, b := config.Default(), config.Default()
	b.Limits.IdleTimeout *= 2
	b.Limits.MaxMessageBytes *= 2
	if d := strings.Join(differing(a, b), ","); d != "limits.max_message_bytes,limits.idle_timeout" && d != "limits.idle_timeout,limits.max_message_bytes" {
		t.Fatalf("differing = %s", d)
	}
}
