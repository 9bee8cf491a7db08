// Package ratelimit owns the gateway's admission limits: the per-connection
// message limit, handshakes per client IP, and messages per subject.
//
// Every limiter here answers from memory and never blocks: the reactor calls
// them on its event loops. A distributed limiter (Redis) implements
// SubjectLimiter by leasing quota in the background, so that its Allow stays
// a memory operation too.
//
// The meaning of a limit {N, W} is "at most N in any window W". Window
// approximates it with a sliding-window counter: the previous fixed window's
// count, weighted by how much of it still overlaps the sliding window, plus
// the current window's count. It is exact when traffic is even; when the
// previous window's events bunched at its end it can admit up to N/2 more in
// the worst sliding window. A token bucket, by contrast, lets a full burst
// through and refills (2N in one W). The counter needs 16 bytes per key
// instead of N timestamps, which is what lets every connection carry one.
package ratelimit

import "time"

// Window is the state of one sliding-window counter. The zero value is an
// empty window. It is not safe for concurrent use: the per-connection window
// lives in the connection's record and is touched only by its event loop.
type Window struct {
	start int64  // start of the current fixed window, in ns
	cur   uint32 // admitted in the current fixed window
	prev  uint32 // admitted in the previous fixed window
}

// Allow admits one event at now (unix ns) if fewer than limit events fall in
// the sliding window of length window (ns) ending at now.
func (w *Window) Allow(now int64, limit int, window int64) bool {
	ok, _ := w.AllowN(now, 1, limit, window)
	return ok
}

// AllowN admits n events at once, or none. When it refuses, retry is how long
// until n events would fit (at least 1 ms).
func (w *Window) AllowN(now int64, n, limit int, window int64) (ok bool, retry time.Duration) {
	w.roll(now, window)
	elapsed := now - w.start
	// Weight of the previous window still inside the sliding window.
	est := float64(w.prev)*float64(window-elapsed)/float64(window) + float64(w.cur)
	if est+float64(n) <= float64(limit) {
		w.cur += uint32(n)
		return true, 0
	}
	return false, w.retryAfter(now, n, limit, window)
}

// Count is the estimated number of events in the sliding window ending at now.
func (w *Window) Count(now int64, window int64) float64 {
	w.roll(now, window)
	return float64(w.prev)*float64(window-(now-w.start))/float64(window) + float64(w.cur)
}

func (w *Window) roll(now, window int64) {
	if w.start == 0 {
		w.start = now - now%window
		return
	}
	elapsed := now - w.start
	if elapsed < window {
		return
	}
	if elapsed < 2*window {
		w.prev = w.cur
	} else {
		w.prev = 0
	}
	w.cur = 0
	w.start = now - now%window
}

// retryAfter finds when the estimate drops enough for n more events: the
// previous window's weight decays linearly until the current window ends,
// after which the current count becomes the decaying one.
func (w *Window) retryAfter(now int64, n, limit int, window int64) time.Duration {
	need := float64(w.cur) + float64(n) - float64(limit)
	elapsed := now - w.start
	var wait int64
	if need <= 0 && w.prev > 0 {
		// Within this window: prev*(window-e)/window <= limit-n-cur.
		room := float64(limit - n - int(w.cur))
		e := float64(window) - room*float64(window)/float64(w.prev)
		wait = int64(e) - elapsed
	} else {
		// After the window ends, cur decays like prev did.
		room := float64(limit - n)
		if room < 0 {
			room = 0
		}
		e := float64(window)
		if w.cur > 0 {
			e = float64(window) - room*float64(window)/float64(w.cur)
		}
		wait = window - elapsed + int64(e)
	}
	d := time.Duration(wait)
	if d < time.Millisecond {
		d = time.Millisecond
	}
	return d
}
