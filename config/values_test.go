package config

import (
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

func TestParseSize(t *testing.T) {
	good := map[string]int64{
		"0":        0,
		"512":      512,
		"512B":     512,
		"1KiB":     1024,
		"8KiB":     8 << 10,
		"1MiB":     1 << 20,
		"1 MiB":    1 << 20,
		" 4MiB ":   4 << 20,
		"2GiB":     2 << 30,
		"1TiB":     1 << 40,
		"1KB":      1000,
		"2MB":      2 * 1000 * 1000,
		"3GB":      3e9,
		"1TB":      1e12,
		"00012KiB": 12 << 10,
	}
	for in, want := range good {
		got, err := ParseSize(in)
		if err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{
		"", " ", "MiB", "-1", "+1", "1.5MiB", "1Mb", "1mib", "1M", "1K", "1 k", "0x10",
		"1e6", "9223372036854775808", "8589934592GiB", "10000000TiB", "1MiB1", "1_000",
	} {
		if got, err := ParseSize(in); err == nil {
			t.Errorf("ParseSize(%q) = %d, want an error", in, got)
		}
	}
}

func FuzzParseSize(f *testing.F) {
	for _, s := range []string{"1MiB", "8KiB", "512", "2MB", "", "-1", "9223372036854775807", "1 GiB"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := ParseSize(s)
		if err != nil {
			return
		}
		if n < 0 {
			t.Fatalf("ParseSize(%q) = %d: negative", s, n)
		}
		// What String prints must parse back to the same count.
		back, err := ParseSize(Size(n).String())
		if err != nil || back != n {
			t.Fatalf("ParseSize(%q) = %d; String %q parses to %d, %v", s, n, Size(n).String(), back, err)
		}
	})
}

func TestSizeYAML(t *testing.T) {
	for in, want := range map[string]Size{
		"v: 1048576": 1 << 20,
		"v: 1MiB":    1 << 20,
		`v: "8KiB"`:  8 << 10,
		"v: 2MB":     2000000,
		"v: 0x100":   256,
	} {
		var out struct{ V Size }
		if err := yaml.Unmarshal([]byte(in), &out); err != nil || out.V != want {
			t.Errorf("%s: got %d, %v; want %d", in, out.V, err, want)
		}
	}
	for _, in := range []string{"v: -5", "v: 1.5", "v: [1]", "v: 1XB", "v: 99999999999999999999"} {
		var out struct{ V Size }
		if err := yaml.Unmarshal([]byte(in), &out); err == nil {
			t.Errorf("%s: no error (got %d)", in, out.V)
		}
	}
	for s, want := range map[Size]any{1 << 20: "1MiB", 16 << 10: "16KiB", 1536: int64(1536), 0: int64(0), 2000000: int64(2000000), 3 << 40: "3TiB"} {
		got, _ := s.MarshalYAML()
		if got != want {
			t.Errorf("Size(%d).MarshalYAML() = %#v, want %#v", int64(s), got, want)
		}
	}
	if Size(1<<20).Int() != 1<<20 {
		t.Error("Int")
	}
}

func TestDurationYAML(t *testing.T) {
	var out struct{ V Duration }
	if err := yaml.Unmarshal([]byte("v: 1m30s"), &out); err != nil || out.V.D() != 90*time.Second {
		t.Fatalf("got %v, %v", out.V, err)
	}
	for _, in := range []string{"v: 5", "v: 5x", "v: {a: 1}", "v: [1s]"} {
		if err := yaml.Unmarshal([]byte(in), &out); err == nil {
			t.Errorf("%s: no error", in)
		}
	}
	for d, want := range map[time.Duration]string{5 * time.Second: "5s", 2 * time.Minute: "2m", time.Hour: "1h", 90 * time.Minute: "1h30m", 1500 * time.Millisecond: "1.5s", 0: "0s"} {
		got, _ := Duration(d).MarshalYAML()
		if got != want {
			t.Errorf("Duration(%v) = %v, want %s", d, got, want)
		}
		if back, err := time.ParseDuration(want); err != nil || back != d {
			t.Errorf("%s does not parse back", want)
		}
	}
}

func TestListenScalarOrList(t *testing.T) {
	for in, want := range map[string][]string{
		`listen: "0.0.0.0:8443"`:                      {"0.0.0.0:8443"},
		"listen: 127.0.0.1:1":                         {"127.0.0.1:1"},
		"listen: [127.0.0.1:1, \"[::1]:2\"]":          {"127.0.0.1:1", "[::1]:2"},
		"listen:\n  - 127.0.0.1:1\n  - 127.0.0.2:1\n": {"127.0.0.1:1", "127.0.0.2:1"},
	} {
		c, err := Parse([]byte(in), "t.yaml")
		if err != nil {
			t.Fatalf("%s: %v", in, err)
		}
		if strings.Join(c.Listen, ",") != strings.Join(want, ",") {
			t.Errorf("%s: got %q, want %q", in, c.Listen, want)
		}
	}
	if _, err := Parse([]byte("listen: {a: 1}"), "t.yaml"); err == nil || !strings.Contains(err.Error(), "line 1") {
		t.Errorf("mapping listen: %v", err)
	}
	if _, err := Parse([]byte("listen: [[a]]"), "t.yaml"); err == nil {
		t.Error("nested list accepted")
	}
}
