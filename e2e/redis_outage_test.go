package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// signal sends SIGSTOP (or SIGCONT to resume): the server keeps its
// connections and memory and answers nothing.
func (r *redisServer) signal(sig syscall.Signal) {
	r.t.Helper()
	must(r.t, r.cmd.Process.Signal(sig))
}

// admission is one request the gateway admitted: sent at sent, answered
// at got; the gateway admitted it somewhere in between.
type admission struct{ sent, got time.Time }

// maxInWindow is an upper bound on the most admissions the gateways made
// in any window of length w: an admission counts in window [a, a+w] if
// its interval [sent, got] meets it (it may have happened there), and the
// busiest a is found among the sent-w and got instants.
func maxInWindow(adm []admission, w time.Duration) int {
	best := 0
	var cand []time.Time
	for _, x := range adm {
		cand = append(cand, x.sent.Add(-w), x.got)
	}
	for _, a := range cand {
		b := a.Add(w)
		n := 0
		for _, x := range adm {
			if !x.got.Before(a) && !x.sent.After(b) {
				n++
			}
		}
		best = max(best, n)
	}
	return best
}

// Three gateway nodes, two clients on each, flood one subject (alice:
// 200 messages per 2 s) while Redis is killed and restarted empty 1.5 s
// later, paused for 1.5 s, or restarted empty at once: the most
// admissions in any 2 s window, counted from the clients' side (an upper
// bound: each admission counts in every window its send-to-answer
// interval meets), stays within SPEC 5's 5 % of the limit throughout
// (issue 15), and the limit is served again after the fault.
func TestClusterRedisOutageBound(t *testing.T) {
	const N = 200
	const W = 2 * time.Second
	for _, tc := range []struct {
		name  string
		fault func(r *redisServer)
	}{
		{"kill", func(r *redisServer) { r.kill(); time.Sleep(1500 * time.Millisecond); r.start() }},
		{"pause", func(r *redisServer) {
			r.signal(syscall.SIGSTOP)
			time.Sleep(1500 * time.Millisecond)
			r.signal(syscall.SIGCONT)
		}},
		{"restart-empty", func(r *redisServer) { r.kill(); r.start() }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rd := startRedis(t)
			nodes := clusterNodes(t, rd.URL(), 3, with("ratelimit", fmt.Sprintf(`
  per_connection: {messages: 100000, window: 10s}
  frames_per_connection: {count: 100000, window: 10s}
  per_subject: {messages: %d, window: %s}
  handshakes_per_ip: {count: 100000, window: 10s}`, N, W)))
			// Every node sees the others in the presence set (heartbeats
			// each second) before the load starts.
			time.Sleep(1500 * time.Millisecond)
			var mu sync.Mutex
			var adm []admission
			var attempts atomic.Int64
			var stop atomic.Bool
			var wg sync.WaitGroup
			errs := make(chan error, 6)
			for _, g := range nodes {
				for range 2 {
					r := dialAuthed(t, g.Addr, aliceToken)
					wg.Add(1)
					go func() {
						defer wg.Done()
						var mine []admission
						defer func() { mu.Lock(); adm = append(adm, mine...); mu.Unlock() }()
						for id := 1; !stop.Load(); id++ {
							sent := time.Now()
							r.sendText(fmt.Sprintf(`{"jsonrpc":"2.0","id":%d,"method":"ping"}`, id))
							f, err := r.readFrame(10 * time.Second)
							if err != nil || f.op != 1 {
								errs <- fmt.Errorf("request %d: op %d, %v", id, f.op, err)
								return
							}
							got := time.Now()
							attempts.Add(1)
							var resp struct {
								Result json.RawMessage
								Error  *struct{ Code int }
							}
							if err := json.Unmarshal(f.payload, &resp); err != nil {
								errs <- err
								return
							}
							switch {
							case resp.Error == nil:
								mine = append(mine, admission{sent, got})
							case resp.Error.Code != -31029:
								errs <- fmt.Errorf("unexpected answer %s", f.payload)
								return
							}
							time.Sleep(time.Millisecond)
						}
					}()
				}
			}
			start := time.Now()
			time.Sleep(W + W/2)
			faultAt := time.Now()
			tc.fault(rd)
			faultEnd := time.Now()
			time.Sleep(3 * W)
			stop.Store(true)
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Fatal(err)
			}
			sort.Slice(adm, func(i, j int) bool { return adm[i].got.Before(adm[j].got) })
			peak := maxInWindow(adm, W)
			in := func(from, to time.Time) int {
				n := 0
				for _, x := range adm {
					if !x.got.Before(from) && x.got.Before(to) {
						n++
					}
				}
				return n
			}
			var per []int
			for k := time.Duration(0); start.Add((k + 1) * W).Before(faultEnd.Add(3 * W)); k++ {
				per = append(per, in(start.Add(k*W), start.Add((k+1)*W)))
			}
			var redisUp []float64
			for _, g := range nodes {
				redisUp = append(redisUp, g.Metric(t, "gateway_redis_up"))
			}
			t.Logf("%s: N=%d W=%v, 3 gateway nodes x 2 clients: sliding max %d (%.3f N, upper bound from the clients' side); per window from the start %v; fault at +%.2fs..+%.2fs; %d admitted of %d requests; gateway_redis_up %v",
				tc.name, N, W, peak, float64(peak)/N, per, faultAt.Sub(start).Seconds(), faultEnd.Sub(start).Seconds(),
				len(adm), attempts.Load(), redisUp)
			if bound := N + N*5/100; peak > bound {
				t.Errorf("%s: a sliding window of %v admitted up to %d, bound %d (N=%d + 5 %%)", tc.name, W, peak, bound, N)
			}
			if n := in(faultEnd.Add(W), faultEnd.Add(3*W)); n < N {
				t.Errorf("%s: the two windows from W after the fault admitted %d, want at least N = %d", tc.name, n, N)
			}
			for i, g := range nodes {
				select {
				case <-g.Exited():
					t.Fatalf("node %d exited", i)
				default:
				}
			}
		})
	}
}

