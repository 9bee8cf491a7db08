package cluster

import (
	"context"
	"fmt"
	"log/slog"
	"runtime"
	"slices"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/mcpgate/gateway/clock"
	"github.com/mcpgate/gateway/metrics"
	"github.com/mcpgate/gateway/ratelimit"
	dto "github.com/prometheus/client_model/go"
)

// hammer calls Allow as fast as it can on every limiter (one goroutine per
// simulated node) until the deadline (clock.Now's scale); it returns the
// admission times, sorted. Each sender yields between calls: with senders
// spinning on every P, the refill goroutines would wait for preemption
// (10 ms) at each round trip, which a real event loop, blocked in epoll
// between batches, never causes.
func hammer(lims []*Limiter, subject string, until int64) (admitted []int64, attempts int64) {
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, l := range lims {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var mine []int64
			var n int64
			for {
				now := clock.Now()
				if now >= until {
					break
				}
				n++
				if ok, _ := l.AllowAt(subject, now); ok {
					mine = append(mine, now)
				}
				runtime.Gosched()
			}
			mu.Lock()
			admitted = append(admitted, mine...)
			attempts += n
			mu.Unlock()
		}()
	}
	wg.Wait()
	slices.Sort(admitted)
	return admitted, attempts
}

// slidingMax is the most admissions in any window of length w: the busiest
// window starts at some admission.
func slidingMax(ts []int64, w time.Duration) int {
	best, j := 0, 0
	for i := range ts {
		for j < len(ts) && ts[j] < ts[i]+int64(w) {
			j++
		}
		best = max(best, j-i)
	}
	return best
}

func countIn(ts []int64, from, to int64) int {
	lo := sort.Search(len(ts), func(i int) bool { return ts[i] >= from })
	hi := sort.Search(len(ts), func(i int) bool { return ts[i] >= to })
	return hi - lo
}

func sleepUntil(t time.Time) { time.Sleep(time.Until(t)) }

// sleepTill sleeps until t on clock.Now's scale.
func sleepTill(t int64) { time.Sleep(time.Duration(t - clock.Now())) }

func newNodes(t *testing.T, r *testRedis, n int, limit ratelimit.Limit, opts LimiterOptions) []*Limiter {
	lims := make([]*Limiter, n)
	for i := range lims {
		lims[i] = NewLimiter(r.client(t), limit, opts, nil, nil)
		t.Cleanup(lims[i].Close)
	}
	return lims
}

func totalStats(lims []*Limiter) (calls, trips uint64) {
	for _, l := range lims {
		s := l.Stats()
		calls += s.Calls
		trips += s.RoundTrips
	}
	return calls, trips
}

// Three nodes flood one subject limited to 100 per 2 s for three windows:
// every window gets 95..105 through, no sliding window gets more than 105.
func TestLimiterAccuracyThreeNodes(t *testing.T) {
	r := startRedis(t)
	const N = 100
	const W = 2 * time.Second
	lims := newNodes(t, r, 3, ratelimit.Limit{N: N, Window: W}, LimiterOptions{Nodes: 3})
	end := clock.Now() + int64(3*W+300*time.Millisecond)
	ts, attempts := hammer(lims, "accuracy", end)
	if len(ts) == 0 {
		t.Fatal("nothing admitted")
	}
	t0 := ts[0]
	var per []int
	for k := int64(0); k < 3; k++ {
		n := countIn(ts, t0+k*int64(W), t0+(k+1)*int64(W))
		per = append(per, n)
		if n < N*95/100 || n > N*105/100 {
			t.Errorf("window %d admitted %d, want %d..%d", k, n, N*95/100, N*105/100)
		}
	}
	peak := slidingMax(ts, W)
	if peak > N*105/100 {
		t.Errorf("a sliding window of %v admitted %d, limit %d", W, peak, N)
	}
	// Diagnostic: the least-filled sliding window that starts at an
	// admission. It dips below N right after a lease's messages (all spent
	// in the same instant) because their quota comes back W after them plus
	// a round trip, which any sliding-log limiter shows at this rate.
	low, j := N*10, 0
	for i := range ts {
		if ts[i]+int64(W) > end {
			break
		}
		for j < len(ts) && ts[j] < ts[i]+int64(W) {
			j++
		}
		low = min(low, j-i)
	}
	calls, trips := totalStats(lims)
	t.Logf("3 nodes, %d per %v: per window %v, sliding max %d (%.1f%% of N), sliding min %d; %d admitted of %d attempts",
		N, W, per, peak, 100*float64(peak)/N, low, len(ts), attempts)
	t.Logf("redis: %d lease calls in %d round trips = %.0f calls per 1,000 admitted, %.4f per 1,000 attempted",
		calls, trips, 1000*float64(calls)/float64(len(ts)), 1000*float64(calls)/float64(attempts))
}

