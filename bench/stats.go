package bench

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"sync"

	hdr "github.com/HdrHistogram/hdrhistogram-go"
)

// Latency histograms record microseconds from 1 µs to 100 s with 3
// significant digits (0.1 % resolution at every magnitude).
const (
	histMin    = 1
	histMax    = 100_000_000
	histDigits = 3
)

// Histogram names, in report order.
const (
	hConnect = "connect"    // TCP connect + WebSocket upgrade
	hAuth    = "auth"       // auth message sent -> auth_ok
	hInit    = "initialize" // initialize sent -> its response
	hCall    = "call"       // intended send time -> response
	hLag     = "send_lag"   // intended send time -> actual send (the generator's own delay)
)

var histNames = []string{hConnect, hAuth, hInit, hCall, hLag}

func newHist() *hdr.Histogram { return hdr.New(histMin, histMax, histDigits) }

// Hist is a latency histogram that marshals as the HdrHistogram V2
// compressed base64 encoding, which is how workers ship theirs to the parent
// and how the JSON report keeps them re-analysable.
type Hist struct{ *hdr.Histogram }

// MarshalJSON encodes the histogram (V2 compressed, base64).
func (h Hist) MarshalJSON() ([]byte, error) {
	if h.Histogram == nil {
		return []byte("null"), nil
	}
	b, err := h.Encode(hdr.V2CompressedEncodingCookieBase)
	if err != nil {
		return nil, err
	}
	return json.Marshal(string(b))
}

// UnmarshalJSON decodes what MarshalJSON wrote.
func (h *Hist) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	d, err := hdr.Decode([]byte(s))
	if err != nil {
		return fmt.Errorf("histogram: %v", err)
	}
	h.Histogram = d
	return nil
}

// recorder is a histogram that many goroutines record into: sharded by a
// caller-chosen key so that connections rarely contend for one lock.
type recorder struct {
	shards []recShard
}

type recShard struct {
	mu sync.Mutex
	h  *hdr.Histogram
	_  [40]byte // keep shards on separate cache lines
}

func newRecorder(shards int) *recorder {
	r := &recorder{shards: make([]recShard, max(shards, 1))}
	for i := range r.shards {
		r.shards[i].h = newHist()
	}
	return r
}

// record adds one value in microseconds, clamped into the histogram's range
// so that an outlier is counted rather than dropped.
func (r *recorder) record(key int, us int64) {
	us = min(max(us, histMin), histMax)
	s := &r.shards[key%len(r.shards)]
	s.mu.Lock()
	s.h.RecordValue(us)
	s.mu.Unlock()
}

// merged returns one histogram holding every shard's values.
func (r *recorder) merged() *hdr.Histogram {
	out := newHist()
	for i := range r.shards {
		s := &r.shards[i]
		s.mu.Lock()
		out.Merge(s.h)
		s.mu.Unlock()
	}
	return out
}

// errorCounts counts errors by kind ("close:1008", "timeout", ...). Errors
// are rare, so one lock is enough.
type errorCounts struct {
	mu sync.Mutex
	m  map[string]int64
}

func (e *errorCounts) add(kind string, n int64) {
	if n == 0 {
		return
	}
	e.mu.Lock()
	if e.m == nil {
		e.m = make(map[string]int64)
	}
	e.m[kind] += n
	e.mu.Unlock()
}

func (e *errorCounts) snapshot() map[string]int64 {
	e.mu.Lock()
	defer e.mu.Unlock()
	return maps.Clone(e.m)
}

func (e *errorCounts) total() int64 {
	e.mu.Lock()
	defer e.mu.Unlock()
	var t int64
	for _, v := range e.m {
		t += v
	}
	return t
}

// Partial is what one process measured; the parent merges the partials of
// its workers (or of its own engine) into the report.
type Partial struct {
	Attempted   int64            `json:"attempted"`   // connections tried
	Established int64            `json:"established"` // connected, authenticated and initialized
	Lost        int64            `json:"lost"`        // established, then closed by the server or the network
	Sent        int64            `json:"sent"`        // calls sent
	Completed   int64            `json:"completed"`   // calls answered with a result
	Notices     int64            `json:"notices"`     // server messages that were no answer (notifications, requests)
	ConnectSecs float64          `json:"connect_secs"`
	Errors      map[string]int64 `json:"errors,omitempty"`
	Hists       map[string]Hist  `json:"hists"`
	PerSecond   []int64          `json:"per_second,omitempty"` // calls completed in each second of the call phase
	CPUSecs     float64          `json:"cpu_secs,omitempty"`   // this process's CPU time (user+sys) during the call phase (connect mode: the connect phase)
	Engine      string           `json:"engine,omitempty"`     // call engine: epoll or goroutine
}

// merge adds p's counts into m. Connect-phase time is the longest of the two,
// since workers connect concurrently.
func (m *Partial) merge(p *Partial) {
	m.Attempted += p.Attempted
	m.Established += p.Established
	m.Lost += p.Lost
	m.Sent += p.Sent
	m.Completed += p.Completed
	m.Notices += p.Notices
	m.ConnectSecs = max(m.ConnectSecs, p.ConnectSecs)
	m.CPUSecs += p.CPUSecs
	if m.Engine == "" {
		m.Engine = p.Engine
	}
	for k, v := range p.Errors {
		if m.Errors == nil {
			m.Errors = make(map[string]int64)
		}
		m.Errors[k] += v
	}
	if m.Hists == nil {
		m.Hists = make(map[string]Hist)
	}
	for k, h := range p.Hists {
		if h.Histogram == nil {
			continue
		}
		cur, ok := m.Hists[k]
		if !ok || cur.Histogram == nil {
			cur = Hist{newHist()}
			m.Hists[k] = cur
		}
		cur.Merge(h.Histogram)
	}
	if len(p.PerSecond) > len(m.PerSecond) {
		m.PerSecond = append(m.PerSecond, make([]int64, len(p.PerSecond)-len(m.PerSecond))...)
	}
	for i, v := range p.PerSecond {
		m.PerSecond[i] += v
	}
}

// errorTotal sums every error kind.
func (m *Partial) errorTotal() int64 {
	var t int64
	for _, v := range m.Errors {
		t += v
	}
	return t
}

// sortedKinds lists error kinds by count, largest first.
func sortedKinds(m map[string]int64) []string {
	ks := slices.Collect(maps.Keys(m))
	slices.SortFunc(ks, func(a, b string) int {
		if m[a] != m[b] {
			if m[a] > m[b] {
				return -1
			}
			return 1
		}
		if a < b {
			return -1
		}
		if a > b {
			return 1
		}
		return 0
	})
	return ks
}
