package bench

import (
	"bufio"
	"bytes"
	"fmt"
	"maps"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// The host's CPUs during the run phase, from /proc/stat. On a virtual
// machine, steal is time the hypervisor gave a vCPU to someone else: every
// thread on that CPU stops, for milliseconds at a time, and an open-loop run
// records the stop as latency that no server could have avoided. The report
// gives each CPU's busy, softirq and steal shares over the run, and the worst
// steal in any hostSampleEvery window, so that a tail can be read against
// the machine that produced it.

// hostSampleEvery is the window of the worst-steal figure: short enough to
// catch the bursts that make a p99, long enough for /proc/stat's 10 ms ticks.
const hostSampleEvery = 100 * time.Millisecond

// HostStats is how each CPU spent the run phase.
type HostStats struct {
	Secs float64   `json:"secs"`
	CPUs []CPUTime `json:"cpus"`
}

// CPUTime is one CPU's shares of its time over the run, in percent.
type CPUTime struct {
	CPU        int     `json:"cpu"`
	BusyPct    float64 `json:"busy_pct"` // user, nice, system, irq and softirq
	SoftIRQPct float64 `json:"softirq_pct"`
	StealPct   float64 `json:"steal_pct"`
	// StealMaxPct is the worst steal share in any hostSampleEvery window.
	StealMaxPct float64 `json:"steal_max_pct"`
}

// cpuTicks is one /proc/stat "cpuN" line: user nice system idle iowait irq
// softirq steal (guest time is already inside user).
type cpuTicks [8]uint64

func (t cpuTicks) total() uint64 {
	var s uint64
	for _, v := range t {
		s += v
	}
	return s
}

// parseProcStat reads the per-CPU lines of /proc/stat (not the "cpu"
// total). Lines it cannot read are skipped.
func parseProcStat(b []byte) map[int]cpuTicks {
	out := map[int]cpuTicks{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 9 || !strings.HasPrefix(f[0], "cpu") || f[0] == "cpu" {
			continue
		}
		n, err := strconv.Atoi(f[0][3:])
		if err != nil || n < 0 {
			continue
		}
		var t cpuTicks
		ok := true
		for i := range t {
			if t[i], err = strconv.ParseUint(f[i+1], 10, 64); err != nil {
				ok = false
				break
			}
		}
		if ok {
			out[n] = t
		}
	}
	return out
}

// sub is b-a per field, 0 where a counter went backwards (CPU hotplug).
func (b cpuTicks) sub(a cpuTicks) cpuTicks {
	var d cpuTicks
	for i := range d {
		if b[i] > a[i] {
			d[i] = b[i] - a[i]
		}
	}
	return d
}

func pctOf(part, total uint64) float64 {
	if total == 0 {
		return 0
	}
	return 100 * float64(part) / float64(total)
}

// hostSampler samples /proc/stat every hostSampleEvery between start and
// stop. It keeps only the first sample, the previous one and each CPU's
// worst window, so a long run costs no memory.
type hostSampler struct {
	read func() ([]byte, error)

	mu       sync.Mutex
	started  time.Time
	first    map[int]cpuTicks
	prev     map[int]cpuTicks
	maxSteal map[int]float64

	quit, done chan struct{}
}

func readProcStat() ([]byte, error) { return os.ReadFile("/proc/stat") }

// startHostSampler takes the first sample now; nil where /proc/stat is not
// readable (not Linux).
func startHostSampler(read func() ([]byte, error)) *hostSampler {
	b, err := read()
	if err != nil {
		return nil
	}
	s := &hostSampler{read: read, started: time.Now(), first: parseProcStat(b), maxSteal: map[int]float64{},
		quit: make(chan struct{}), done: make(chan struct{})}
	if len(s.first) == 0 {
		return nil
	}
	s.prev = s.first
	go func() {
		defer close(s.done)
		t := time.NewTicker(hostSampleEvery)
		defer t.Stop()
		for {
			select {
			case <-s.quit:
				return
			case <-t.C:
				s.sample()
			}
		}
	}()
	return s
}

// sample folds one more /proc/stat reading into the worst windows.
func (s *hostSampler) sample() {
	b, err := s.read()
	if err != nil {
		return
	}
	s.add(parseProcStat(b))
}

func (s *hostSampler) add(now map[int]cpuTicks) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for cpu, t := range now {
		p, ok := s.prev[cpu]
		if !ok {
			continue
		}
		d := t.sub(p)
		if tot := d.total(); tot > 0 {
			s.maxSteal[cpu] = max(s.maxSteal[cpu], pctOf(d[7], tot))
		}
	}
	s.prev = now
}

// stop takes the last sample and returns the run's figures (nil for a nil
// sampler).
func (s *hostSampler) stop() *HostStats {
	if s == nil {
		return nil
	}
	close(s.quit)
	<-s.done
	s.sample()
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stats(time.Since(s.started).Seconds())
}

func (s *hostSampler) stats(secs float64) *HostStats {
	h := &HostStats{Secs: secs}
	for _, cpu := range slices.Sorted(maps.Keys(s.first)) {
		a := s.first[cpu]
		b, ok := s.prev[cpu]
		if !ok {
			continue
		}
		d := b.sub(a)
		tot := d.total()
		h.CPUs = append(h.CPUs, CPUTime{
			CPU:         cpu,
			BusyPct:     pctOf(d[0]+d[1]+d[2]+d[5]+d[6], tot),
			SoftIRQPct:  pctOf(d[6], tot),
			StealPct:    pctOf(d[7], tot),
			StealMaxPct: max(s.maxSteal[cpu], pctOf(d[7], tot)),
		})
	}
	return h
}

// text is the report's table line.
func (h *HostStats) text() string {
	var b strings.Builder
	fmt.Fprintf(&b, "host CPUs over the run (%.1f s, from /proc/stat):", h.Secs)
	for i, c := range h.CPUs {
		if i > 0 {
			b.WriteString(";")
		}
		fmt.Fprintf(&b, " cpu%d busy %.1f%% (softirq %.1f%%), steal %.1f%% (worst %d ms: %.0f%%)",
			c.CPU, c.BusyPct, c.SoftIRQPct, c.StealPct, hostSampleEvery.Milliseconds(), c.StealMaxPct)
	}
	return b.String() + "\n"
}
