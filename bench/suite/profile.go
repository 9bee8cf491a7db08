package main

import (
	"encoding/json"
	"fmt"
	"sort"
	"strings"
)

// ProfileSummary is a V8 .cpuprofile (node --cpu-prof) reduced to the
// functions with the most self time: where the stdio worker's CPU per call
// goes, small enough to keep with the raw results.
type ProfileSummary struct {
	File    string  `json:"file,omitempty"`
	Samples int     `json:"samples"` // samples in the window
	CPUMS   float64 `json:"cpu_ms"`  // sampled non-idle time in the window
	IdleMS  float64 `json:"idle_ms"` // sampled idle time in the window
	// The window: the samples after the longest idle stretch, i.e. after the
	// pause stdiofloor leaves between initialize and the first call, so that
	// module loading and compiling at startup are left out. SkippedMS is the
	// time before it; 0 when no idle stretch of 100 ms or more was found and
	// the whole profile is summarised.
	SkippedMS float64       `json:"skipped_ms"`
	Top       []ProfileFunc `json:"top"`
}

// ProfileFunc is one function's self time, over all its call paths.
type ProfileFunc struct {
	Function string  `json:"function"`
	Where    string  `json:"where"` // file:line (1-based), shortened below node_modules/
	SelfMS   float64 `json:"self_ms"`
	Percent  float64 `json:"percent"` // of CPUMS
}

// cpuProfile is the part of the .cpuprofile format read here.
type cpuProfile struct {
	Nodes []struct {
		ID        int `json:"id"`
		CallFrame struct {
			FunctionName string `json:"functionName"`
			URL          string `json:"url"`
			LineNumber   int    `json:"lineNumber"` // 0-based, -1 for native
		} `json:"callFrame"`
		HitCount int `json:"hitCount"`
	} `json:"nodes"`
	StartTime  int64   `json:"startTime"` // µs
	EndTime    int64   `json:"endTime"`
	Samples    []int   `json:"samples"`    // node id of each sample
	TimeDeltas []int64 `json:"timeDeltas"` // µs since the previous sample
}

const minIdleCutUS = 100_000

// summarizeProfile returns the top functions by self time. A sample's time
// is the gap to the next sample (as Chrome DevTools counts it); without
// samples (an old format) each node's hitCount is weighted evenly.
func summarizeProfile(b []byte, top int) (*ProfileSummary, error) {
	var p cpuProfile
	if err := json.Unmarshal(b, &p); err != nil {
		return nil, err
	}
	if len(p.Nodes) == 0 {
		return nil, fmt.Errorf("no nodes")
	}
	type key struct {
		fn, where string
	}
	keyOf := map[int]key{}
	for _, n := range p.Nodes {
		cf := n.CallFrame
		fn := cf.FunctionName
		if fn == "" {
			fn = "(anonymous)"
		}
		where := shortURL(cf.URL)
		if where != "" && cf.LineNumber >= 0 {
			where += fmt.Sprintf(":%d", cf.LineNumber+1)
		}
		keyOf[n.ID] = key{fn, where}
	}
	// ids and durations (µs) of the samples, in order.
	var ids []int
	var dur []float64
	if len(p.Samples) > 0 && len(p.TimeDeltas) == len(p.Samples) {
		ids = p.Samples
		dur = make([]float64, len(ids))
		for i := range ids {
			if i+1 < len(p.TimeDeltas) {
				dur[i] = float64(max(p.TimeDeltas[i+1], 0))
			} else if p.EndTime > 0 {
				// The last sample runs to the end of the profile.
				t := p.StartTime
				for _, d := range p.TimeDeltas {
					t += d
				}
				dur[i] = float64(max(p.EndTime-t, 0))
			}
		}
	} else {
		hits := 0
		for _, n := range p.Nodes {
			hits += n.HitCount
		}
		if hits == 0 {
			return nil, fmt.Errorf("no samples")
		}
		each := float64(p.EndTime-p.StartTime) / float64(hits)
		for _, n := range p.Nodes {
			for range n.HitCount {
				ids = append(ids, n.ID)
				dur = append(dur, each)
			}
		}
	}
	idle := func(i int) bool { return keyOf[ids[i]].fn == "(idle)" }
	// The window starts after the longest idle stretch.
	from, best := 0, 0.0
	for i := 0; i < len(ids); {
		if !idle(i) {
			i++
			continue
		}
		j, t := i, 0.0
		for ; j < len(ids) && idle(j); j++ {
			t += dur[j]
		}
		if t > best {
			best, from = t, j
		}
		i = j
	}
	s := &ProfileSummary{}
	if best < minIdleCutUS {
		from = 0
	}
	self := map[key]float64{}
	for i := range ids {
		if i < from {
			s.SkippedMS += dur[i] / 1000
			continue
		}
		s.Samples++
		if idle(i) {
			s.IdleMS += dur[i] / 1000
			continue
		}
		s.CPUMS += dur[i] / 1000
		self[keyOf[ids[i]]] += dur[i] / 1000
	}
	for k, v := range self {
		s.Top = append(s.Top, ProfileFunc{Function: k.fn, Where: k.where, SelfMS: round3(v)})
	}
	sort.Slice(s.Top, func(i, j int) bool {
		a, b := s.Top[i], s.Top[j]
		if a.SelfMS != b.SelfMS {
			return a.SelfMS > b.SelfMS
		}
		return a.Function+a.Where < b.Function+b.Where
	})
	if len(s.Top) > top {
		s.Top = s.Top[:top]
	}
	for i := range s.Top {
		if s.CPUMS > 0 {
			s.Top[i].Percent = round3(100 * s.Top[i].SelfMS / s.CPUMS)
		}
	}
	s.CPUMS, s.IdleMS, s.SkippedMS = round3(s.CPUMS), round3(s.IdleMS), round3(s.SkippedMS)
	return s, nil
}

// shortURL keeps what identifies a script: the part below the last
// node_modules/ (package and file), node:internal names as they are.
func shortURL(u string) string {
	u = strings.TrimPrefix(u, "file://")
	if i := strings.LastIndex(u, "node_modules/"); i >= 0 {
		return u[i+len("node_modules/"):]
	}
	return u
}
