//go:build faultinject

package fault

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
)

// Enabled reports whether this build can inject faults (-tags faultinject).
const Enabled = true

// Env is the environment variable that names the points to panic at.
const Env = "GATEWAY_FAULT"

// plan is the parsed GATEWAY_FAULT: for each point, its hit counter and
// which hits panic.
type plan map[string]*rule

type rule struct {
	hits atomic.Int64
	all  bool    // every hit panics
	nth  []int64 // these hits panic
}

var current atomic.Pointer[plan]

func init() {
	if err := Set(os.Getenv(Env)); err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v (no faults injected)\n", Env, err)
	}
}

// Set replaces the injection plan with spec (GATEWAY_FAULT's syntax; ""
// injects nothing) and resets the hit counts. For tests.
func Set(spec string) error {
	p := plan{}
	for _, item := range strings.Split(spec, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		point, n, hasN := strings.Cut(item, ":")
		if point == "" {
			return fmt.Errorf("rule %q names no point", item)
		}
		r := p[point]
		if r == nil {
			r = &rule{}
			p[point] = r
		}
		if !hasN {
			r.all = true
			continue
		}
		nth, err := strconv.ParseInt(n, 10, 64)
		if err != nil || nth < 1 {
			return fmt.Errorf("rule %q: the hit must be a number from 1", item)
		}
		r.nth = append(r.nth, nth)
	}
	current.Store(&p)
	return nil
}

// Hit panics with an Injected value when GATEWAY_FAULT names point for
// this hit; otherwise it does nothing.
func Hit(point string) {
	p := current.Load()
	if p == nil || len(*p) == 0 {
		return
	}
	r := (*p)[point]
	if r == nil {
		return
	}
	n := r.hits.Add(1)
	if r.all {
		panic(Injected{Point: point, N: n})
	}
	for _, nth := range r.nth {
		if n == nth {
			panic(Injected{Point: point, N: n})
		}
	}
}
