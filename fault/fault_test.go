package fault

import (
	"bytes"
	"errors"
	"log/slog"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/mcpgate/gateway/metrics"
)

func TestRecoveredCountsAndLogs(t *testing.T) {
	m := metrics.New()
	var buf bytes.Buffer
	log := slog.New(slog.NewJSONHandler(&buf, nil))
	func() {
		defer func() { Recovered(m, log, SiteUpstream, recover()) }()
		var p *struct{ x int }
		_ = p.x // nil dereference: a runtime.Error
	}()
	if got := testutil.ToFloat64(m.Panics.WithLabelValues(SiteUpstream)); got != 1 {
		t.Fatalf("gateway_panics_total{site=upstream} = %v, want 1", got)
	}
	if got := testutil.ToFloat64(m.Panics.WithLabelValues(SiteBuiltin)); got != 0 {
		t.Fatalf("gateway_panics_total{site=builtin} = %v, want 0", got)
	}
	out := buf.String()
	for _, want := range []string{`"level":"ERROR"`, `"msg":"panic recovered"`, `"site":"upstream"`,
		`"panic_type":"runtime.errorString"`, "nil pointer dereference", "TestRecoveredCountsAndLogs"} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %s:\n%s", want, out)
		}
	}
}

func TestRecoveredNil(t *testing.T) {
	m := metrics.New()
	Recovered(m, nil, SiteLoop, nil) // recover() gave nothing: no panic happened
	if got := testutil.ToFloat64(m.Panics.WithLabelValues(SiteLoop)); got != 0 {
		t.Fatalf("counted %v panics for none", got)
	}
	Recovered(nil, nil, SiteLoop, "no metrics, default logger") // must not panic
}

// The log never holds more than a bounded text of the panic value: a value
// built from a message (which may carry a token) is cut.
func TestRecoveredBoundsValue(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewJSONHandler(&buf, nil))
	secret := "Bearer " + strings.Repeat("s", 300) + "-TAIL-SECRET"
	Recovered(nil, log, SiteBuiltin, errors.New("bad message: "+secret))
	if strings.Contains(buf.String(), "TAIL-SECRET") {
		t.Fatalf("log holds the whole panic value: %s", buf.String())
	}
	if !strings.Contains(buf.String(), `"panic_type":"*errors.errorString"`) {
		t.Fatalf("log lacks the panic type: %s", buf.String())
	}
}

type badStringer struct{}

func (badStringer) String() string { panic("String panics too") }

func TestDescribe(t *testing.T) {
	for _, tc := range []struct {
		in   any
		want string
	}{
		{"plain", "plain"},
		{errors.New("an error"), "an error"},
		{42, "42"},
		{"two\nlines", `"two\nlines"`},
		{badStringer{}, "(fault.badStringer)"},
		{Injected{Point: "stdio.line", N: 2}, "fault: injected panic at stdio.line (hit 2)"},
	} {
		if got := Describe(tc.in); got != tc.want {
			t.Errorf("Describe(%#v) = %q, want %q", tc.in, got, tc.want)
		}
	}
	if got := Describe(strings.Repeat("x", 1000)); len(got) != maxValue+3 {
		t.Errorf("Describe of 1000 bytes gave %d", len(got))
	}
}

func TestSitesAreRegistered(t *testing.T) {
	for _, s := range []string{SiteLoop, SiteUpstream, SiteBuiltin} {
		found := false
		for _, p := range metrics.PanicSites {
			found = found || p == s
		}
		if !found {
			t.Errorf("site %q is not in metrics.PanicSites", s)
		}
	}
}
