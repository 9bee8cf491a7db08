package main

import (
	"encoding/json"
	"flag"
	"math"
	"os"
	"os/signal"
	"slices"
	"syscall"
	"time"
)

// WatchResult is what sockwatch writes: the life of every socket the server
// opened while it watched (each socket is known by its inode, so a
// descriptor number reused by a later connection is a new socket), and the
// server's RSS along the way.
type WatchResult struct {
	IntervalMS      float64 `json:"interval_ms"`
	Samples         int     `json:"samples"`
	BaselineSockets int     `json:"baseline_sockets"` // open before the run: listeners, pipes
	BaselineRSS     int64   `json:"baseline_rss_bytes"`

	Tracked        int     `json:"tracked"`   // sockets opened during the watch
	PeakOpen       int     `json:"peak_open"` // most tracked sockets open at once
	PeakAtS        float64 `json:"peak_at_s"` // when (seconds since the watch began)
	RSSAtPeak      int64   `json:"rss_at_peak_bytes"`
	RSSMax         int64   `json:"rss_max_bytes"`
	KiBPerConnPeak float64 `json:"kib_per_conn_at_peak"` // (RSS at peak - baseline) / peak open

	FirstOpenS  float64  `json:"first_open_s"`
	LastOpenS   float64  `json:"last_open_s"`
	AllClosedS  *float64 `json:"all_closed_s"` // first sample with none open, after the last open; null: some never closed
	StillOpen   int      `json:"still_open_at_end"`
	ClosedAfter *float64 `json:"closed_after_last_open_s"` // AllClosedS - LastOpenS

	// Lifetimes, accept to close, of the sockets that closed. A socket seen
	// in samples a..b lived at least b-a and at most b-a+2*interval.
	Closed          int     `json:"closed"`
	LifetimeMinS    float64 `json:"lifetime_min_s"`
	LifetimeP50S    float64 `json:"lifetime_p50_s"`
	LifetimeP99S    float64 `json:"lifetime_p99_s"`
	LifetimeMaxS    float64 `json:"lifetime_max_s"`     // upper bound
	LifetimeMaxLowS float64 `json:"lifetime_max_low_s"` // lower bound

	Series [][3]float64 `json:"series"` // [seconds, open tracked sockets, RSS MiB]
}

