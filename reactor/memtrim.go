package reactor

import (
	"context"
	"runtime/debug"
	"runtime/metrics"
	"time"
)

// Returning memory after a burst (why): the Go runtime keeps the pages it
// freed, and the garbage of a burst, up to its next GC target, twice the
// live heap by default; the live heap of an idle gateway is its
// connections'. After a reconnect storm that is a second copy of every
// connection's memory held for nothing (measured: 7.0-7.6 KiB of RSS per idle
// wss:// connection for 4.4 KiB of heap). So once the connection count has
// settled after a burst (no more than 1 % of it opened or closed over two
// ticks: a wave of deadline closes is churn too), one collection and a
// scavenge give it back to the OS. While connections keep coming nothing is done, and garbage from steady
// message traffic is left to the runtime's own pacing: the hot path never
// pays for this.
const (
	trimEvery   = 2 * time.Second
	trimMinFree = 16 << 20 // below this, not worth a forced GC
)

// trimMemory runs until ctx ends.
func (s *Server) trimMemory(ctx context.Context) {
	t := time.NewTicker(trimEvery)
	defer t.Stop()
	samples := trimSamples()
	churn := func() int64 { return s.accepted.Load() + s.closed.Load() }
	last := churn()
	trimmed := true // nothing to give back before the first burst
	quiet := 0
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		n := churn()
		if n-last > 16+s.open.Load()/100 {
			last, trimmed, quiet = n, false, 0 // a burst is under way
			continue
		}
		last = n
		if quiet++; trimmed || quiet < 2 {
			continue
		}
		trimmed = true
		metrics.Read(samples)
		if !allUint64(samples) {
			return // a Go without these metrics: Uint64 would panic
		}
		if trimWorthIt(samples[0].Value.Uint64(), samples[1].Value.Uint64(), samples[2].Value.Uint64()) {
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