// A larger limit shows how calls per message fall as N grows (leases get
// bigger relative to the round trips needed to track the window).
func TestLimiterCallsLargeLimit(t *testing.T) {
	if testing.Short() {
		t.Skip("short")
	}
	r := startRedis(t)
	const N = 5000
	const W = 2 * time.Second
	lims := newNodes(t, r, 3, ratelimit.Limit{N: N, Window: W}, LimiterOptions{Nodes: 3})
	ts, attempts := hammer(lims, "large", clock.Now()+int64(2*W+200*time.Millisecond))
	peak := slidingMax(ts, W)
	first := countIn(ts, ts[0], ts[0]+int64(W))
	calls, _ := totalStats(lims)
	t.Logf("3 nodes, %d per %v: first window %d, sliding max %d; %.1f calls per 1,000 admitted (%d attempts)",
		N, W, first, peak, 1000*float64(calls)/float64(len(ts)), attempts)
	if peak > N*105/100 || first < N*95/100 {
		t.Errorf("first window %d, sliding max %d, want %d..%d", first, peak, N*95/100, N*105/100)
	}
}

// A burst before a fixed-window boundary and another after it, less than W
// apart: a fixed-window counter (or a token bucket) would let N through in
// each; the sliding window lets N through in all, within SPEC 13's 5 %
// (each node may admit its cold-start credit, N/(50*nodes) >= 1, once the
// window is full elsewhere: with N = 50 and two nodes that is 1 each, so 51
// or 52 are within the bound, not a flake). The phases are 400 ms long so
// that a loaded machine still gets its leases in; the bounds do not depend
// on how much of each phase the senders are scheduled. Time is clock.Now's.
func TestLimiterSlidingBursts(t *testing.T) {
	r := startRedis(t)
	const N = 50
	const W = 2 * time.Second
	lims := newNodes(t, r, 2, ratelimit.Limit{N: N, Window: W}, LimiterOptions{Nodes: 2})
	ms := int64(time.Millisecond)
	b := clock.Now() + 600*ms // the "boundary"
	first, _ := hammer(lims, "burst", b-100*ms)
	sleepTill(b + 100*ms)
	second, _ := hammer(lims, "burst", b+500*ms) // at most 1 s after the first: one window
	sleepTill(b + int64(W) + 700*ms)             // the second burst's last use is W+200 ms behind
	third, _ := hammer(lims, "burst", b+int64(W)+1100*ms)
	all := slices.Concat(first, second, third)
	slices.Sort(all)
	peak := slidingMax(all, W)
	bound := N + N*5/100 // SPEC 13: within 5 % of N
	t.Logf("burst before the boundary %d, after it %d, a window later %d; sliding max %d (N=%d, bound %d)",
		len(first), len(second), len(third), peak, N, bound)
	if len(first) > bound || len(first)+len(second) > bound || peak > bound {
		t.Errorf("two bursts less than W apart admitted %d+%d, sliding max %d; bound %d", len(first), len(second), peak, bound)
	}
	if len(first) < N*9/10 {
		t.Errorf("a 400 ms flood on a fresh subject admitted only %d of %d", len(first), N)
	}
	if len(third) < N*8/10 {
		t.Errorf("a window after the bursts admitted only %d", len(third))
	}
}

