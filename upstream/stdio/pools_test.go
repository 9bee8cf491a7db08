package stdio

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/mcpgate/gateway/config"
	"github.com/mcpgate/gateway/metrics"
	"github.com/mcpgate/gateway/upstream"
	"github.com/mcpgate/gateway/upstream/pool/pooltest"
)

// Issue 15 item 5, against the fake worker: how the pool grows while
// children boot, what a hung child costs, and the retry of a request that
// never reached its child.

// newSlowBoot is a pool of fake workers that read nothing for their first
// boot (as a Node server does while it loads).
func newSlowBoot(t *testing.T, minIdle, maxN int, boot, timeout time.Duration, m *metrics.Metrics) *Upstream {
	t.Helper()
	cmd := []string{"/usr/bin/env", "STDIO_FAKE_WORKER=1", fmt.Sprintf("STDIO_FAKE_BOOT_MS=%d", boot.Milliseconds()), os.Args[0]}
	u, err := New(config.Upstream{Name: "fake", Type: "stdio", Command: cmd, MinIdle: minIdle, Max: maxN,
		MaxPerSubject: maxN, RequestTimeout: config.Duration(timeout)}, m, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { u.Close() })
	return u
}

// watchSize samples the pool's size (children holding a slot) every few
// ms; the returned func stops it and returns the largest size seen.
func watchSize(u *Upstream) func() int {
	var peak atomic.Int64
	done := make(chan struct{})
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		for {
			if n := int64(u.Stats().Total); n > peak.Load() {
				peak.Store(n)
			}
			select {
			case <-done:
				return
			case <-time.After(2 * time.Millisecond):
			}
		}
	}()
	return func() int {
		close(done)
		<-stopped
		return int(peak.Load())
	}
}

// pids returns the pids of every child of the pool that has started.
func pids(u *Upstream) []int {
	u.mu.Lock()
	defer u.mu.Unlock()
	var out []int
	for c := range u.all {
		if p := c.PID(); p != 0 {
			out = append(out, p)
		}
	}
	return out
}

// A burst of requests while the only child boots waits for that child: the
// pool does not start a child per request (it did: a booting child with
// requests queued counted as loaded, so each request forked another).
func TestBurstWhileBootingWaitsForTheBoot(t *testing.T) {
	u := newSlowBoot(t, 0, 40, 700*time.Millisecond, 30*time.Second, nil)
	peak := watchSize(u)
	type conn struct {
		s    upstream.Session
		sink *pooltest.Sink
	}
	var conns []conn
	for i := range 40 {
		s, sink := pooltest.Open(t, u)
		pooltest.Send(t, s, fmt.Sprintf(`{"jsonrpc":"2.0","id":%d,"method":"echo","params":{"message":"b"}}`, i))
		conns = append(conns, conn{s, sink})
	}
	for i, c := range conns {
		if d := pooltest.Decode(t, c.sink.WaitReply(t, wait, fmt.Sprint(i))); d.Error != nil {
			t.Fatalf("request %d: %+v", i, d.Error)
		}
	}
	// One child boots and takes the burst. A second may start if the
	// burst outlasted the boot (the first child is then booted and busy);
	// never one per request.
	if p := peak(); p > 2 {
		t.Fatalf("pool grew to %d children for a burst of 40 during one boot; want at most 2", p)
	} else {
		t.Logf("40 requests during a 700 ms boot: at most %d children", p)
	}
}

// loadResult counts what a steady stream of request-mode calls got.
type loadResult struct {
	sent, results, errors, lost int
	codes                       map[int]int
}

