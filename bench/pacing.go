package bench

import (
	"sync/atomic"
	"time"
)

// epoch anchors mono: every time the engine stores is nanoseconds on the
// monotonic clock since process start, so a wall-clock step cannot bend a
// latency.
var epoch = time.Now()

func mono() int64 { return int64(time.Since(epoch)) }

// monoAt converts a wall-clock instant (shared with worker processes) to mono.
func monoAt(t time.Time) int64 { return mono() + int64(time.Until(t)) }

// intendedOffset is when global call number k is due, relative to the start
// of the call phase, at rate calls per second over all connections. Call k
// goes to connection k mod conns (call j of connection i is k = i + j*conns),
// so every connection sends at rate/conns and the connections are evenly
// staggered. Latency is measured from this instant, not from the actual
// send, so a stalled server cannot slow the generator down and hide its own
// stall (coordinated omission).
func intendedOffset(k int64, rate float64) int64 {
	return int64(float64(k) * 1e9 / rate)
}

// schedule yields, for connections sorted by global index idx, the calls
// (position in idx, intended mono time) in time order, until end. It is the
// pacer's loop without the sleeping and sending, so it can be tested alone.
func schedule(idx []int, conns int, rate float64, start, end int64, yield func(pos int, at int64) bool) {
	if len(idx) == 0 || rate <= 0 {
		return
	}
	for j := int64(0); ; j++ {
		for pos, i := range idx {
			at := start + intendedOffset(int64(i)+j*int64(conns), rate)
			if at >= end {
				return
			}
			if !yield(pos, at) {
				return
			}
		}
	}
}

// pace runs one pacer: it sleeps until each call is due and sends it. When
// it is behind it sends at once without sleeping, so the offered rate holds
// and the lateness shows up as latency (and in the send_lag histogram).
func pace(idx []int, conns int, rate float64, start, end int64, stop *atomic.Bool, send func(pos int, at int64)) {
	lockPacerThread()
	schedule(idx, conns, rate, start, end, func(pos int, at int64) bool {
		// Sleep in slices of at most 50 ms so that a stop is seen soon.
		for d := at - mono(); d > 0; d = at - mono() {
			if stop.Load() {
				return false
			}
			preciseSleep(min(time.Duration(d), 50*time.Millisecond))
		}
		if stop.Load() {
			return false
		}
		send(pos, at)
		return true
	})
}
