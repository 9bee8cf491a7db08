package reactor

import (
	"context"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"time"
)

// Returning memory after a burst (why): the Go runtime keeps the pages it
// freed, and the garbage of a burst, up to its next GC target, twice the
// live heap by default; the live heap of an idle gateway is its
// connections'. After a reconnect storm that is a second copy of every
// connection's memory held for nothing (measured: 7.0-7.6 KiB of RSS per idle
// wss:// connection for 4.4 KiB of heap). And an idle gateway allocates
// nothing, so no collection ever comes to free what a burst left: message
// buffers, requests that were in flight, the buffer pools (a sync.Pool
// survives one collection) - 100 slow readers left 30-60 MiB of heap
// behind them for good (abuse TestSlowReaderRSS).
//
// So once the gateway has settled after a burst - the connection count (no
// more than 1 % of it opened or closed over two ticks: a wave of deadline
// closes is churn too), or the bytes it held for clients (partial
// messages, outbound backlogs) fell by trimMinFree from their peak - it
// collects twice (the second for what the pools kept through the first),
// which shows what is really live; when that leaves at least trimMinFree
// and a quarter of the live heap free, a scavenge gives it back to the OS.
// At most once per trimGap; while connections keep coming nothing is done,
// and garbage from steady message traffic is left to the runtime's own
// pacing: the hot path never pays for this.
const (
	trimEvery   = 2 * time.Second
	trimMinFree = 4 << 20 // below this, not worth a forced GC
	trimGap     = 5 * time.Second
)

// trimMemory runs until ctx ends.
func (s *Server) trimMemory(ctx context.Context) {
	t := time.NewTicker(trimEvery)
	defer t.Stop()
	samples := trimSamples()
	churn := func() int64 { return s.accepted.Load() + s.closed.Load() }
	held := func() int64 { return s.held.Used() + offHeld.Load() }
	last := churn()
	trimmed := true // nothing to give back before the first burst
	quiet := 0
	peak := held()
	var lastTrim time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		h := held()
		peak = max(peak, h)
		dropped := peak-h >= trimMinFree && h < peak/2
		n := churn()
		if n-last > 16+s.open.Load()/100 {
			last, trimmed, quiet = n, false, 0 // a burst is under way
			continue
		}
		last = n
		quiet++
		if !dropped && (trimmed || quiet < 2) || time.Since(lastTrim) < trimGap {
			continue
		}
		trimmed, peak = true, h
		metrics.Read(samples)
		if !allUint64(samples) {
			return // a Go without these metrics: Uint64 would panic
		}
		if samples[0].Value.Uint64()+samples[1].Value.Uint64() < trimMinFree {
			continue // a small heap: nothing worth a collection
		}
		lastTrim = time.Now()
		// What is live now, not at the last collection: twice, since a
		// sync.Pool keeps what it held through one collection (the
		// upstream's message buffers held 20 MiB after the slow readers
		// had gone, and one collection called them live).
		runtime.GC()
		runtime.GC()
		metrics.Read(samples)
		dropFreeChunks()
		if scavengeWorthIt(samples[0].Value.Uint64(), samples[2].Value.Uint64()) {
			debug.FreeOSMemory()
		}
	}
}

// trimWorthIt says whether a collection and a scavenge would give back
// enough: the free pages plus the objects that died since the last GC, at
// least trimMinFree and a quarter of the live heap.
func trimWorthIt(free, objects, live uint64) bool {
	reclaim := free + objects - min(objects, live)
	return reclaim >= trimMinFree && reclaim >= live/4
}

// scavengeWorthIt says whether, right after a collection, the free pages
// are worth a scavenge: a MiB at least (what is left otherwise is within
// what the runtime keeps anyway) and a quarter of the live heap (a large
// heap is not collected once more for little).
func scavengeWorthIt(free, live uint64) bool {
	return free >= 1<<20 && free >= live/4
}

func allUint64(samples []metrics.Sample) bool {
	for _, s := range samples {
		if s.Value.Kind() != metrics.KindUint64 {
			return false
		}
	}
	return true
}

// trimSamples are the runtime/metrics trimMemory reads, in trimWorthIt's
// argument order.
func trimSamples() []metrics.Sample {
	return []metrics.Sample{
		{Name: "/memory/classes/heap/free:bytes"},    // free pages not returned
		{Name: "/memory/classes/heap/objects:bytes"}, // objects, dead ones included
		{Name: "/gc/heap/live:bytes"},                // live as of the last GC
	}
}