// steadyLoad sends echo requests at rate per second, spread over conns
// connections, for d; fault runs once, at. It then waits for every answer
// (up to settle) and counts them by id: a result, a JSON-RPC error, or
// lost.
func steadyLoad(t *testing.T, u *Upstream, conns, rate int, d, at time.Duration, fault func()) loadResult {
	t.Helper()
	type conn struct {
		s    upstream.Session
		sink *pooltest.Sink
		ids  []string
	}
	cs := make([]*conn, conns)
	for i := range cs {
		s, sink := pooltest.Open(t, u)
		cs[i] = &conn{s: s, sink: sink}
	}
	tick := time.NewTicker(time.Second / time.Duration(rate))
	defer tick.Stop()
	start := time.Now()
	faulted := false
	res := loadResult{codes: map[int]int{}}
	for n := 0; time.Since(start) < d; n++ {
		<-tick.C
		if !faulted && time.Since(start) >= at {
			faulted = true
			fault()
		}
		c := cs[n%conns]
		id := fmt.Sprintf(`"r%d"`, n)
		if err := c.s.Send(append(upstream.GetBuffer(0)[:0],
			fmt.Sprintf(`{"jsonrpc":"2.0","id":%s,"method":"echo","params":{"message":"x"}}`, id)...)); err != nil {
			// Refused at once (the gateway answers -31503 for it): answered.
			res.sent++
			res.errors++
			res.codes[-31503]++
			continue
		}
		c.ids = append(c.ids, id)
		res.sent++
	}
	for _, c := range cs {
		for _, id := range c.ids {
			msg := waitReplyOrNil(c.sink, 20*time.Second, id)
			switch {
			case msg == nil:
				res.lost++
			default:
				if d := pooltest.Decode(t, msg); d.Error != nil {
					res.errors++
					res.codes[d.Error.Code]++
				} else {
					res.results++
				}
			}
		}
	}
	return res
}

