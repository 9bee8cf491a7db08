package metrics

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// A client chooses its close code (3000-4999): the label set stays fixed.
func TestCloseLabelsFixed(t *testing.T) {
	m := New()
	for _, code := range []int{0, 1000, 1008, 1015, 1016, 3000, 4000, 4321, 4999, 5000, -1, 1004} {
		m.Close(code)
	}
	want := map[string]float64{"0": 1, "1000": 1, "1008": 1, "1015": 1, "other": 8}
	for l, n := range want {
		if got := testutil.ToFloat64(m.Closes.WithLabelValues(l)); got != n {
			t.Errorf("closes{code=%q} = %v, want %v", l, got, n)
		}
	}
	if n := testutil.CollectAndCount(m.Closes); n != len(want) {
		t.Errorf("%d close-code series, want %d", n, len(want))
	}
	if err := testutil.CollectAndCompare(m.Closes, strings.NewReader(""), "nothing"); err != nil &&
		strings.Contains(err.Error(), "4321") {
		t.Errorf("a client-chosen code became a label: %v", err)
	}
}

// Every close code a peer can put on the wire (0-65535, and the out-of-range
// values Close clamps) maps into CloseLabels, registered codes to themselves.
func TestCloseLabelSetBounded(t *testing.T) {
	set := map[string]bool{}
	for _, l := range CloseLabels {
		set[l] = true
	}
	seen := map[string]bool{}
	for code := -1; code <= 65536; code++ {
		l := CloseLabel(code)
		if !set[l] {
			t.Fatalf("CloseLabel(%d) = %q, not in CloseLabels", code, l)
		}
		seen[l] = true
	}
	if len(seen) != len(CloseLabels) {
		t.Errorf("%d labels reachable, CloseLabels has %d", len(seen), len(CloseLabels))
	}
	registered := []int{1000, 1001, 1002, 1003, 1005, 1006, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 1015}
	for _, code := range registered {
		if l := CloseLabel(code); l == "other" {
			t.Errorf("registered code %d labelled other", code)
		}
	}
	for _, code := range []int{1004, 1016, 2999, 3000, 3003, 3999, 4000, 4321, 4999, 5000, 65535} {
		if l := CloseLabel(code); l != "other" {
			t.Errorf("CloseLabel(%d) = %q, want other", code, l)
		}
	}
	// Through the collector: 2,000 client-chosen codes make one series.
	m := New()
	for code := 3000; code < 5000; code++ {
		m.Close(code)
	}
	m.Close(1013)
	if n := testutil.CollectAndCount(m.Closes); n != 2 {
		t.Errorf("%d close-code series after 2,000 client codes and 1013, want 2", n)
	}
	if got := testutil.ToFloat64(m.Closes.WithLabelValues("other")); got != 2000 {
		t.Errorf("closes{code=other} = %v, want 2000", got)
	}
}
