package ratelimit

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"sort"
	"testing"
	"time"

	"github.com/mcpgate/gateway/clock"
)

// reference is the exact meaning of a limit: every admission time, checked
// over every window of length W that ends at an admission (the busiest
// closed window of length W ends at one).
type reference struct {
	at  []int64 // admission instants, increasing
	cum []int   // cum[i]: events admitted at at[0..i]
}

func (r *reference) add(t int64, n int) {
	total := n
	if k := len(r.cum); k > 0 {
		total += r.cum[k-1]
		if r.at[k-1] == t {
			r.cum[k-1] = total
			return
		}
	}
	r.at = append(r.at, t)
	r.cum = append(r.cum, total)
}

// in is how many admissions fall in [t-w, t].
func (r *reference) in(t, w int64) int {
	lo := sort.Search(len(r.at), func(i int) bool { return r.at[i] >= t-w })
	hi := sort.Search(len(r.at), func(i int) bool { return r.at[i] > t })
	if hi == 0 {
		return 0
	}
	n := r.cum[hi-1]
	if lo > 0 {
		n -= r.cum[lo-1]
	}
	return n
}

// arrivals is a random arrival pattern over about rounds windows: a mix of
// floods, bursts on bucket and window edges (one ns either side), quiet
// spells and steady trickles, in non-decreasing time.
func arrivals(rng *rand.Rand, w int64, rounds int) []int64 {
	b := bucketLen(w)
	var ts []int64
	t := int64(rng.IntN(int(w))) + 1000*w // away from 0, at a random phase
	end := t + int64(rounds)*w
	for t < end {
		switch rng.IntN(6) {
		case 0: // a flood at one instant
			for range rng.IntN(50) + 1 {
				ts = append(ts, t)
			}
		case 1: // bursts just before and just after a window edge
			edge := (t/w + 1) * w
			for _, at := range []int64{edge - 1, edge, edge + 1, edge + w - 2*min(1e6, w/100), edge + w - min(1e6, w/100)} {
				for range rng.IntN(30) + 1 {
					ts = append(ts, at)
				}
			}
			t = edge + w
		case 2: // on bucket edges
			edge := (t/b + 1) * b
			for k := range int64(rng.IntN(20) + 1) {
				at := edge + k*b + int64(rng.IntN(3)) - 1
				if at < t {
					at = t
				}
				ts = append(ts, at)
				t = at
			}
		case 3: // a steady trickle
			step := int64(rng.IntN(int(w/4))) + 1
			for range rng.IntN(100) {
				t += step
				ts = append(ts, t)
			}
		case 4: // quiet
			t += int64(rng.IntN(int(2 * w)))
		default: // random gaps
			for range rng.IntN(40) {
				t += int64(rng.IntN(int(w/8) + 1))
				ts = append(ts, t)
			}
		}
		if n := len(ts); n > 0 && ts[n-1] > t {
			t = ts[n-1]
		}
	}
	for i := 1; i < len(ts); i++ {
		if ts[i] < ts[i-1] {
			panic("arrivals out of order")
		}
	}
	return ts
}

var limits = []struct {
	n int
	w int64
}{
	{1, int64(time.Second)},
	{3, int64(10 * time.Second)},
	{10, int64(2 * time.Second)},
	{50, int64(time.Second)},
	{100, int64(10 * time.Second)},
	{1000, 1234567}, // a window that 15 does not divide
	{70000, int64(time.Second)},
	{300000, int64(7 * time.Second)}, // counts in units of 5
}

