// Package ratelimit owns the gateway's local admission limits and their
// meaning: the per-connection message and frame limits, handshakes per
// client address, and messages per subject on one node (also the Redis
// limiter's fallback). It owns no clock and no I/O: callers pass now, in
// nanoseconds of package clock's monotonic scale (the reactor's own
// per-connection windows still pass its wall readings; any one consistent
// scale works for a Window). It must not import the reactor, session or
// cluster packages; cluster builds its Redis limiter on SubjectLimiter and
// keeps a Window per subject of what it admitted (Add, Count, Buckets), its
// fallback while Redis is down and what it writes back when Redis returns.
//
// Every limiter here answers from memory and never blocks: the reactor calls
// them on its event loops.
//
// # The bound
//
// A limit {N, W} means at most N admitted in any window of length W. Window
// keeps it exactly, for every arrival pattern: no interval of length W
// (closed at both ends) contains more than N admissions (on the caller's
// clock; a client measures its own windows shifted by network jitter). And a
// client sending steadily at up to 0.9 N/W, each message up to W/50 early or
// late against its schedule, is never refused. TestWindowNeverExceedsN and
// TestWindowSteadyRateNeverRefused check both against a brute-force
// reference over random arrival patterns.
//
// How: a Window counts admissions in Slots = 16 buckets of b = W/15 (rounded
// up) each, aligned on multiples of b. At time t in bucket c it admits n if
// the buckets c-15..c, plus n, stay within N. Those buckets cover every
// admission of the last W (since 15 b >= W), so the bound holds: for any
// window of length W, its last admission was checked against every earlier
// one in it. What they cover beyond W is at most one bucket, b = W/15: a
// steady rate r is admitted while r (W + W/15 + 2J) < N for jitter J, which
// holds for r <= 0.9 N/W and J <= W/50 (0.9 x (16/15 + 2/50) = 0.996). A
// refused client is told when the oldest buckets will have left enough room
// (retry), exactly.
//
// # Memory
//
// A Window is 44 bytes: the newest bucket's index (8 bytes), 16 counts of
// 16 bits, and 2 bytes for the unit below. The previous, approximate counter
// was 16 bytes and admitted up to 2N in a window (100 at W-1 ms and 99 more
// at 2W-2 ms with N = 100: its weighted two-window estimate assumed even
// traffic). The exact bound costs 28 bytes more per Window: the session
// record (which holds the per-connection message window) grows from 136 to
// 160 bytes, and the reactor's connection (which holds the frame window) by
// 28 bytes, about 52 bytes per connection in all. Limits over 65,535 per window count in units of
// ceil(N/65,535) messages, rounding each bucket's count up to whole units:
// the bound still holds, and what is lost is at most 17 units, under 0.03 %
// of N. Limits over 65,535^2 (about 4.3 billion) per window are treated as
// that.
package ratelimit

import "time"

// Limit is "at most N in any Window".
type Limit struct {
	N      int
	Window time.Duration
}

// Enabled reports whether the limit applies (N > 0 and Window > 0).
func (l Limit) Enabled() bool { return l.N > 0 && l.Window > 0 }

const (
	// Slots is how many buckets a Window keeps; each covers W/(Slots-1).
	Slots = 16
	// subWindows is how many buckets make up W.
	subWindows = Slots - 1
	// maxCount is the most a bucket counts, in units.
	maxCount = 1<<16 - 1
	// maxLimit is the largest limit a Window tells apart from "unlimited".
	maxLimit = maxCount * maxCount
)

// Window is the state of one sliding-window limiter (see the package doc
// for its bound). The zero value is an empty window. It is not safe for
// concurrent use: the per-connection windows live in the connection's
// record and are touched only by its event loop; Keyed locks its own.
//
// Every call on one Window must pass the same limit and window, and a now
// that does not go back by more than the callers' skew (a now older than the
// newest bucket is counted in the newest bucket, which only errs on the
// side of refusing).
type Window struct {
	// The newest bucket's index (now / bucket length), in two halves so
	// that a Window is 4-byte aligned and packs into 44 bytes.
	headLo, headHi uint32
	count          [Slots]uint16 // admitted per bucket, in units; count[head%Slots] is the newest
	rem            uint16        // messages still free in the newest bucket's last unit (units > 1)
}

func (w *Window) head() int64 { return int64(uint64(w.headHi)<<32 | uint64(w.headLo)) }

func (w *Window) setHead(c int64) { w.headLo, w.headHi = uint32(c), uint32(uint64(c)>>32) }

// Allow admits one event at now (ns) if at most limit-1 were admitted in
// the window of length window (ns) ending at now.
func (w *Window) Allow(now int64, limit int, window int64) bool {
	ok, _ := w.AllowN(now, 1, limit, window)
	return ok
}

