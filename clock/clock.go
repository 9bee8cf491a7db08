// Package clock is the gateway's one time base for deadlines and rate
// windows: Now is the nanoseconds elapsed since the process epoch (the
// time.Now taken when this package was initialised), read from the
// monotonic clock.
//
// Why not time.Now().UnixNano(): that is the wall clock, which NTP, an
// operator or a virtual machine's resume may step forward or back at any
// time. A step forward would make every idle deadline pass at once (every
// connection closed as idle) and empty every rate window; a step back would
// stretch auth deadlines and hold rate windows full. time.Since(epoch) is
// computed from the monotonic readings of both times alone (package time:
// "If Times t and u both contain monotonic clock readings, the operations
// t.After(u), t.Before(u), t.Equal(u), t.Compare(u), and t.Sub(u) are carried
// out using the monotonic clock readings alone"), so a wall step changes
// nothing here (TestWallStepChangesNothing).
//
// One epoch for the process, so that values taken on different goroutines
// (event loops, the sweeper, the Redis limiter's refill goroutine) compare
// directly. The values mean nothing outside this process: anything shared
// with other nodes or written down (ticket and token expiry, Redis TTLs,
// log timestamps, revocations published through Redis) stays on the wall
// clock, time.Now.
//
// This package owns the epoch and the test fake (Fake) and nothing else; it
// must not import other gateway packages.
package clock

import (
	"sync/atomic"
	"time"
)

// epoch is the process's time zero; it carries a monotonic reading.
var epoch = time.Now()

// Offset is Now's value at the epoch. Callers keep "never" as 0 (a zero
// lastUse, infoAt, deadline) and test "t - last > window" for staleness, as
// they did with Unix nanoseconds; starting at 0, a process younger than a
// window would take "never" for "a moment ago" (the Redis limiter refused
// every first message of a subject for the first W after start). 2^55 ns
// is about 417 days, longer than any window or deadline, and leaves
// int64 room for 290 years.
const Offset int64 = 1 << 55

// fake, when set, replaces the current reading (tests only, see Fake).
var fake atomic.Pointer[Fake]

// Now is Offset plus the nanoseconds since the process epoch on the
// monotonic clock:
// never negative, never going back, unaffected by wall-clock steps.
func Now() int64 {
	if f := fake.Load(); f != nil {
		return Offset + int64(f.reading().Sub(epoch))
	}
	return Offset + int64(time.Since(epoch))
}

// Since is the time elapsed from t (a value of Now) to now.
func Since(t int64) time.Duration { return time.Duration(Now() - t) }

// At converts t to Now's scale. A t from time.Now (it carries a monotonic
// reading) converts exactly. A t without one, such as time.Unix(0, ns) made
// from a wall-clock reading, is taken as "this long ago by the wall clock":
// only a wall step between t's reading and the call can skew it, so a caller
// that read the wall clock a moment ago still gets a monotonic value. It
// costs a time.Now (a wall and a monotonic read): the per-subject check
// through At takes 80 ns on the development VM, 20 ns with a value of Now
// (ratelimit's BenchmarkSubjectAllowTime and BenchmarkSubjectAllow), so
// callers that can should pass Now's values instead.
func At(t time.Time) int64 {
	var r time.Time // one reading: its monotonic part for the epoch, its wall part for a bare t
	if f := fake.Load(); f != nil {
		r = f.reading()
	} else {
		r = time.Now()
	}
	return Offset + int64(r.Sub(epoch)) - int64(r.Sub(t))
}