// Cold start uses the nodes a node sees, not redis.nodes (0 by default):
// every node heartbeats into the presence set, so with four live nodes a
// cold node's credit is N/(50*4), and three nodes starting cold on a
// subject another node has filled overshoot by 3*N/200 (1.5 %) together,
// where each took N/50 before (6 %). A node that closes leaves the set.
func TestLimiterColdStartSeesNodes(t *testing.T) {
	r := startRedis(t)
	const N = 1000
	const W = 2 * time.Second
	limit := ratelimit.Limit{N: N, Window: W}
	a := newNodes(t, r, 1, limit, LimiterOptions{})[0]
	waitFor(t, 3*time.Second, "node A's first heartbeat", func() bool { return a.Stats().Nodes == 1 })
	if c := a.Stats().Credit; c != N/50 {
		t.Fatalf("one live node: credit %d, want %d", c, N/50)
	}
	filled, _ := hammer([]*Limiter{a}, "cold", clock.Now()+int64(500*time.Millisecond))
	cold := newNodes(t, r, 3, limit, LimiterOptions{})
	for i, l := range append([]*Limiter{a}, cold...) {
		waitFor(t, 3*time.Second, fmt.Sprintf("node %d to see 4 nodes", i), func() bool { return l.Stats().Nodes == 4 })
	}
	credit := N / (50 * 4)
	for i, l := range cold {
		if c := l.Stats().Credit; c != credit {
			t.Fatalf("cold node %d: credit %d, want N/(50*4) = %d", i, c, credit)
		}
	}
	extra, _ := hammer(cold, "cold", clock.Now()+int64(300*time.Millisecond))
	all := slices.Concat(filled, extra)
	slices.Sort(all)
	peak := slidingMax(all, W)
	t.Logf("node A filled %d of %d; 3 cold nodes then admitted %d; sliding max %d (bound N + 3 x %d = %d)",
		len(filled), N, len(extra), peak, credit, N+3*credit)
	if len(filled) < N*95/100 {
		t.Fatalf("node A admitted only %d of %d", len(filled), N)
	}
	if peak > N+3*credit {
		t.Errorf("sliding max %d over N + the cold nodes' credit (%d)", peak, N+3*credit)
	}
	cold[2].Close()
	waitFor(t, 3*time.Second, "node A to see 3 nodes after one closed", func() bool { return a.Stats().Nodes == 3 })
}

// A batch of n requests is admitted whole or refused whole (AllowNAt), and
// the batches admitted stay within N in the window, as n single messages
// would.
func TestLimiterAllowN(t *testing.T) {
	r := startRedis(t)
	const N = 30
	l := newNodes(t, r, 1, ratelimit.Limit{N: N, Window: 2 * time.Second}, LimiterOptions{})[0]
	waitFor(t, 3*time.Second, "the first heartbeat", func() bool { return l.Stats().Nodes == 1 })
	admitted, refused := 0, 0
	until := clock.Now() + int64(500*time.Millisecond)
	for clock.Now() < until {
		if ok, retry := l.AllowNAt("batch", 10, clock.Now()); ok {
			admitted += 10
		} else {
			refused++
			if retry <= 0 {
				t.Fatalf("refused with retry %v", retry)
			}
		}
		time.Sleep(2 * time.Millisecond)
	}
	t.Logf("batches of 10 against N=%d: %d admitted, %d batches refused", N, admitted, refused)
	if admitted > N || admitted < N-10 || refused == 0 {
		t.Fatalf("admitted %d in batches of 10, %d refused; want %d..%d and refusals", admitted, refused, N-10, N)
	}
}

func counterValue(t *testing.T, m *metrics.Metrics) float64 {
	var d dto.Metric
	if err := m.RedisErrors.Write(&d); err != nil {
		t.Fatal(err)
	}
	return d.GetCounter().GetValue()
}

