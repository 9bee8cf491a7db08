package clock

import (
	"sync/atomic"
	"time"
	"unsafe"
)

// Fake is a clock for tests: while installed, Now follows it instead of the
// process's clock. It moves only when told: Advance moves time itself (the
// monotonic reading and the wall reading together, as real time does);
// StepWall moves the wall reading alone, which is what NTP or an operator
// setting the date does to time.Now.
//
// Readings are real time.Time values with a monotonic part, and Now goes
// through the same Sub against the epoch as without a fake, so a test that
// steps the wall and sees no effect shows that Now (and whatever derives its
// deadlines from Now) ignores the wall clock; Wall shows the same step is
// visible to anything that reads wall time.
//
// Install is process-wide: a test that installs a Fake must not run in
// parallel with tests that need real time.
type Fake struct {
	base time.Time    // a reading with a monotonic part
	mono atomic.Int64 // ns advanced since base
	wall atomic.Int64 // ns the wall reading was stepped, on top of mono
}

// NewFake returns a fake clock whose Now starts at Offset+start (start is
// ns since the epoch).
func NewFake(start int64) *Fake {
	f := &Fake{base: epoch.Add(time.Duration(start))}
	// The wall step rewrites a time.Time's wall field in place (there is no
	// API for a reading whose wall and monotonic parts disagree). Check the
	// layout is still the one this code knows, or refuse to fake.
	probe := shiftWall(f.base, time.Hour)
	if probe.Sub(f.base) != 0 || probe.UnixNano()-f.base.UnixNano() != int64(time.Hour) {
		panic("clock: cannot simulate a wall-clock step with this Go version's time.Time")
	}
	return f
}

// Install makes Now follow f until the returned function is called.
func (f *Fake) Install() (restore func()) {
	prev := fake.Swap(f)
	return func() { fake.Store(prev) }
}

// Advance moves time forward by d (wall and monotonic readings alike).
func (f *Fake) Advance(d time.Duration) { f.mono.Add(int64(d)) }

// StepWall moves the wall reading by d (negative: back), leaving the
// monotonic reading where it is.
func (f *Fake) StepWall(d time.Duration) { f.wall.Add(int64(d)) }

// Wall is what time.Now would show: the wall reading, steps included.
func (f *Fake) Wall() time.Time { return f.reading() }

func (f *Fake) reading() time.Time {
	return shiftWall(f.base.Add(time.Duration(f.mono.Load())), time.Duration(f.wall.Load()))
}

// timeLayout mirrors time.Time: wall holds, when its top bit (hasMonotonic)
// is set, 33 bits of seconds since 1885 and 30 bits of nanoseconds; ext is
// then the monotonic reading.
type timeLayout struct {
	wall uint64
	ext  int64
	loc  *time.Location
}

const (
	hasMonotonic = 1 << 63
	nsecShift    = 30
	nsecMask     = 1<<nsecShift - 1
)

// shiftWall returns t with its wall reading moved by d and its monotonic
// reading unchanged. t must carry a monotonic reading.
func shiftWall(t time.Time, d time.Duration) time.Time {
	p := (*timeLayout)(unsafe.Pointer(&t))
	if p.wall&hasMonotonic == 0 {
		panic("clock: shiftWall needs a time with a monotonic reading")
	}
	ns := int64(p.wall<<1>>(nsecShift+1))*1e9 + int64(p.wall&nsecMask) + int64(d)
	p.wall = hasMonotonic | uint64(ns/1e9)<<nsecShift | uint64(ns%1e9)
	return t
}
