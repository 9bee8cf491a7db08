package reactor

import (
	"runtime/metrics"
	"testing"
)

func TestTrimWorthIt(t *testing.T) {
	const mib = 1 << 20
	cases := []struct {
		free, objects, live uint64
		want                bool
	}{
		{0, 44 * mib, 44 * mib, false},          // nothing dead, nothing free
		{8 * mib, 62 * mib, 44 * mib, true},     // after a storm: 8 free + 18 dead
		{4 * mib, 50 * mib, 44 * mib, false},    // 10 MiB: under a quarter of 44
		{2 * mib, 45 * mib, 44 * mib, false},    // 3 MiB: under trimMinFree
		{3 * mib, 6 * mib, 4 * mib, true},       // a small heap: 5 MiB back
		{20 * mib, 400 * mib, 400 * mib, false}, // 20 MiB of a 400 MiB heap: under a quarter
		{40 * mib, 420 * mib, 400 * mib, false}, // 60 < 100
		{60 * mib, 460 * mib, 400 * mib, true},  // 120 >= 100
		{20 * mib, 10 * mib, 12 * mib, true},    // live above objects (freed since): free counts
	}
	for _, c := range cases {
		if got := trimWorthIt(c.free, c.objects, c.live); got != c.want {
			t.Errorf("free %d objects %d live %d MiB: got %v", c.free/mib, c.objects/mib, c.live/mib, got)
		}
	}
}

func TestScavengeWorthIt(t *testing.T) {
	const mib = 1 << 20
	cases := []struct {
		free, live uint64
		want       bool
	}{
		{0, 3 * mib, false},
		{mib / 2, 3 * mib, false}, // under a MiB
		{2 * mib, 3 * mib, true},  // a small idle gateway after a burst
		{20 * mib, 400 * mib, false},
		{120 * mib, 400 * mib, true},
	}
	for _, c := range cases {
		if got := scavengeWorthIt(c.free, c.live); got != c.want {
			t.Errorf("free %d live %d MiB: got %v", c.free/mib, c.live/mib, got)
		}
	}
}

// The metrics trimMemory reads exist in this Go (else it would stop trimming).
func TestTrimMetricsExist(t *testing.T) {
	samples := trimSamples()
	metrics.Read(samples)
	if !allUint64(samples) {
		t.Fatalf("runtime/metrics lacks a sample trimMemory reads: %+v", samples)
	}
}
