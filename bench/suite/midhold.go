package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"syscall"
	"time"
)

// MidholdResult is what midhold writes: each server process's share of the
// connections, halfway through an idle hold.
type MidholdResult struct {
	PIDs        []int   `json:"pids"`
	BaselineFDs []int   `json:"baseline_fds"`
	FDs         []int   `json:"fds"`
	Gained      []int   `json:"gained"` // descriptors gained since the start: connections
	RSS         []int64 `json:"rss_bytes"`
	AtS         float64 `json:"at_s"`
	Signal      string  `json:"signal,omitempty"`
}

// cmdMidhold waits until the servers' descriptor count has grown by at least
// -min and then not grown for -stable (the load generator has finished
// connecting), waits -after, then records each process's descriptors and
// RSS and, with -signal USR2, sends SIGUSR2 to each (the Node servers run a
// full GC on it: bench/peers/bench-preload.cjs).
func cmdMidhold(args []string) error {
	fs := flag.NewFlagSet("midhold", flag.ContinueOnError)
	pidsArg := fs.String("pid", "", "server PID(s)")
	minConns := fs.Int("min", 1, "descriptors the servers must gain before the count is watched for stability")
	stable := fs.Duration("stable", 2*time.Second, "no growth for this long means connecting is over")
	after := fs.Duration("after", 8*time.Second, "then wait this long")
	sig := fs.String("signal", "none", "none or USR2")
	out := fs.String("out", "", "JSON output file (default: none)")
	maxDur := fs.Duration("max", 5*time.Minute, "give up after this long")
	if err := fs.Parse(args); err != nil {
		return err
	}
	pids, err := parsePIDs(*pidsArg)
	if err != nil {
		return err
	}
	if *sig != "none" && *sig != "USR2" {
		return fmt.Errorf("-signal must be none or USR2")
	}
	counts := func() ([]int, int, error) {
		var each []int
		total := 0
		for _, p := range pids {
			n, err := fdNames(p)
			if err != nil {
				return nil, 0, fmt.Errorf("pid %d: %w", p, err)
			}
			each = append(each, len(n))
			total += len(n)
		}
		return each, total, nil
	}
	start := time.Now()
	base, baseTotal, err := counts()
	if err != nil {
		return err
	}
	deadline := start.Add(*maxDur)
	top, since := baseTotal, time.Now()
	for time.Now().Before(deadline) {
		time.Sleep(250 * time.Millisecond)
		_, c, err := counts()
		if err != nil {
			return err
		}
		if c > top {
			top, since = c, time.Now()
			continue
		}
		if top-baseTotal >= *minConns && time.Since(since) >= *stable {
			time.Sleep(*after)
			r := &MidholdResult{PIDs: pids, BaselineFDs: base, AtS: round3(time.Since(start).Seconds())}
			if r.FDs, _, err = counts(); err != nil {
				return err
			}
			for i, p := range pids {
				r.Gained = append(r.Gained, r.FDs[i]-base[i])
				r.RSS = append(r.RSS, rssBytes(withDescendants([]int{p})))
			}
			if *sig == "USR2" {
				r.Signal = "SIGUSR2"
				for _, p := range pids {
					if err := syscall.Kill(p, syscall.SIGUSR2); err != nil {
						return err
					}
				}
			}
			fmt.Fprintf(os.Stderr, "midhold: descriptors gained %v, signal %s\n", r.Gained, *sig)
			if *out == "" {
				return nil
			}
			b, _ := json.MarshalIndent(r, "", "  ")
			return os.WriteFile(*out, append(b, '\n'), 0o644)
		}
	}
	return fmt.Errorf("gave up after %s (descriptors %d, base %d)", *maxDur, top, baseTotal)
}