// The bound: over random arrival patterns (floods, bursts one ns either
// side of window and bucket edges, trickles), with single events and
// batches (AllowN), no window of length W ever holds more than N, checked
// against the exact reference. Every refusal's retry is exact: the same n
// is admitted at now+retry, and (when retry is above its 1 ms floor) not
// 1 ns earlier.
func TestWindowNeverExceedsN(t *testing.T) {
	for _, l := range limits {
		t.Run(fmt.Sprintf("N=%d,W=%v", l.n, time.Duration(l.w)), func(t *testing.T) {
			admitted, refused, exact := 0, 0, 0
			for seed := range uint64(200) {
				rng := rand.New(rand.NewPCG(seed, uint64(l.n)))
				var w Window
				var ref, log reference // log: an exact sliding log, for comparison
				for _, at := range arrivals(rng, l.w, 12) {
					n := 1
					if rng.IntN(4) == 0 {
						n = rng.IntN(max(2, l.n/4)) + 1
					}
					before := w
					ok, retry := w.AllowN(at, n, l.n, l.w)
					if log.in(at, l.w)+n <= l.n {
						log.add(at, n)
						exact += n
					}
					if !ok {
						refused += n
						if retry < time.Millisecond || retry > time.Duration(2*l.w) {
							t.Fatalf("seed %d: retry %v", seed, retry)
						}
						probe := before
						if ok, _ := probe.AllowN(at+int64(retry), n, l.n, l.w); !ok && n <= l.n {
							t.Fatalf("seed %d: %d refused at %d, and again after retry %v", seed, n, at, retry)
						}
						if retry > time.Millisecond {
							probe = before
							if ok, _ := probe.AllowN(at+int64(retry)-1, n, l.n, l.w); ok {
								t.Fatalf("seed %d: admitted 1 ns before retry %v", seed, retry)
							}
						}
						continue
					}
					admitted += n
					ref.add(at, n)
					if got := ref.in(at, l.w); got > l.n {
						t.Fatalf("seed %d: %d admitted in the window [%d, %d], limit %d", seed, got, at-l.w, at, l.n)
					}
				}
			}
			t.Logf("%d admitted, %d refused; an exact sliding log admits %d (%.1f%% of it)",
				admitted, refused, exact, 100*float64(admitted)/float64(exact))
		})
	}
}

// The case: with N = 100 and W = 10 s, 100 messages at W-1 ms and
// 99 more at 2W-2 ms (9.999 s later) were all admitted by the old weighted
// two-window counter. None of the 99 may be.
func TestWindowBoundaryBurst(t *testing.T) {
	const n = 100
	win := int64(10 * time.Second)
	var w Window
	first, second := 0, 0
	for range n {
		if w.Allow(win-int64(time.Millisecond), n, win) {
			first++
		}
	}
	for range n - 1 {
		if w.Allow(2*win-2*int64(time.Millisecond), n, win) {
			second++
		}
	}
	if first != n || second != 0 {
		t.Fatalf("admitted %d at W-1ms and %d at 2W-2ms, limit %d per %v", first, second, n, time.Duration(win))
	}
	// Once the first burst is a window (and its bucket) behind, a full
	// window's worth is admitted again.
	ok, retry := w.AllowN(2*win-2*int64(time.Millisecond), n, n, win)
	if ok || retry > time.Duration(win/subWindows)+2*time.Millisecond {
		t.Fatalf("ok=%v retry=%v, want a refusal until the first burst's bucket leaves (<= W/15)", ok, retry)
	}
	if ok, _ := w.AllowN(2*win-2*int64(time.Millisecond)+int64(retry), n, n, win); !ok {
		t.Fatal("a full window refused after retry")
	}
}

