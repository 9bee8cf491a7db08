package clock

import (
	"testing"
	"time"
)

func TestNowIsMonotonicAndFromTheEpoch(t *testing.T) {
	a := Now()
	if a < Offset {
		t.Fatalf("Now = %d before the epoch", a)
	}
	time.Sleep(2 * time.Millisecond)
	b := Now()
	if d := b - a; d < int64(2*time.Millisecond) || d > int64(time.Second) {
		t.Fatalf("2 ms sleep measured as %v", time.Duration(d))
	}
	if s := Since(a); s < 2*time.Millisecond {
		t.Fatalf("Since = %v", s)
	}
}

// A wall-clock step forward and one back change nothing in Now, while the
// same step is visible on the wall reading (so the fake does step the wall:
// a Now computed from wall readings, like time.Now().UnixNano(), would have
// jumped by an hour here).
func TestWallStepChangesNothing(t *testing.T) {
	f := NewFake(int64(1000 * time.Second))
	defer f.Install()()
	for _, step := range []time.Duration{time.Hour, -2 * time.Hour, 90 * time.Second} {
		now, wall := Now(), f.Wall()
		f.StepWall(step)
		if got := Now(); got != now {
			t.Fatalf("wall step %v moved Now from %d to %d", step, now, got)
		}
		if d := f.Wall().Sub(wall); d != 0 {
			t.Fatalf("wall step %v: monotonic difference %v", step, d)
		}
		if d := f.Wall().UnixNano() - wall.UnixNano(); d != int64(step) {
			t.Fatalf("wall step %v: wall reading moved %v", step, time.Duration(d))
		}
		f.Advance(time.Second)
		if got := Now(); got != now+int64(time.Second) {
			t.Fatalf("after a step of %v and 1 s, Now moved %v", step, time.Duration(got-now))
		}
	}
}

func TestFakeInstallAndRestore(t *testing.T) {
	f := NewFake(42)
	restore := f.Install()
	if Now() != Offset+42 {
		t.Fatalf("fake Now = %d, want Offset+42", Now())
	}
	restore()
	if n := Now(); n == Offset+42 || n < Offset {
		t.Fatalf("after restore Now = %d", n)
	}
}

func BenchmarkNow(b *testing.B) {
	for b.Loop() {
		Now()
	}
}

// At gives a reading from time.Now and the same instant as a bare wall
// value (time.Unix, as the reactor passes today) the same value on Now's
// scale, and a wall step between two such calls does not leak through.
func TestAt(t *testing.T) {
	f := NewFake(int64(500 * time.Second))
	defer f.Install()()
	wall := f.Wall()
	if got := At(wall); got != Now() {
		t.Fatalf("At(reading) = %d, Now = %d", got, Now())
	}
	bare := time.Unix(0, wall.UnixNano()) // no monotonic reading
	if got := At(bare); got != Now() {
		t.Fatalf("At(wall value) = %d, Now = %d", got, Now())
	}
	f.Advance(3 * time.Second)
	f.StepWall(-time.Hour)
	bare = time.Unix(0, f.Wall().UnixNano())
	if got, want := At(bare), Offset+int64(503*time.Second); got != want {
		t.Fatalf("after a step back: At(wall value) = %d, want %d", got, want)
	}
	old := time.Unix(0, f.Wall().Add(-2*time.Second).UnixNano()) // 2 s ago by the wall
	if got, want := At(old), Offset+int64(501*time.Second); got != want {
		t.Fatalf("At(2 s ago) = %d, want %d", got, want)
	}
}