// AllowN admits n events at once, or none. When it refuses, retry is how
// long until n events would fit if nothing else is admitted meanwhile (at
// least 1 ms; a full window when n alone is over the limit). A limit or
// window <= 0 admits everything, as does n <= 0.
func (w *Window) AllowN(now int64, n, limit int, window int64) (ok bool, retry time.Duration) {
	if n <= 0 || limit <= 0 || window <= 0 {
		return true, 0
	}
	limit = min(limit, maxLimit)
	b, u := bucketLen(window), unitOf(limit)
	w.roll(now / b)
	if n <= int(w.rem) {
		w.rem -= uint16(n) // inside a unit already counted
		return true, 0
	}
	need := (n - int(w.rem) + u - 1) / u // units to add
	if (w.sum()+need)*u <= limit {
		w.count[w.head()%Slots] += uint16(need)
		w.rem = uint16(int(w.rem) + need*u - n)
		return true, 0
	}
	return false, w.retryAfter(now, b, n, u, limit, window)
}

// Idle reports whether the window holds nothing that still counts at now:
// forgetting it changes no decision.
func (w *Window) Idle(now int64, window int64) bool {
	if window <= 0 {
		return true
	}
	return now/bucketLen(window)-w.head() >= Slots || w.sum() == 0
}

// bucketLen is W/15 rounded up, so that 15 buckets cover at least W.
func bucketLen(window int64) int64 {
	return max(1, (window+subWindows-1)/subWindows)
}

// unitOf is how many messages one count stands for: 1 up to 65,535.
func unitOf(limit int) int {
	return max(1, (limit+maxCount-1)/maxCount)
}

// roll makes bucket c the newest, clearing the buckets that left the span.
// A c older than the newest is counted as the newest.
func (w *Window) roll(c int64) {
	head := w.head()
	d := c - head
	if d <= 0 {
		return
	}
	if d >= Slots {
		w.count = [Slots]uint16{}
	} else {
		for i := head + 1; i <= c; i++ {
			w.count[i%Slots] = 0
		}
	}
	w.setHead(c)
	w.rem = 0
}

func (w *Window) sum() int {
	s := 0
	for _, v := range w.count {
		s += int(v)
	}
	return s
}

// retryAfter is when the oldest buckets will have left room for n: at the
// start of bucket head+j, the j oldest have left the span.
func (w *Window) retryAfter(now, b int64, n, u, limit int, window int64) time.Duration {
	need := (n + u - 1) / u // a new bucket starts with no spare unit
	if need*u > limit {
		return time.Duration(window) // never fits: n alone is over the limit
	}
	sum, head := w.sum(), w.head()
	for j := int64(1); j <= Slots; j++ {
		sum -= int(w.count[(head+j)%Slots])
		if (sum+need)*u <= limit {
			return max(time.Duration((head+j)*b-now), time.Millisecond)
		}
	}
	return time.Duration(window) // unreachable: an empty span fits need
}

// Add records n events at now whatever the window already holds: events
// admitted by some other rule (the cluster limiter records what it admits
// on leases here, to fall back on and to write back). A bucket saturates
// at its maximum count rather than wrap.
func (w *Window) Add(now int64, n, limit int, window int64) {
	if n <= 0 || limit <= 0 || window <= 0 {
		return
	}
	limit = min(limit, maxLimit)
	b, u := bucketLen(window), unitOf(limit)
	w.roll(now / b)
	if n <= int(w.rem) {
		w.rem -= uint16(n)
		return
	}
	need := (n - int(w.rem) + u - 1) / u
	i := w.head() % Slots
	if int(w.count[i])+need > maxCount {
		w.count[i] = maxCount
		w.rem = 0
		return
	}
	w.count[i] += uint16(need)
	w.rem = uint16(int(w.rem) + need*u - n)
}

// Count is how many events the window holds at now: every event of the
// last W, and up to one bucket (W/15) more (see the package doc), in
// whole units less the spare part of the newest one.
func (w *Window) Count(now int64, limit int, window int64) int {
	if limit <= 0 || window <= 0 {
		return 0
	}
	limit = min(limit, maxLimit)
	b, u := bucketLen(window), unitOf(limit)
	w.roll(now / b)
	return max(0, w.sum()*u-int(w.rem))
}

// Buckets calls f for every non-empty bucket the window holds at now,
// oldest first, with the end of the bucket's span (every event in it
// happened before end, and at or before now) and its count in messages
// (whole units; the newest less its spare part).
func (w *Window) Buckets(now int64, limit int, window int64, f func(end int64, n int)) {
	if limit <= 0 || window <= 0 {
		return
	}
	limit = min(limit, maxLimit)
	b, u := bucketLen(window), unitOf(limit)
	w.roll(now / b)
	head := w.head()
	for c := head - subWindows; c <= head; c++ {
		if c < 0 {
			continue
		}
		n := int(w.count[c%Slots]) * u
		if c == head {
			n -= int(w.rem)
		}
		if n > 0 {
			f((c+1)*b, n)
		}
	}
}