// A client sending steadily at 0.9 N/W, each message up to W/50 early or
// late against its schedule, is never refused, at any phase against the
// buckets, for small and large N. (At 0.9 N/W the window counts at most
// 0.9 x (W + W/15 + 2 W/50) = 0.996 W worth of messages: see the package
// doc.) A rate the bound forbids is cut: the same test at 1.1 N/W sees
// refusals, so the test can fail.
func TestWindowSteadyRateNeverRefused(t *testing.T) {
	run := func(n int, win int64, rate float64, seed uint64) (refused, sent int) {
		rng := rand.New(rand.NewPCG(seed, uint64(n)))
		period := float64(win) / (rate * float64(n))
		jitter := win / 50
		start := int64(rng.IntN(int(win))) + 100*win
		var w Window
		last := int64(0)
		for i := 0; float64(i)*period < float64(20*win); i++ {
			at := start + int64(float64(i)*period) + rng.Int64N(2*jitter+1) - jitter
			at = max(at, last) // arrivals in order, as a socket delivers them
			last = at
			sent++
			if !w.Allow(at, n, win) {
				refused++
			}
		}
		return refused, sent
	}
	for _, l := range append(limits, struct {
		n int
		w int64
	}{2, int64(time.Second)}) {
		seeds := uint64(max(3, min(50, 2_000_000/(18*l.n)))) // large N: fewer runs of many messages
		for seed := range seeds {
			if refused, sent := run(l.n, l.w, 0.9, seed); refused != 0 {
				t.Fatalf("N=%d W=%v seed %d: %d of %d refused at 0.9 N/W", l.n, time.Duration(l.w), seed, refused, sent)
			}
		}
		if refused, sent := run(l.n, l.w, 1.1, 1); refused == 0 && l.n > 1 {
			t.Fatalf("N=%d W=%v: all %d admitted at 1.1 N/W", l.n, time.Duration(l.w), sent)
		}
	}
}

// Time that goes back (callers on different loops read the clock at
// slightly different moments) is counted in the newest bucket: the bound
// still holds and nothing panics.
func TestWindowTimeBack(t *testing.T) {
	var w Window
	win := int64(time.Second)
	now := int64(100 * time.Second)
	for range 5 {
		w.Allow(now, 10, win)
	}
	for range 10 {
		w.Allow(now-int64(time.Hour), 10, win)
	}
	if w.sum() != 10 {
		t.Fatalf("counted %d, want 10", w.sum())
	}
	if ok, retry := w.AllowN(now, 1, 10, win); ok || retry <= 0 || retry > time.Duration(win)+time.Duration(bucketLen(win)) {
		t.Fatalf("ok=%v retry=%v", ok, retry)
	}
}

func TestWindowSize(t *testing.T) {
	var w Window
	if got := int(unsafeSizeof(w)); got != 44 {
		t.Fatalf("Window is %d bytes, the package doc says 44", got)
	}
}

// n over the limit never fits: refused with a window's retry; disabled
// limits admit everything.
func TestWindowEdges(t *testing.T) {
	var w Window
	if ok, retry := w.AllowN(1, 11, 10, int64(time.Second)); ok || retry != time.Second {
		t.Fatalf("n over limit: ok=%v retry=%v", ok, retry)
	}
	for _, c := range []struct{ n, limit, window int }{{0, 10, 1}, {1, 0, 1}, {1, 10, 0}} {
		if ok, _ := w.AllowN(1, c.n, c.limit, int64(c.window)); !ok {
			t.Fatalf("%+v refused", c)
		}
	}
	if w.sum() != 0 {
		t.Fatal("a disabled call counted")
	}
}

func TestIPLimiterAndSweep(t *testing.T) {
	l := NewIPLimiter(Limit{N: 3, Window: time.Second})
	a := netip.MustParseAddr("127.0.0.2")
	b := netip.MustParseAddr("::1")
	now := int64(1000 * time.Second)
	for i := 0; i < 3; i++ {
		if ok, _ := l.AllowAt(a, now); !ok {
			t.Fatal("refused under limit")
		}
	}
	if ok, retry := l.AllowAt(a, now); ok || retry <= 0 {
		t.Fatalf("4th allowed=%v retry=%v", ok, retry)
	}
	if ok, _ := l.AllowAt(b, now); !ok {
		t.Fatal("other address refused")
	}
	l.SweepAt(now + int64(500*time.Millisecond))
	if l.Len() != 2 {
		t.Fatalf("sweep inside the window left %d keys, want 2", l.Len())
	}
	l.SweepAt(now + int64(3*time.Second))
	if l.Len() != 0 {
		t.Fatalf("sweep left %d keys", l.Len())
	}
}