// waitReplyOrNil is Sink.WaitReply that returns nil instead of failing.
func waitReplyOrNil(s *pooltest.Sink, d time.Duration, id string) []byte {
	deadline := time.Now().Add(d)
	for {
		for _, m := range s.Messages() {
			if pooltest.RawID(m) == id {
				return m
			}
		}
		if time.Now().After(deadline) {
			return nil
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// Every child killed at once under 20 calls/s in request mode: every
// request is answered (a result, or -32603 for one written to a child that
// died with it, or -31503), and the pool grows back by one child per boot:
// at most min_idle warm + the shared children the load needs + the
// children killed (they hold their slots until reaped).
func TestAllChildrenKilledUnderLoad(t *testing.T) {
	const minIdle = 2
	u := newSlowBoot(t, minIdle, 40, 300*time.Millisecond, 10*time.Second, nil)
	waitFor(t, "warm pool", func() bool { return u.Stats().Idle == minIdle })
	peak := watchSize(u)
	var killed int
	res := steadyLoad(t, u, 4, 20, 4*time.Second, 1500*time.Millisecond, func() {
		for _, p := range pids(u) {
			if syscall.Kill(p, syscall.SIGKILL) == nil {
				killed++
			}
		}
	})
	p := peak()
	t.Logf("sent %d: %d results, %d errors %v, %d lost; %d children killed; pool at most %d", res.sent, res.results, res.errors, res.codes, res.lost, killed, p)
	if res.lost != 0 {
		t.Fatalf("%d requests never answered", res.lost)
	}
	// Before the kill: 1 shared + 2 warm. After: 2 warm + 1 shared booting
	// (and, once it booted, one more if the load needs it).
	if bound := killed + minIdle + 2; p > bound {
		t.Fatalf("pool grew to %d children; bound %d", p, bound)
	}
	if res.results < res.sent*3/4 {
		t.Fatalf("only %d of %d requests got a result", res.results, res.sent)
	}
}

// A session-mode child that answers nothing (SIGSTOP) for request_timeout,
// and then not even the gateway's ping, is killed and replaced: the
// request that timed out gets -31504, any other then waiting -32603, and
// the connection is failed 1011.
func TestHungSessionChildReplaced(t *testing.T) {
	const timeout = 600 * time.Millisecond
	m := metrics.New()
	u := newFake(t, 1, 4, timeout, m, nil)
	s, sink := pooltest.Open(t, u)
	pooltest.Send(t, s, fakeInit)
	sink.WaitReply(t, wait, `0`)
	pooltest.Send(t, s, `{"jsonrpc":"2.0","id":"pid","method":"echo","params":{"message":"x"}}`)
	var r struct{ Result struct{ PID int } }
	decodeInto(t, sink.WaitReply(t, wait, `"pid"`), &r)
	pid := r.Result.PID
	must(t, syscall.Kill(pid, syscall.SIGSTOP))
	t.Cleanup(func() { syscall.Kill(pid, syscall.SIGKILL) })
	start := time.Now()
	pooltest.Send(t, s, `{"jsonrpc":"2.0","id":"a","method":"echo","params":{"message":"x"}}`)
	if d := pooltest.Decode(t, sink.WaitReply(t, wait, `"a"`)); d.Error == nil || d.Error.Code != -31504 || d.Error.Message != "Upstream timeout" {
		t.Fatalf("a: want -31504 Upstream timeout, got %+v", d)
	}
	pooltest.Send(t, s, `{"jsonrpc":"2.0","id":"b","method":"echo","params":{"message":"x"}}`)
	if d := pooltest.Decode(t, sink.WaitReply(t, wait, `"b"`)); d.Error == nil || (d.Error.Code != -32603 && d.Error.Code != -31504) {
		t.Fatalf("b: want -32603 (or -31504 if its own timeout came first), got %+v", d)
	}
	if code, reason := sink.WaitFail(t, wait); code != 1011 || reason != "Upstream worker not responding" {
		t.Fatalf("Fail(%d, %q)", code, reason)
	}
	el := time.Since(start)
	// request_timeout, then the ping's grace (min(request_timeout, 5 s)).
	if el < 2*timeout-50*time.Millisecond || el > 2*timeout+3*time.Second {
		t.Fatalf("replaced after %v; want about %v", el, 2*timeout)
	}
	waitFor(t, "the hung child killed", func() bool { return !alive(pid) })
	waitFor(t, "its slot back", func() bool { return u.Stats().Sessions == 0 })
	if v := counter(t, m.UpstreamErrors.WithLabelValues("fake", "worker_hung")); v != 1 {
		t.Fatalf("worker_hung = %v", v)
	}
	// A new session gets a new child.
	s2, sink2 := pooltest.Open(t, u)
	pooltest.Send(t, s2, fakeInit)
	if d := pooltest.Decode(t, sink2.WaitReply(t, wait, `0`)); d.Error != nil {
		t.Fatalf("new session: %+v", d.Error)
	}
}

// A shared child that hangs is replaced the same way; the request-mode
// connections stay, and every request is answered.
func TestHungSharedChildReplaced(t *testing.T) {
	const timeout = 600 * time.Millisecond
	u := newFake(t, 0, 4, timeout, nil, nil)
	s, sink := pooltest.Open(t, u)
	pooltest.Send(t, s, `{"jsonrpc":"2.0","id":"pid","method":"echo","params":{"message":"x"}}`)
	var r struct{ Result struct{ PID int } }
	decodeInto(t, sink.WaitReply(t, wait, `"pid"`), &r)
	pid := r.Result.PID
	must(t, syscall.Kill(pid, syscall.SIGSTOP))
	t.Cleanup(func() { syscall.Kill(pid, syscall.SIGKILL) })
	var ids []string
	for i := range 15 { // 1.5 s: the hang is found at about 1.2 s
		id := fmt.Sprintf(`"h%d"`, i)
		pooltest.Send(t, s, `{"jsonrpc":"2.0","id":`+id+`,"method":"echo","params":{"message":"x"}}`)
		ids = append(ids, id)
		time.Sleep(100 * time.Millisecond)
	}
	results := 0
	for _, id := range ids {
		d := pooltest.Decode(t, sink.WaitReply(t, wait, id))
		switch {
		case d.Error == nil:
			results++
		case d.Error.Code != -31504 && d.Error.Code != -32603:
			t.Fatalf("%s: %+v", id, d.Error)
		}
	}
	waitFor(t, "the hung child killed", func() bool { return !alive(pid) })
	if _, _, failed := sink.Failed(); failed {
		t.Fatal("a request-mode connection was failed")
	}
	pooltest.Send(t, s, `{"jsonrpc":"2.0","id":"after","method":"echo","params":{"message":"x"}}`)
	var after struct{ Result struct{ PID int } }
	decodeInto(t, sink.WaitReply(t, wait, `"after"`), &after)
	if after.Result.PID == 0 || after.Result.PID == pid {
		t.Fatalf("after: served by %d (the hung child was %d)", after.Result.PID, pid)
	}
	if st := u.Stats(); st.Total > 3 {
		t.Fatalf("pool %+v", st)
	}
	t.Logf("15 requests during the hang: %d results; the rest -31504/-32603", results)
}

// A request written to a child whose stdin is broken never reached it: it
// is sent again, once, to another child, and answered there.
func TestUnsentRequestRetried(t *testing.T) {
	m := metrics.New()
	u := newFake(t, 1, 3, 0, m, nil)
	s, sink := pooltest.Open(t, u)
	pooltest.Send(t, s, `{"jsonrpc":"2.0","id":"close","method":"closestdin"}`)
	var r struct{ Result struct{ PID int } }
	decodeInto(t, sink.WaitReply(t, wait, `"close"`), &r)
	// It answers first, then closes its stdin: wait for the close, or x
	// could still be written (and lost in the pipe).
	waitFor(t, "the child's stdin closed", func() bool {
		_, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/0", r.Result.PID))
		return err != nil
	})
	waitFor(t, "a warm child booted", func() bool {
		u.mu.Lock()
		defer u.mu.Unlock()
		return len(u.idle) == 1 && u.idle[0].spoke.Load()
	})
	pooltest.Send(t, s, `{"jsonrpc":"2.0","id":"x","method":"echo","params":{"message":"x"}}`)
	var x struct {
		Result struct{ PID int }
		Error  any
	}
	decodeInto(t, sink.WaitReply(t, wait, `"x"`), &x)
	if x.Error != nil || x.Result.PID == 0 || x.Result.PID == r.Result.PID {
		t.Fatalf("x: %+v (the broken child was %d)", x, r.Result.PID)
	}
	if v := counter(t, m.UpstreamErrors.WithLabelValues("fake", "retried")); v != 1 {
		t.Fatalf("retried = %v", v)
	}
}

// Requests sent while a child is being killed are all answered: none is
// lost between the kill and the moment the pool learns of it.
func TestKillUnderBurstLosesNothing(t *testing.T) {
	u := newFake(t, 1, 4, 10*time.Second, nil, nil)
	s, sink := pooltest.Open(t, u)
	pooltest.Send(t, s, `{"jsonrpc":"2.0","id":"pid","method":"echo","params":{"message":"x"}}`)
	var r struct{ Result struct{ PID int } }
	decodeInto(t, sink.WaitReply(t, wait, `"pid"`), &r)
	var wg sync.WaitGroup
	var ids []string
	for i := range 200 {
		if i == 20 {
			wg.Add(1)
			go func() { defer wg.Done(); _ = syscall.Kill(r.Result.PID, syscall.SIGKILL) }()
		}
		id := fmt.Sprintf(`"k%d"`, i)
		if err := s.Send(append(upstream.GetBuffer(0)[:0], `{"jsonrpc":"2.0","id":`+id+`,"method":"echo","params":{"message":"x"}}`...)); err != nil {
			continue // refused at once: the gateway answers it -31503
		}
		ids = append(ids, id)
		time.Sleep(time.Millisecond)
	}
	wg.Wait()
	for _, id := range ids {
		sink.WaitReply(t, wait, id)
	}
}

func decodeInto(t *testing.T, msg []byte, v any) {
	t.Helper()
	if err := json.Unmarshal(msg, v); err != nil {
		t.Fatalf("bad JSON %q: %v", msg, err)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
