package httpup

import (
	"errors"
	"testing"
	"time"

	"github.com/mcpgate/gateway/clock"
)

// A URL marked down is skipped for its retry delay (500 ms after a first
// failure) and no longer, on the monotonic clock: a wall-clock step forward
// or back in between neither ends the delay nor stretches it. (On wall time,
// the step back would keep the URL down for an hour; and the fake's Advance
// would not move it, so the last check would fail too.)
func TestDownDelayIgnoresWallStep(t *testing.T) {
	u := newUp(t, []string{deadURL(t), deadURL(t)}, time.Second, nil)
	f := clock.NewFake(int64(1000 * time.Second))
	defer f.Install()()
	a, b := u.targets[0], u.targets[1]
	u.markDown(a, errors.New("connection refused"))
	for _, step := range []time.Duration{time.Hour, -2 * time.Hour} {
		f.StepWall(step)
		f.Advance(200 * time.Millisecond)
		if !a.isDown(clock.Now()) {
			t.Fatalf("up again %v after a wall step of %v, delay 500 ms", 200*time.Millisecond, step)
		}
		if got := u.pick(0); got != b {
			t.Fatalf("after a wall step of %v pick chose the URL that is down", step)
		}
	}
	f.Advance(101 * time.Millisecond)
	if a.isDown(clock.Now()) {
		t.Fatal("still down 501 ms after a 500 ms delay")
	}
}