func cmdSockwatch(args []string) error {
	fs := flag.NewFlagSet("sockwatch", flag.ContinueOnError)
	pidsArg := fs.String("pid", "", "server PID(s): sockets of these, RSS of these and their children")
	out := fs.String("out", "", "JSON output file")
	interval := fs.Duration("interval", 100*time.Millisecond, "sampling interval")
	maxDur := fs.Duration("max", 5*time.Minute, "stop after this long in any case")
	quiet := fs.Duration("quiet-stop", 0, "stop once no socket has opened for this long (0: only on a signal or -max)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	pids, err := parsePIDs(*pidsArg)
	if err != nil {
		return err
	}
	if *interval < 10*time.Millisecond || *maxDur <= 0 || *maxDur > time.Hour {
		return errFlag("-interval must be >= 10ms and -max in (0, 1h]")
	}
	all := withDescendants(pids)

	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	deadline := time.After(*maxDur)
	tk := time.NewTicker(*interval)
	defer tk.Stop()

	start := time.Now()
	type life struct{ first, last int } // sample indexes
	lives := map[uint64]*life{}
	baseline := map[uint64]bool{}
	var times []float64
	r := &WatchResult{IntervalMS: float64(*interval) / 1e6}
	cur := map[uint64]bool{}
	lastNew, zeroSince := time.Time{}, time.Time{}
loop:
	for i := 0; ; i++ {
		t := time.Since(start).Seconds()
		clear(cur)
		for _, p := range pids {
			_ = socketInodes(p, cur)
		}
		rss := rssBytes(all)
		times = append(times, t)
		open := 0
		if i == 0 {
			for ino := range cur {
				baseline[ino] = true
			}
			r.BaselineSockets = len(baseline)
			r.BaselineRSS = rss
		} else {
			for ino := range cur {
				if baseline[ino] {
					continue
				}
				open++
				if l := lives[ino]; l != nil {
					l.last = i
				} else {
					lives[ino] = &life{i, i}
					lastNew = time.Now()
				}
			}
		}
		r.RSSMax = max(r.RSSMax, rss)
		if open > 0 && open >= r.PeakOpen {
			r.PeakOpen, r.PeakAtS, r.RSSAtPeak = open, t, rss
		}
		r.Series = append(r.Series, [3]float64{round3(t), float64(open), round3(float64(rss) / (1 << 20))})
		if !alive(pids) {
			break
		}
		// Every socket opened has closed, for a second: done. Or none has
		// opened for -quiet-stop: whatever is still open stays open.
		switch {
		case len(lives) == 0 || open > 0:
			zeroSince = time.Time{}
		case zeroSince.IsZero():
			zeroSince = time.Now()
		case time.Since(zeroSince) >= time.Second:
			break loop
		}
		if *quiet > 0 && !lastNew.IsZero() && time.Since(lastNew) >= *quiet {
			break
		}
		select {
		case <-tk.C:
		case <-stop:
			break loop
		case <-deadline:
			break loop
		}
	}
	r.Samples = len(times)
	summarize(r, times, func(yield func(first, last int) bool) {
		for _, l := range lives {
			if !yield(l.first, l.last) {
				return
			}
		}
	})
	b, _ := json.MarshalIndent(r, "", "  ")
	if *out == "" {
		_, err = os.Stdout.Write(append(b, '\n'))
		return err
	}
	return os.WriteFile(*out, append(b, '\n'), 0o644)
}

// summarize fills the socket figures from each tracked socket's first and
// last sample index. times[i] is the time of sample i.
func summarize(r *WatchResult, times []float64, lives func(func(first, last int) bool)) {
	n := len(times)
	if n == 0 {
		return
	}
	at := func(i int) float64 { return times[max(0, min(i, n-1))] }
	var lows, highs []float64
	firstOpen, lastOpen := math.Inf(1), math.Inf(-1)
	lastSeen := -1
	for first, last := range lives {
		r.Tracked++
		firstOpen = min(firstOpen, at(first))
		lastOpen = max(lastOpen, at(first))
		if last == n-1 {
			r.StillOpen++
			continue
		}
		lastSeen = max(lastSeen, last)
		r.Closed++
		lows = append(lows, at(last)-at(first))
		highs = append(highs, at(last+1)-at(first-1))
	}
	if r.Tracked == 0 {
		return
	}
	r.FirstOpenS, r.LastOpenS = round3(firstOpen), round3(lastOpen)
	if r.StillOpen == 0 && lastSeen >= 0 {
		all := round3(at(lastSeen + 1))
		after := round3(all - lastOpen)
		r.AllClosedS, r.ClosedAfter = &all, &after
	}
	if len(lows) > 0 {
		mid := make([]float64, len(lows))
		for i := range lows {
			mid[i] = (lows[i] + highs[i]) / 2
		}
		slices.Sort(mid)
		r.LifetimeMinS = round3(mid[0])
		r.LifetimeP50S = round3(quantile(mid, 0.50))
		r.LifetimeP99S = round3(quantile(mid, 0.99))
		r.LifetimeMaxS = round3(slices.Max(highs))
		r.LifetimeMaxLowS = round3(slices.Max(lows))
	}
	if r.PeakOpen > 0 {
		r.KiBPerConnPeak = round3(float64(r.RSSAtPeak-r.BaselineRSS) / 1024 / float64(r.PeakOpen))
	}
}

// quantile of sorted values (nearest rank).
func quantile(sorted []float64, q float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	i := int(math.Ceil(q*float64(len(sorted)))) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

func round3(v float64) float64 { return math.Round(v*1000) / 1000 }

type errFlag string

func (e errFlag) Error() string { return string(e) }
