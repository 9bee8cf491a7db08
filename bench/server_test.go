package bench

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseStat(t *testing.T) {
	// A command name with spaces and parentheses must not shift the fields.
	line := "4242 (my (odd) gateway) S 1 4242 4242 0 -1 4194560 1234 0 0 0 250 125 0 0 20 0 9 0 1000 2000000 3000 18446744073709551615\n"
	ppid, ticks, err := parseStat([]byte(line))
	if err != nil || ppid != 1 || ticks != 375 {
		t.Fatalf("ppid %d ticks %d err %v", ppid, ticks, err)
	}
	if _, _, err := parseStat([]byte("1 (x) S 1 2")); err == nil {
		t.Fatal("short stat accepted")
	}
}

func TestParseRSS(t *testing.T) {
	st := "Name:\tgateway\nVmPeak:\t  99999 kB\nVmRSS:\t   20480 kB\nThreads:\t9\n"
	n, err := parseRSS(strings.NewReader(st))
	if err != nil || n != 20480*1024 {
		t.Fatalf("rss %d err %v", n, err)
	}
	if _, err := parseRSS(strings.NewReader("Name:\tkthreadd\n")); err == nil {
		t.Fatal("missing VmRSS accepted")
	}
}

func TestParseMetrics(t *testing.T) {
	text := `# HELP process_resident_memory_bytes Resident memory size in bytes.
# TYPE process_resident_memory_bytes gauge
process_resident_memory_bytes 3.842048e+07
process_cpu_seconds_total 12.5
gateway_connections_open 10
`
	s, err := parseMetrics(strings.NewReader(text))
	if err != nil || s.RSSBytes != 38420480 || s.CPUSecs != 12.5 {
		t.Fatalf("%+v %v", s, err)
	}
	if _, err := parseMetrics(strings.NewReader("up 1\n")); err == nil {
		t.Fatal("metrics without RSS accepted")
	}
}

// The /proc sampler counts the server and its descendants, not its parent
// or siblings.
func TestProcSamplerTree(t *testing.T) {
	root := t.TempDir()
	mk := func(pid, ppid string, ticks, rssKB string) {
		d := filepath.Join(root, pid)
		os.MkdirAll(d, 0o755)
		os.WriteFile(filepath.Join(d, "stat"), []byte(pid+" (p) S "+ppid+" 0 0 0 0 0 0 0 0 0 "+ticks+" 0 0 0\n"), 0o644)
		os.WriteFile(filepath.Join(d, "status"), []byte("VmRSS:\t"+rssKB+" kB\n"), 0o644)
	}
	mk("1", "0", "1000", "100")
	mk("10", "1", "200", "1000") // the server
	mk("11", "10", "50", "500")  // its child
	mk("12", "11", "25", "250")  // a grandchild
	mk("13", "1", "999", "9999") // a sibling
	os.MkdirAll(filepath.Join(root, "self"), 0o755)
	p := &procSampler{pids: []int{10}, root: root}
	s, err := p.sample(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if s.Procs != 3 || s.RSSBytes != 1750*1024 || s.CPUSecs != 2.75 {
		t.Fatalf("%+v", s)
	}
	if _, err := (&procSampler{pids: []int{99}, root: root}).sample(context.Background()); err == nil {
		t.Fatal("missing pid accepted")
	}
}

// The /proc sampler tells the given PIDs' own CPU from their descendants',
// and serverStats turns the two into per-call figures that add up to the
// total.
func TestProcSamplerSplit(t *testing.T) {
	root := t.TempDir()
	mk := func(pid, ppid string, ticks string) {
		d := filepath.Join(root, pid)
		os.MkdirAll(d, 0o755)
		os.WriteFile(filepath.Join(d, "stat"), []byte(pid+" (p) S "+ppid+" 0 0 0 0 0 0 0 0 0 "+ticks+" 0 0 0\n"), 0o644)
		os.WriteFile(filepath.Join(d, "status"), []byte("VmRSS:\t100 kB\n"), 0o644)
	}
	mk("1", "0", "1000")
	mk("10", "1", "200") // the server
	mk("11", "10", "50") // two stdio workers
	mk("12", "10", "30")
	p := &procSampler{pids: []int{10}, root: root}
	connected, err := p.sample(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if connected.OwnCPUSecs != 2 || connected.ChildCPUSecs != 0.8 || connected.ChildProcs != 2 || connected.CPUSecs != 2.8 {
		t.Fatalf("connected %+v", connected)
	}
	mk("10", "1", "300")  // +1 s own
	mk("11", "10", "250") // +2 s and +1 s in the workers
	mk("12", "10", "130")
	end, err := p.sample(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	s := serverStats(p.source(), connected, connected, end, &Partial{Established: 10, Completed: 1000}, 4, nil)
	if s.USPerCall != 4000 || s.USPerCallOwn == nil || s.USPerCallChildren == nil ||
		*s.USPerCallOwn != 1000 || *s.USPerCallChildren != 3000 || s.ChildProcs != 2 {
		t.Fatalf("server stats %+v", s)
	}
	var b strings.Builder
	rep := &Report{Mode: ModeCall, Server: s}
	if err := rep.WriteText(&b); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.String(), "4000.00 µs/call (own 1000.00 + 2 child process(es) 3000.00)") {
		t.Fatalf("text lacks the split:\n%s", b.String())
	}
	js, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"cpu_us_per_call":4000`, `"cpu_us_per_call_own":1000`, `"cpu_us_per_call_children":3000`} {
		if !strings.Contains(string(js), want) {
			t.Errorf("JSON lacks %s: %s", want, js)
		}
	}

	// From /metrics there is no split: the fields stay absent.
	m := serverStats("http://x/metrics", serverSample{CPUSecs: 1}, serverSample{CPUSecs: 1}, serverSample{CPUSecs: 2}, &Partial{Completed: 10}, 1, nil)
	if m.USPerCallOwn != nil || m.USPerCallChildren != nil {
		t.Fatalf("split from /metrics: %+v", m)
	}
}
