package metrics

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// A client chooses its close code (3000-4999): the label set stays fixed.
func TestCloseLabelsFixed(t *testing.T) {
	m := New()
	for _, code := range []int{0, 1000, 1008, 1015, 1016, 3000, 4000, 4321, 4999, 5000, -1} {
		m.Close(code)
	}
	want := map[string]float64{"0": 1, "1000": 1, "1008": 1, "1015": 1, "other": 7}
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