// Redis dies under load: no panic, the configured fallback decides, errors
// are counted and logged once; Redis returns on the same port and the
// limiters go back to it on their own.
func TestLimiterRedisFailover(t *testing.T) {
	r := startRedis(t)
	m := metrics.New()
	localLog, denyLog := &logLines{}, &logLines{}
	limit := ratelimit.Limit{N: 100, Window: time.Second}
	local := NewLimiter(r.client(t), limit, LimiterOptions{Nodes: 2, ProbeInterval: 200 * time.Millisecond}, m, slog.New(localLog))
	deny := NewLimiter(r.client(t), limit, LimiterOptions{OnFailure: "deny", ProbeInterval: 200 * time.Millisecond}, m, slog.New(denyLog))
	t.Cleanup(local.Close)
	t.Cleanup(deny.Close)
	send := func(l *Limiter, subject string, n int) (ok int) {
		for range n {
			if a, _ := l.Allow(subject, time.Now()); a {
				ok++
			}
		}
		return ok
	}
	for range 20 {
		send(local, "s", 1)
		send(deny, "s", 1)
		time.Sleep(5 * time.Millisecond)
	}
	if local.Stats().Calls == 0 || deny.Stats().Calls == 0 {
		t.Fatal("no lease calls while Redis was up")
	}

	r.kill()
	waitFor(t, 3*time.Second, "both limiters to notice Redis is down", func() bool {
		send(local, "s", 1)
		send(deny, "s", 1)
		return local.Stats().Down && deny.Stats().Down
	})
	g1 := runtime.NumGoroutine()
	// local: a node-local window with half the limit (Nodes: 2). A subject
	// the node knew nothing about when Redis went away gets the cold
	// credit, N/(50*Nodes) = 1, for the first window of the outage (it
	// may be at its limit on the other nodes), then its share.
	outage := time.Now()
	if got := send(local, "fresh", 200); got != 1 {
		t.Errorf("local fallback admitted %d of a burst on an unknown subject, want 1 (the cold credit)", got)
	}
	time.Sleep(time.Until(outage.Add(limit.Window + 100*time.Millisecond)))
	if got := send(local, "fresh2", 200); got != 50 {
		t.Errorf("local fallback admitted %d of a burst a window into the outage, want 50 (N/Nodes)", got)
	}
	if got := send(deny, "fresh", 200); got != 0 {
		t.Errorf("deny fallback admitted %d", got)
	}
	if ok, retry := deny.Allow("fresh", time.Now()); ok || retry <= 0 {
		t.Errorf("deny: ok=%v retry=%v", ok, retry)
	}
	// Keep sending through several failed probes: the goroutine count must
	// not grow with the traffic or the probes.
	for range 80 {
		send(local, "s", 10)
		send(deny, "s", 10)
		time.Sleep(10 * time.Millisecond)
	}
	if g2 := runtime.NumGoroutine(); g2 > g1+4 {
		t.Errorf("goroutines grew from %d to %d while Redis was down", g1, g2)
	}
	if v := counterValue(t, m); v < 2 {
		t.Errorf("redis errors counted: %v", v)
	}
	if n := localLog.count("redis unreachable"); n != 1 {
		t.Errorf("%d 'unreachable' log lines, want 1", n)
	}

	r.start() // same port, empty (the script cache is gone too)
	waitFor(t, 5*time.Second, "recovery", func() bool {
		return !local.Stats().Down && !deny.Stats().Down
	})
	before := local.Stats().Calls
	waitFor(t, 2*time.Second, "a lease from the restarted Redis", func() bool {
		return send(local, "after", 1) == 1 && local.Stats().Calls > before
	})
	if got := send(deny, "after", 1); got != 1 {
		// The first message of a quiet subject is admitted on credit.
		t.Errorf("deny limiter refused after recovery")
	}
	keys, err := r.client(t).Keys(context.Background(), "mcpgate:rl:{after}:*").Result()
	if err != nil || len(keys) == 0 {
		t.Errorf("no lease keys after recovery: %v %v", keys, err)
	}
	for _, lg := range []*logLines{localLog, denyLog} {
		if u, rec := lg.count("redis unreachable"), lg.count("redis reachable"); u != 1 || rec != 1 {
			t.Errorf("log lines: %d down, %d recovered; want 1 and 1", u, rec)
		}
	}
}

// Redis loses its script cache (SCRIPT FLUSH, a restart, a failover): the
// next EVALSHA gets NOSCRIPT, the limiter falls back to EVAL in the same
// refill and never reports Redis down.
func TestLimiterNoScript(t *testing.T) {
	r := startRedis(t)
	l := NewLimiter(r.client(t), ratelimit.Limit{N: 1000, Window: time.Second}, LimiterOptions{LeaseTTL: 50 * time.Millisecond}, nil, nil)
	t.Cleanup(l.Close)
	waitFor(t, 2*time.Second, "a first lease", func() bool {
		l.Allow("s", time.Now())
		return l.Stats().Calls > 0
	})
	if err := r.client(t).ScriptFlush(context.Background()).Err(); err != nil {
		t.Fatal(err)
	}
	before := l.Stats().Calls
	waitFor(t, 2*time.Second, "leases after SCRIPT FLUSH", func() bool {
		l.Allow("s", time.Now())
		time.Sleep(time.Millisecond)
		return l.Stats().Calls > before+3
	})
	if st := l.Stats(); st.Down || st.Errors != 0 {
		t.Fatalf("after NOSCRIPT: %+v", st)
	}
}

// Without Redis the limiter is the node-local window with the whole limit;
// a disabled limit admits everything. Neither starts a goroutine.
func TestLimiterWithoutRedis(t *testing.T) {
	l := NewLimiter(nil, ratelimit.Limit{N: 5, Window: time.Second}, LimiterOptions{Nodes: 3}, nil, nil)
	off := NewLimiter(nil, ratelimit.Limit{}, LimiterOptions{}, nil, nil)
	defer l.Close()
	defer off.Close()
	now := time.Now()
	n := 0
	for range 10 {
		if ok, _ := l.Allow("s", now); ok {
			n++
		}
		if ok, _ := off.Allow("s", now); !ok {
			t.Fatal("disabled limit refused")
		}
	}
	if n != 5 {
		t.Fatalf("admitted %d, want 5", n)
	}
	for _, x := range []*Limiter{l, off} {
		select {
		case <-x.done:
		default:
			t.Fatal("refill goroutine started without Redis")
		}
	}
}