func readyz(t *testing.T, g *gateway) (int, string) {
	t.Helper()
	resp, err := http.Get("http://" + g.Admin + "/readyz")
	must(t, err)
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, strings.TrimSpace(string(b))
}

func waitUntil(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(d); !cond(); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
	}
}

// on_failure deny: while Redis is unreachable the node refuses every
// message, so /readyz answers 503 (a balancer sends clients elsewhere) and
// gateway_redis_up is 0; once Redis is back, 200 and 1. A local-mode node
// beside it stays ready and shows gateway_redis_fallback 1 meanwhile.
func TestRedisDenyReadyz(t *testing.T) {
	rd := startRedis(t)
	deny := startGateway(t, with("redis", fmt.Sprintf("\n  url: %q\n  on_failure: deny", rd.URL())))
	local := startGateway(t, with("redis", fmt.Sprintf("\n  url: %q\n  on_failure: local", rd.URL())))
	gauges := func(g *gateway) (float64, float64) {
		return g.Metric(t, "gateway_redis_up"), g.Metric(t, "gateway_redis_fallback")
	}
	waitUntil(t, 5*time.Second, "both nodes up on Redis", func() bool {
		u1, f1 := gauges(deny)
		u2, f2 := gauges(local)
		return u1 == 1 && f1 == 0 && u2 == 1 && f2 == 0
	})
	if code, body := readyz(t, deny); code != 200 {
		t.Fatalf("deny node with Redis up: /readyz %d %q", code, body)
	}
	r := dialAuthed(t, deny.Addr, aliceToken)
	if !pingResult(t, r, 1) {
		t.Fatal("deny node refused a ping with Redis up")
	}

	rd.kill()
	waitUntil(t, 5*time.Second, "the deny node's /readyz to turn 503", func() bool {
		code, _ := readyz(t, deny)
		return code == 503
	})
	_, body := readyz(t, deny)
	if !strings.Contains(body, "redis") {
		t.Errorf("503 body %q does not say why", body)
	}
	if pingResult(t, r, 2) {
		t.Error("deny node admitted a ping with Redis down")
	}
	if up, fb := gauges(deny); up != 0 || fb != 0 {
		t.Errorf("deny node with Redis down: gateway_redis_up %v, gateway_redis_fallback %v; want 0, 0", up, fb)
	}
	waitUntil(t, 5*time.Second, "the local node's fallback gauge", func() bool {
		up, fb := gauges(local)
		return up == 0 && fb == 1
	})
	if code, body := readyz(t, local); code != 200 {
		t.Errorf("local-mode node with Redis down: /readyz %d %q, want 200", code, body)
	}

	rd.start()
	waitUntil(t, 10*time.Second, "the deny node's /readyz to turn 200 again", func() bool {
		code, _ := readyz(t, deny)
		return code == 200
	})
	waitUntil(t, 5*time.Second, "gauges back", func() bool {
		u1, f1 := gauges(deny)
		u2, f2 := gauges(local)
		return u1 == 1 && f1 == 0 && u2 == 1 && f2 == 0
	})
	waitUntil(t, 5*time.Second, "a ping admitted again on the deny node", func() bool { return pingResult(t, r, 3) })
	t.Logf("deny node: 503 %q while Redis was down, 200 after", body)
}

// A node at limits.max_connections answers /readyz 503 (a balancer stops
// sending it clients it would refuse) and 200 again once one leaves.
func TestReadyzAtCapacity(t *testing.T) {
	g := startGateway(t, with("limits", `
  handshake_timeout: 1s
  idle_timeout: 60s
  ping_interval: 20s
  max_connections: 2`))
	g.waitNoConnections(t)
	a := dialAuthed(t, g.Addr, aliceToken)
	if code, body := readyz(t, g); code != 200 {
		t.Fatalf("one connection of 2: /readyz %d %q", code, body)
	}
	b := dialAuthed(t, g.Addr, bobToken)
	_ = a
	code, body := readyz(t, g)
	if code != 503 || !strings.Contains(body, "capacity") {
		t.Fatalf("2 connections of 2: /readyz %d %q, want 503 at capacity", code, body)
	}
	b.c.Close()
	waitUntil(t, 5*time.Second, "/readyz 200 after a connection left", func() bool {
		code, _ := readyz(t, g)
		return code == 200
	})
}
