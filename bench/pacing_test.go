package bench

import (
	"slices"
	"sync/atomic"
	"testing"
	"time"
)

func TestIntendedOffset(t *testing.T) {
	if intendedOffset(0, 1000) != 0 || intendedOffset(1, 1000) != int64(time.Millisecond) ||
		intendedOffset(20_000, 20_000) != int64(time.Second) {
		t.Fatal("offsets")
	}
	// Large runs: the offset must not overflow (an hour at the rate cap).
	k := int64(maxRateHard) * 3600
	if got := intendedOffset(k, maxRateHard); got != int64(time.Hour) {
		t.Fatalf("offset %d", got)
	}
}

func collect(idx []int, conns int, rate float64, start, end int64) (pos []int, at []int64) {
	schedule(idx, conns, rate, start, end, func(p int, a int64) bool {
		pos = append(pos, p)
		at = append(at, a)
		return true
	})
	return
}

func TestScheduleEvenAndComplete(t *testing.T) {
	const conns, rate = 10, 1000.0
	start, end := int64(5e9), int64(5e9+1e9) // one second
	idx := make([]int, conns)
	for i := range idx {
		idx[i] = i
	}
	pos, at := collect(idx, conns, rate, start, end)
	if len(at) != 1000 {
		t.Fatalf("%d calls in 1 s at 1000/s", len(at))
	}
	for k := range at {
		if want := start + int64(k)*int64(time.Millisecond); at[k] != want {
			t.Fatalf("call %d at %d, want %d", k, at[k], want)
		}
		if pos[k] != k%conns {
			t.Fatalf("call %d on conn %d, want %d", k, pos[k], k%conns)
		}
	}
}

// Splitting connections over pacers or worker processes must not change
// the run-wide schedule: the union is the same set of instants.
func TestScheduleSplitKeepsTheWhole(t *testing.T) {
	const conns, rate = 7, 700.0
	start, end := int64(0), int64(2e9)
	all := make([]int, conns)
	for i := range all {
		all[i] = i
	}
	_, whole := collect(all, conns, rate, start, end)
	var parts []int64
	for _, grp := range [][]int{{0, 3, 6}, {1, 4}, {2, 5}} {
		_, at := collect(grp, conns, rate, start, end)
		if !slices.IsSorted(at) {
			t.Fatalf("group %v not in time order", grp)
		}
		parts = append(parts, at...)
	}
	slices.Sort(parts)
	if !slices.Equal(parts, whole) {
		t.Fatalf("split schedule differs: %d vs %d calls", len(parts), len(whole))
	}
	// Each connection sends every conns/rate seconds.
	_, one := collect([]int{4}, conns, rate, start, end)
	for j := 1; j < len(one); j++ {
		if d := one[j] - one[j-1]; d != int64(10*time.Millisecond) {
			t.Fatalf("connection interval %d", d)
		}
	}
}

// pace must never send before the intended time, must keep the rate when it
// is late, and must stop when told.
func TestPaceSendsOnTime(t *testing.T) {
	var stop atomic.Bool
	start := mono() + int64(20*time.Millisecond)
	end := start + int64(200*time.Millisecond)
	var sent []int64
	var early int
	pace([]int{0, 1}, 2, 1000, start, end, &stop, func(pos int, at int64) {
		now := mono()
		if now < at {
			early++
		}
		sent = append(sent, at)
	})
	if early > 0 {
		t.Errorf("%d calls sent before their time", early)
	}
	if len(sent) != 200 {
		t.Errorf("%d calls, want 200", len(sent))
	}

	stop.Store(true)
	n := 0
	pace([]int{0}, 1, 1000, mono(), mono()+int64(time.Second), &stop, func(int, int64) { n++ })
	if n != 0 {
		t.Errorf("stopped pacer sent %d", n)
	}
}

// A schedule is open loop: its instants do not depend on when the sender
// gets around to sending (a stall is not allowed to thin the load).
func TestPaceCatchesUpAfterStall(t *testing.T) {
	var stop atomic.Bool
	start := mono()
	end := start + int64(100*time.Millisecond)
	var lateMax int64
	n := 0
	pace([]int{0}, 1, 500, start, end, &stop, func(_ int, at int64) {
		if n == 0 {
			time.Sleep(50 * time.Millisecond) // the sender stalls
		}
		n++
		lateMax = max(lateMax, mono()-at)
	})
	if n != 50 {
		t.Errorf("%d calls after a stall, want all 50", n)
	}
	if lateMax < int64(40*time.Millisecond) {
		t.Errorf("the stall should show as lateness, max %v", time.Duration(lateMax))
	}
}