// Allow's own cost at 1,000 messages/s, the rate the issue asks about: it
// never waits for Redis, so its p99 is a memory operation's.
func TestAllowLatency(t *testing.T) {
	r := startRedis(t)
	l := NewLimiter(r.client(t), ratelimit.Limit{N: 100000, Window: 10 * time.Second}, LimiterOptions{}, nil, nil)
	t.Cleanup(l.Close)
	// Before its first heartbeat a node knows no node count and takes a
	// credit of 1 (limiter.go): a second message within the first lease's
	// round trip would wait, which is not what this test measures.
	waitFor(t, 3*time.Second, "the first heartbeat", func() bool { return l.Stats().Nodes == 1 })
	local := ratelimit.NewLocalSubjectLimiter(ratelimit.Limit{N: 100000, Window: 10 * time.Second})
	var dist, loc []time.Duration
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	admitted := 0
	for range 2000 {
		<-tick.C
		now := time.Now()
		ok, _ := l.Allow("latency", now)
		dist = append(dist, time.Since(now))
		now = time.Now()
		local.Allow("latency", now)
		loc = append(loc, time.Since(now))
		if ok {
			admitted++
		}
	}
	slices.Sort(dist)
	slices.Sort(loc)
	p := func(d []time.Duration, q float64) time.Duration { return d[int(q*float64(len(d)-1))] }
	t.Logf("Allow at ~1,000/s: distributed p50 %v p99 %v max %v; local p50 %v p99 %v; %d/%d admitted, %d lease calls",
		p(dist, .5), p(dist, .99), dist[len(dist)-1], p(loc, .5), p(loc, .99), admitted, len(dist), l.Stats().Calls)
	if admitted != len(dist) {
		t.Errorf("admitted %d of %d under the limit", admitted, len(dist))
	}
}

// The benchmarks pass a fixed now, as ratelimit's do: time.Now costs more
// than Allow on some virtual machines, and the reactor reads the clock once
// per batch of messages anyway.

func BenchmarkAllow(b *testing.B) {
	r := startRedis(b)
	l := NewLimiter(r.client(b), ratelimit.Limit{N: 1 << 30, Window: 10 * time.Second}, LimiterOptions{}, nil, nil)
	b.Cleanup(l.Close)
	for range 100 { // warm: the subject's entry exists and holds a lease
		l.Allow("agent-1", time.Now())
		time.Sleep(time.Millisecond)
	}
	now := time.Now()
	b.ReportAllocs()
	for b.Loop() {
		if ok, _ := l.Allow("agent-1", now); !ok {
			b.Fatal("refused")
		}
	}
}

func BenchmarkAllowParallel(b *testing.B) {
	r := startRedis(b)
	l := NewLimiter(r.client(b), ratelimit.Limit{N: 1 << 30, Window: 10 * time.Second}, LimiterOptions{}, nil, nil)
	b.Cleanup(l.Close)
	subjects := make([]string, 256)
	for i := range subjects {
		subjects[i] = fmt.Sprintf("agent-%d", i)
	}
	for range 20 {
		for _, s := range subjects {
			l.Allow(s, time.Now())
		}
		time.Sleep(5 * time.Millisecond)
	}
	now := time.Now()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			l.Allow(subjects[i%len(subjects)], now)
			i++
		}
	})
}

// The node-local limiter, for comparison: what Allow costs without Redis.
func BenchmarkLocalSubjectAllow(b *testing.B) {
	l := ratelimit.NewLocalSubjectLimiter(ratelimit.Limit{N: 1 << 30, Window: 10 * time.Second})
	now := time.Now()
	b.ReportAllocs()
	for b.Loop() {
		l.Allow("agent-1", now)
	}
}

// The first message of a subject, on a node that has heard nothing about
// it, is admitted on credit even when the process is younger than the
// window: "never heard" (infoAt 0) must read as long ago. With a clock
// starting at 0 every first message was refused for the first W after start
// (TestDescriptorBudgetEveryKind, 10 s window, saw -31029 on its first call).
func TestLimiterFirstMessageAtStart(t *testing.T) {
	r := startRedis(t)
	l := newNodes(t, r, 1, ratelimit.Limit{N: 1000000, Window: time.Hour}, LimiterOptions{})[0]
	waitFor(t, 3*time.Second, "the first heartbeat", func() bool { return l.Stats().Nodes == 1 })
	for i := range 100 {
		if ok, retry := l.AllowAt(fmt.Sprintf("fresh-%d", i), clock.Now()); !ok {
			t.Fatalf("first message of subject %d refused (retry %v)", i, retry)
		}
	}
}
