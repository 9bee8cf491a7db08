package cluster

import (
	"context"
	"sync/atomic"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

func TestExcess(t *testing.T) {
	for _, c := range []struct {
		mine   int64
		all    []int64
		margin float64
		want   int
	}{
		{400, []int64{400}, 0.1, 0},       // alone: nothing to even out
		{400, []int64{400, 0}, 0.1, 180},  // fair 200, limit 220
		{0, []int64{400, 0}, 0.1, 0},      // below its share
		{220, []int64{220, 180}, 0.1, 0},  // within the margin
		{230, []int64{230, 170}, 0.1, 10}, // 10 above
		{3, []int64{3, 1}, 0.1, 0},        // ceil(2.2) = 3
		{300, []int64{300, 0, 0}, 0.05, 195},
	} {
		if got := Excess(c.mine, c.all, c.margin); got != c.want {
			t.Errorf("Excess(%d, %v, %g) = %d, want %d", c.mine, c.all, c.margin, got, c.want)
		}
	}
}

type fakeNode struct {
	open, moving atomic.Int64
	draining     atomic.Bool
	asked        atomic.Int64
}

func (f *fakeNode) OpenConns() int64    { return f.open.Load() }
func (f *fakeNode) Reconnecting() int64 { return f.moving.Load() }
func (f *fakeNode) Draining() bool      { return f.draining.Load() }
func (f *fakeNode) Reconnect(n int) int {
	f.asked.Add(int64(n))
	f.moving.Add(int64(n))
	return n
}

// Two nodes through one Redis: the loaded one sheds its excess, at most
// rate a step, and never asks again for connections already moving; a
// node that leaves is no longer counted.
func TestRebalancerStep(t *testing.T) {
	rd := startRedis(t)
	ctx := context.Background()
	a, b := &fakeNode{}, &fakeNode{}
	a.open.Store(400)
	ra := NewRebalancer(rd.client(t), a, RebalanceOptions{Margin: 0.1, Rate: 50}, prometheus.NewRegistry(), nil)
	rb := NewRebalancer(rd.client(t), b, RebalanceOptions{Margin: 0.1, Rate: 50}, nil, nil)
	if got := ra.Step(ctx); got != 0 {
		t.Fatalf("alone: asked %d", got)
	}
	if got := rb.Step(ctx); got != 0 {
		t.Fatalf("the empty node asked %d", got)
	}
	// a: 400 against a fair 200 (limit 220): 180 too many, 50 a step.
	for i, want := range []int{50, 50, 50, 30, 0} {
		if got := ra.Step(ctx); got != want {
			t.Fatalf("step %d: asked %d, want %d (moving %d)", i, got, want, a.moving.Load())
		}
		// The moving ones still count in the cluster's total (they land
		// somewhere), but not again in a's excess.
		_ = rb.Step(ctx)
	}
	// b leaves: a is alone again and asks nothing more.
	a.moving.Store(0)
	rb.leave()
	if got := ra.Step(ctx); got != 0 {
		t.Fatalf("after the other node left: asked %d", got)
	}
}