// The single-node per-subject limiter forgets subjects once their window
// is empty, by itself (nothing calls Sweep on it): the map holds the
// subjects of about the last two windows, however many came by. A subject
// still inside its window is kept, and stays limited.
func TestSubjectLimiterForgets(t *testing.T) {
	win := 10 * time.Second
	l := NewLocalSubjectLimiter(Limit{N: 2, Window: win})
	t0 := int64(1000 * time.Second)
	for i := range 10000 {
		l.AllowAt(fmt.Sprintf("old-%d", i), t0)
	}
	l.AllowAt("busy", t0+int64(win))
	l.AllowAt("busy", t0+int64(win))
	if l.Len() != 10001 {
		t.Fatalf("held %d subjects, want 10001", l.Len())
	}
	// Two windows on, 2,000 new subjects pass through every shard.
	t1 := t0 + int64(2*win)
	for i := range 2000 {
		l.AllowAt(fmt.Sprintf("new-%d", i), t1)
	}
	if got := l.Len(); got != 2001 {
		t.Fatalf("held %d subjects two windows later, want 2001 (the new ones and busy)", got)
	}
	if ok, _ := l.AllowAt("busy", t1); ok {
		t.Fatal("a subject still inside its window was forgotten")
	}
}

// A forward and a backward wall-clock step change nothing: the limiter
// reads its time from package clock (here a fake whose wall reading is
// stepped), whether the caller passes a time.Time from time.Now or a bare
// wall reading (time.Unix(0, ns), as the reactor does today). A limiter on
// wall time would forget the full window after the step forward and hold
// it for an hour after the step back.
func TestKeyedWallStep(t *testing.T) {
	win := 10 * time.Second
	f := clock.NewFake(int64(1000 * time.Second))
	defer f.Install()()
	l := NewLocalSubjectLimiter(Limit{N: 5, Window: win})
	bare := func() time.Time { return time.Unix(0, f.Wall().UnixNano()) }
	for range 5 {
		if ok, _ := l.Allow("s", bare()); !ok {
			t.Fatal("refused under the limit")
		}
	}
	for _, step := range []time.Duration{time.Hour, -2 * time.Hour} {
		f.StepWall(step)
		f.Advance(time.Second)
		if ok, _ := l.Allow("s", bare()); ok {
			t.Fatalf("admitted after a wall step of %v (bare wall value)", step)
		}
		if ok, _ := l.Allow("s", f.Wall()); ok {
			t.Fatalf("admitted after a wall step of %v (time.Now value)", step)
		}
		if ok, _ := l.AllowAt("s", clock.Now()); ok {
			t.Fatalf("admitted after a wall step of %v (clock.Now)", step)
		}
	}
	f.Advance(win) // 12 s after the burst: its bucket has left the window
	if ok, _ := l.Allow("s", bare()); !ok {
		t.Fatal("refused a window after the burst")
	}
}

func TestDisabledLimit(t *testing.T) {
	l := NewLocalSubjectLimiter(Limit{})
	for i := 0; i < 1000; i++ {
		if ok, _ := l.AllowAt("s", int64(i)); !ok {
			t.Fatal("disabled limit refused")
		}
	}
}

func BenchmarkWindowAllow(b *testing.B) {
	var w Window
	win := int64(10 * time.Second)
	now := int64(1000 * time.Second)
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		w.Allow(now+int64(i), 1<<30, win)
	}
}

func BenchmarkSubjectAllow(b *testing.B) {
	l := NewLocalSubjectLimiter(Limit{N: 1 << 30, Window: 10 * time.Second})
	now := clock.Now()
	b.ReportAllocs()
	for b.Loop() {
		l.AllowAt("agent-1", now)
	}
}

// BenchmarkSubjectAllowTime is the time.Time form the reactor calls today
// (with clock.At's two clock reads).
func BenchmarkSubjectAllowTime(b *testing.B) {
	l := NewLocalSubjectLimiter(Limit{N: 1 << 30, Window: 10 * time.Second})
	now := time.Unix(0, time.Now().UnixNano())
	b.ReportAllocs()
	for b.Loop() {
		l.Allow("agent-1", now)
	}
}
