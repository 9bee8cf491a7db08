package bench

import (
	"fmt"
	"math"
	"strings"
	"testing"
)

// procStat renders a /proc/stat with the given per-CPU tick lines.
func procStat(cpus ...cpuTicks) []byte {
	var b strings.Builder
	b.WriteString("cpu  1 2 3 4 5 6 7 8 0 0\n")
	for i, t := range cpus {
		fmt.Fprintf(&b, "cpu%d %d %d %d %d %d %d %d %d 0 0\n", i, t[0], t[1], t[2], t[3], t[4], t[5], t[6], t[7])
	}
	b.WriteString("intr 12345 0 0\nctxt 999\nbtime 1700000000\n")
	return []byte(b.String())
}

func TestParseProcStat(t *testing.T) {
	got := parseProcStat(procStat(cpuTicks{1, 2, 3, 4, 5, 6, 7, 8}, cpuTicks{10, 0, 20, 30, 0, 1, 2, 3}))
	if len(got) != 2 {
		t.Fatalf("got %d CPUs, want 2 (the total line is not a CPU): %v", len(got), got)
	}
	if got[1] != (cpuTicks{10, 0, 20, 30, 0, 1, 2, 3}) {
		t.Fatalf("cpu1 = %v", got[1])
	}
	// Older kernels and garbage: short or unreadable lines are skipped.
	got = parseProcStat([]byte("cpu0 1 2 3\ncpuX 1 2 3 4 5 6 7 8\ncpu1 1 2 3 4 5 6 7 x\ncpu2 1 1 1 1 1 1 1 1\n"))
	if len(got) != 1 || got[2] != (cpuTicks{1, 1, 1, 1, 1, 1, 1, 1}) {
		t.Fatalf("got %v, want only cpu2", got)
	}
}

func near(a, b float64) bool { return math.Abs(a-b) < 1e-9 }

// TestHostSamplerShares feeds three readings: the run's shares come from the
// first and last, the worst window from the samples between.
func TestHostSamplerShares(t *testing.T) {
	readings := [][]byte{
		procStat(cpuTicks{0, 0, 0, 0, 0, 0, 0, 0}, cpuTicks{0, 0, 0, 0, 0, 0, 0, 0}),
		// window 1: cpu1 loses 5 of 10 ticks to steal
		procStat(cpuTicks{5, 0, 0, 5, 0, 0, 0, 0}, cpuTicks{3, 0, 1, 0, 0, 0, 1, 5}),
		// window 2: no steal; cpu0 all softirq
		procStat(cpuTicks{5, 0, 0, 5, 0, 0, 10, 0}, cpuTicks{3, 0, 1, 90, 0, 0, 1, 5}),
	}
	i := 0
	read := func() ([]byte, error) {
		b := readings[min(i, len(readings)-1)]
		i++
		return b, nil
	}
	s := startHostSampler(read)
	if s == nil {
		t.Fatal("no sampler")
	}
	close(s.quit) // drive it by hand
	<-s.done
	s.sample()
	s.sample()
	h := s.stats(2)
	if len(h.CPUs) != 2 || h.CPUs[0].CPU != 0 || h.CPUs[1].CPU != 1 {
		t.Fatalf("cpus = %+v", h.CPUs)
	}
	c0, c1 := h.CPUs[0], h.CPUs[1]
	if !near(c0.BusyPct, 75) || !near(c0.SoftIRQPct, 50) || c0.StealPct != 0 || c0.StealMaxPct != 0 {
		t.Errorf("cpu0 = %+v, want busy 75 %% (5 user + 10 softirq of 20), softirq 50 %%, no steal", c0)
	}
	if !near(c1.StealPct, 5) || !near(c1.StealMaxPct, 50) || !near(c1.BusyPct, 5) {
		t.Errorf("cpu1 = %+v, want steal 5 %% over the run (5 of 100), worst window 50 %%, busy 5 %%", c1)
	}
	if txt := h.text(); !strings.Contains(txt, "cpu1 busy 5.0% (softirq 1.0%), steal 5.0% (worst 100 ms: 50%)") {
		t.Errorf("text = %q", txt)
	}
}

func TestHostSamplerUnreadable(t *testing.T) {
	if s := startHostSampler(func() ([]byte, error) { return nil, fmt.Errorf("no /proc") }); s != nil {
		t.Fatal("a sampler without /proc/stat")
	}
	var s *hostSampler
	if s.stop() != nil {
		t.Fatal("nil sampler gave stats")
	}
	// A counter that goes backwards (hotplug) gives 0, not a huge share.
	if d := (cpuTicks{1}).sub(cpuTicks{5}); d[0] != 0 {
		t.Fatalf("sub = %v", d)
	}
}
