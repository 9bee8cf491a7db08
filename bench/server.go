package bench

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// clockTicks is USER_HZ, the unit of utime and stime in /proc/PID/stat. It
// is 100 on every mainstream Linux build; Go's standard library has no
// sysconf to ask.
const clockTicks = 100

// serverSample is the server's footprint at one instant.
type serverSample struct {
	RSSBytes int64   `json:"rss_bytes"`
	CPUSecs  float64 `json:"cpu_secs"` // the given processes and their descendants
	Procs    int     `json:"procs"`    // processes counted (the servers and their children)
	// The same CPU split in two, from /proc only (split false from /metrics):
	// a relay's cost per call is its own work plus its workers', and the two
	// are only comparable between relays when they are told apart.
	OwnCPUSecs   float64 `json:"own_cpu_secs"`   // the given PIDs themselves
	ChildCPUSecs float64 `json:"child_cpu_secs"` // their descendants
	ChildProcs   int     `json:"child_procs"`
	split        bool
}

// sampler reads a server's RSS and CPU time, from /proc or from /metrics.
type sampler interface {
	sample(ctx context.Context) (serverSample, error)
	source() string
}

// procSampler sums the given PIDs and all their descendants, so that a
// server's stdio workers count too.
type procSampler struct {
	pids []int
	root string // "/proc"; tests point it elsewhere
}

func (p *procSampler) source() string {
	s := make([]string, len(p.pids))
	for i, pid := range p.pids {
		s[i] = strconv.Itoa(pid)
	}
	return "/proc (pid " + strings.Join(s, ",") + " and children)"
}

func (p *procSampler) sample(context.Context) (serverSample, error) {
	type proc struct {
		ppid int
		cpu  int64
		rss  int64
	}
	procs := map[int]proc{}
	ents, err := os.ReadDir(p.root)
	if err != nil {
		return serverSample{}, err
	}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		ppid, cpu, err := readStat(filepath.Join(p.root, e.Name(), "stat"))
		if err != nil {
			continue // exited meanwhile
		}
		procs[pid] = proc{ppid: ppid, cpu: cpu}
	}
	want := map[int]bool{}
	for _, pid := range p.pids {
		if _, ok := procs[pid]; !ok {
			return serverSample{}, fmt.Errorf("server pid %d: no such process", pid)
		}
		want[pid] = true
	}
	// Descendants: repeat until no new process joins (the tree is shallow).
	for grew := true; grew; {
		grew = false
		for pid, pr := range procs {
			if !want[pid] && want[pr.ppid] {
				want[pid] = true
				grew = true
			}
		}
	}
	own := map[int]bool{}
	for _, pid := range p.pids {
		own[pid] = true
	}
	s := serverSample{split: true}
	for pid := range want {
		rss, err := readRSS(filepath.Join(p.root, strconv.Itoa(pid), "status"))
		if err != nil {
			continue
		}
		cpu := float64(procs[pid].cpu) / clockTicks
		s.RSSBytes += rss
		s.CPUSecs += cpu
		s.Procs++
		if own[pid] {
			s.OwnCPUSecs += cpu
		} else {
			s.ChildCPUSecs += cpu
			s.ChildProcs++
		}
	}
	return s, nil
}

// addCPUSplit fills the per-call CPU of the server processes themselves and
// of their descendants, when the sampler could tell them apart. A child that
// exits during the run takes its CPU time with it from /proc (as it does
// from the total), so the split always adds up to the total.
func addCPUSplit(s *ServerStats, connected, end serverSample, completed int64) {
	if !connected.split || !end.split {
		return
	}
	s.ChildProcs = end.ChildProcs
	if completed <= 0 {
		return
	}
	own := (end.OwnCPUSecs - connected.OwnCPUSecs) * 1e6 / float64(completed)
	children := (end.ChildCPUSecs - connected.ChildCPUSecs) * 1e6 / float64(completed)
	s.USPerCallOwn, s.USPerCallChildren = &own, &children
}

// readStat returns ppid and utime+stime (ticks) from /proc/PID/stat.
func readStat(path string) (ppid int, ticks int64, err error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, 0, err
	}
	return parseStat(b)
}

// parseStat parses /proc/PID/stat. The command name (field 2) may contain
// spaces and parentheses, so fields are counted after its last ')'.
func parseStat(b []byte) (ppid int, ticks int64, err error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, 0, fmt.Errorf("stat: no command field")
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state): ppid is field 4, utime 14, stime 15.
	if len(f) < 13 {
		return 0, 0, fmt.Errorf("stat: %d fields", len(f)+2)
	}
	ppid, err = strconv.Atoi(f[1])
	if err != nil {
		return 0, 0, err
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, 0, fmt.Errorf("stat: bad utime/stime")
	}
	return ppid, ut + st, nil
}

// readRSS returns VmRSS from /proc/PID/status in bytes.
func readRSS(path string) (int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	return parseRSS(f)
}

func parseRSS(r io.Reader) (int64, error) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := sc.Text()
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(rest)
			if len(f) >= 1 {
				kb, err := strconv.ParseInt(f[0], 10, 64)
				return kb * 1024, err
			}
		}
	}
	return 0, fmt.Errorf("status: no VmRSS (kernel thread or zombie?)")
}

// metricsSampler reads process_resident_memory_bytes and
// process_cpu_seconds_total from a Prometheus text endpoint.
type metricsSampler struct {
	url    string
	client *http.Client
}

func (m *metricsSampler) source() string { return m.url }

func (m *metricsSampler) sample(ctx context.Context) (serverSample, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, m.url, nil)
	if err != nil {
		return serverSample{}, err
	}
	resp, err := m.client.Do(req)
	if err != nil {
		return serverSample{}, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return serverSample{}, fmt.Errorf("%s: HTTP %d", m.url, resp.StatusCode)
	}
	return parseMetrics(io.LimitReader(resp.Body, 16<<20))
}

// parseMetrics takes the two standard process metrics from Prometheus text.
func parseMetrics(r io.Reader) (serverSample, error) {
	var s serverSample
	seenRSS := false
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 2 {
			continue
		}
		v, err := strconv.ParseFloat(f[1], 64)
		if err != nil {
			continue
		}
		switch f[0] {
		case "process_resident_memory_bytes":
			s.RSSBytes, seenRSS = int64(v), true
		case "process_cpu_seconds_total":
			s.CPUSecs = v
		}
	}
	if err := sc.Err(); err != nil {
		return s, err
	}
	if !seenRSS {
		return s, fmt.Errorf("no process_resident_memory_bytes in the metrics")
	}
	s.Procs = 1
	return s, nil
}

// newSampler returns the sampler the options ask for, or nil.
func newSampler(o *Options) sampler {
	switch {
	case len(o.ServerPIDs) > 0:
		return &procSampler{pids: o.ServerPIDs, root: "/proc"}
	case o.MetricsURL != "":
		return &metricsSampler{url: o.MetricsURL, client: &http.Client{Timeout: 5 * time.Second}}
	}
	return nil
}
