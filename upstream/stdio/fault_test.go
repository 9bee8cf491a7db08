package stdio

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/mcpgate/gateway/config"
	"github.com/mcpgate/gateway/metrics"
	"github.com/mcpgate/gateway/upstream"
	"github.com/mcpgate/gateway/upstream/pool/pooltest"
)

// Fault cases, against the fake worker of fake_test.go.

func newFake(t *testing.T, minIdle, maxN int, timeout time.Duration, m *metrics.Metrics, log *slog.Logger) *Upstream {
	t.Helper()
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	u, err := New(config.Upstream{Name: "fake", Type: "stdio", Command: fakeCommand(),
		MinIdle: minIdle, Max: maxN, MaxPerSubject: maxN, RequestTimeout: config.Duration(timeout)}, m, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { u.Close() })
	return u
}

const fakeInit = `{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-11-25"}}`

func killPID(t *testing.T, pid int) {
	t.Helper()
	if pid <= 0 {
		t.Fatal("no pid")
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(wait)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// sharedBooted reports whether every shared child has booted (answered
// the ping it gets at start).
func sharedBooted(u *Upstream) bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	for _, c := range u.shared {
		if !c.spoke.Load() {
			return false
		}
	}
	return true
}

// alive reports whether pid runs: a zombie (reaped late by init in some
// containers) is dead.
func alive(pid int) bool {
	if syscall.Kill(pid, 0) != nil {
		return false
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true // no /proc: trust kill(0)
	}
	i := bytes.LastIndexByte(b, ')')
	return i < 0 || i+2 >= len(b) || b[i+2] != 'Z'
}

// workerOf returns the pid of the child that has the connection's only
// request in flight.
func workerOf(t *testing.T, s upstream.Session) int {
	t.Helper()
	calls := s.(*session).route.InFlight()
	if len(calls) != 1 {
		t.Fatalf("%d calls in flight, want 1", len(calls))
	}
	return calls[0].Worker.(*child).PID()
}

// In request mode a dead worker costs only the requests that were on it;
// the connections stay open and are served by the replacement.
func TestRequestModeWorkerKilled(t *testing.T) {
	u := newFake(t, 2, 2, 0, nil, nil)
	waitFor(t, "warm pool", func() bool {
		u.mu.Lock()
		defer u.mu.Unlock()
		return len(u.idle) == 2 && u.idle[0].spoke.Load() && u.idle[1].spoke.Load()
	})
	a, sinkA := pooltest.Open(t, u)
	b, sinkB := pooltest.Open(t, u)
	pooltest.Send(t, a, `{"jsonrpc":"2.0","id":"a1","method":"sleep","params":{"ms":60000}}`)
	time.Sleep(2 * busyAfter) // a's child is busy: b gets the other
	pooltest.Send(t, b, `{"jsonrpc":"2.0","id":"b1","method":"sleep","params":{"ms":500}}`)
	pidA, pidB := workerOf(t, a), workerOf(t, b)
	if pidA == pidB {
		t.Fatal("least-loaded dispatch put both requests on one child")
	}
	killPID(t, pidA)
	if d := pooltest.Decode(t, sinkA.WaitReply(t, wait, `"a1"`)); d.Error == nil || d.Error.Code != -32603 {
		t.Fatalf("a1: %+v", d)
	}
	if d := pooltest.Decode(t, sinkB.WaitReply(t, wait, `"b1"`)); d.Error != nil {
		t.Fatalf("b1 was not on the dead child but failed: %+v", d.Error)
	}
	pooltest.Send(t, a, `{"jsonrpc":"2.0","id":"a2","method":"echo","params":{"message":"still here"}}`)
	if d := pooltest.Decode(t, sinkA.WaitReply(t, wait, `"a2"`)); d.Error != nil {
		t.Fatalf("a2: %+v", d.Error)
	}
	for _, sink := range []*pooltest.Sink{sinkA, sinkB} {
		if _, _, failed := sink.Failed(); failed {
			t.Fatal("a request-mode connection was failed")
		}
	}
}

func TestPoolExhausted(t *testing.T) {
	u := newFake(t, 0, 1, 0, nil, nil)
	a, sinkA := pooltest.Open(t, u)
	pooltest.Send(t, a, fakeInit)
	sinkA.WaitReply(t, wait, `0`)
	b, sinkB := pooltest.Open(t, u)
	pooltest.Send(t, b, fakeInit)
	if code, reason := sinkB.WaitFail(t, wait); code != 1013 || reason != "No worker available" {
		t.Fatalf("Fail(%d, %q)", code, reason)
	}
	// A stateless connection finds no child either: the session holds it.
	c, sinkC := pooltest.Open(t, u)
	pooltest.Send(t, c, `{"jsonrpc":"2.0","id":1,"method":"echo","params":{"message":"x"}}`)
	if code, _ := sinkC.WaitFail(t, wait); code != 1013 {
		t.Fatalf("Fail(%d)", code)
	}
	// Once the session leaves, its slot serves others again.
	a.Close()
	waitFor(t, "the session's child gone", func() bool { return u.Stats().Total == 0 })
	d, sinkD := pooltest.Open(t, u)
	pooltest.Send(t, d, fakeInit)
	sinkD.WaitReply(t, wait, `0`)
}

func TestRequestTimeout(t *testing.T) {
	m := metrics.New()
	u := newFake(t, 0, 1, 300*time.Millisecond, m, nil)
	s, sink := pooltest.Open(t, u)
	pooltest.Send(t, s, `{"jsonrpc":"2.0","id":"slow","method":"sleep","params":{"ms":700}}`)
	start := time.Now()
	d := pooltest.Decode(t, sink.WaitReply(t, wait, `"slow"`))
	if d.Error == nil || d.Error.Code != -31504 || d.Error.Message != "Upstream timeout" {
		t.Fatalf("want a timeout error, got %+v", d)
	}
	if el := time.Since(start); el > 2*time.Second {
		t.Fatalf("timed out after %v", el)
	}
	// The late reply (at 700 ms) is dropped; the child serves on.
	time.Sleep(600 * time.Millisecond)
	pooltest.Send(t, s, `{"jsonrpc":"2.0","id":"next","method":"echo","params":{"message":"y"}}`)
	sink.WaitReply(t, wait, `"next"`)
	if msgs := sink.Messages(); len(msgs) != 2 {
		t.Fatalf("want 2 messages (timeout, next), got:\n%s", pooltest.Dump(msgs))
	}
	if v := counter(t, m.UpstreamErrors.WithLabelValues("fake", "timeout")); v != 1 {
		t.Fatalf("timeout errors = %v", v)
	}
	if v := counter(t, m.UpstreamErrors.WithLabelValues("fake", "late_reply")); v != 1 {
		t.Fatalf("late replies = %v", v)
	}
	if v := counter(t, m.UpstreamRequests.WithLabelValues("fake")); v != 2 {
		t.Fatalf("requests = %v", v)
	}
}

func counter(t *testing.T, c interface{ Write(*dto.Metric) error }) float64 {
	t.Helper()
	var d dto.Metric
	if err := c.Write(&d); err != nil {
		t.Fatal(err)
	}
	switch {
	case d.Counter != nil:
		return d.Counter.GetValue()
	case d.Gauge != nil:
		return d.Gauge.GetValue()
	}
	return 0
}

// Closing a session ends its child's whole process group, and the pool
// gets a fresh warm child.
func TestSessionCloseKillsGroup(t *testing.T) {
	m := metrics.New()
	u := newFake(t, 1, 2, 0, m, nil)
	s, sink := pooltest.Open(t, u)
	pooltest.Send(t, s, fakeInit)
	pooltest.Send(t, s, `{"jsonrpc":"2.0","id":"g","method":"grandchild"}`)
	var r struct{ PID int }
	if err := json.Unmarshal(pooltest.Decode(t, sink.WaitReply(t, wait, `"g"`)).Result, &r); err != nil {
		t.Fatal(err)
	}
	pid := s.(*session).child.PID()
	if !alive(pid) || !alive(r.PID) {
		t.Fatal("child or grandchild not running")
	}
	if v := counter(t, m.WorkerPoolBusy.WithLabelValues("fake")); v != 1 {
		t.Fatalf("busy = %v", v)
	}
	s.Close()
	waitFor(t, "child and grandchild gone", func() bool { return !alive(pid) && !alive(r.PID) })
	waitFor(t, "pool refilled", func() bool { st := u.Stats(); return st.Idle == 1 && st.Total == 1 })
	if v := counter(t, m.WorkerPoolBusy.WithLabelValues("fake")); v != 0 {
		t.Fatalf("busy = %v after close", v)
	}
	if v := counter(t, m.WorkerPoolSize.WithLabelValues("fake")); v != 1 {
		t.Fatalf("size = %v", v)
	}
	if _, _, failed := sink.Failed(); failed {
		t.Fatal("a closed session must not be failed")
	}
}

// A server-to-client request reaches the session, and the client's answer
// goes back to the same child; a stateless connection's worker gets a
// refusal instead.
func TestServerToClientRequests(t *testing.T) {
	u := newFake(t, 0, 2, 0, nil, nil)
	s, sink := pooltest.Open(t, u)
	pooltest.Send(t, s, fakeInit)
	pooltest.Send(t, s, `{"jsonrpc":"2.0","id":5,"method":"ask"}`)
	req := sink.WaitFor(t, wait, "server request", func(m []byte) bool { return pooltest.IsMethod(m, "sampling/createMessage") })
	if pooltest.RawID(req) != `"srv-1"` {
		t.Fatalf("server request id rewritten: %s", req)
	}
	pooltest.Send(t, s, `{"jsonrpc":"2.0","id":"srv-1","result":{"model":"m"}}`)
	if d := pooltest.Decode(t, sink.WaitReply(t, wait, `5`)); !strings.Contains(string(d.Result), `"model":"m"`) {
		t.Fatalf("answer did not reach the child: %s", d.Result)
	}

	r, rsink := pooltest.Open(t, u)
	pooltest.Send(t, r, `{"jsonrpc":"2.0","id":6,"method":"ask"}`)
	if d := pooltest.Decode(t, rsink.WaitReply(t, wait, `6`)); !strings.Contains(string(d.Result), `-32601`) {
		t.Fatalf("want the child to get a refusal, got %s", d.Result)
	}
}

func TestBatch(t *testing.T) {
	u := newFake(t, 0, 1, 0, nil, nil)
	s, sink := pooltest.Open(t, u)
	pooltest.Send(t, s, `[{"jsonrpc":"2.0","id":"b1","method":"echo","params":{"message":"one"}},
		{"jsonrpc":"2.0","method":"notifications/x"},
		{"jsonrpc":"2.0","id":2e0,"method":"sleep","params":{"ms":50}},
		{"jsonrpc":"2.0","id":3}]`)
	got := sink.WaitFor(t, wait, "batch reply", func(m []byte) bool { return bytes.HasPrefix(m, []byte("[")) })
	var replies []json.RawMessage
	if err := json.Unmarshal(got, &replies); err != nil || len(replies) != 3 {
		t.Fatalf("batch reply %s", got)
	}
	ids := map[string]bool{}
	for _, r := range replies {
		ids[pooltest.RawID(r)] = true
	}
	if !ids[`"b1"`] || !ids[`2e0`] || !ids[`3`] {
		t.Fatalf("ids %v in %s", ids, got)
	}
}

// A progress token the client sent as a number keeps its exact text.
func TestProgressTokenRestored(t *testing.T) {
	u := newFake(t, 0, 1, 0, nil, nil)
	s, sink := pooltest.Open(t, u)
	pooltest.Send(t, s, `{"jsonrpc":"2.0","id":"p","method":"progress","params":{"n":2,"_meta":{"progressToken":1.0e1}}}`)
	sink.WaitReply(t, wait, `"p"`)
	n := 0
	for _, m := range sink.Messages() {
		if pooltest.IsMethod(m, "notifications/progress") {
			if !strings.Contains(string(m), `"progressToken":1.0e1`) {
				t.Fatalf("token changed: %s", m)
			}
			n++
		}
	}
	if n != 2 {
		t.Fatalf("%d progress notifications", n)
	}
}

type logCapture struct {
	mu    sync.Mutex
	lines []string
}

func (l *logCapture) Enabled(context.Context, slog.Level) bool { return true }
func (l *logCapture) WithAttrs([]slog.Attr) slog.Handler       { return l }
func (l *logCapture) WithGroup(string) slog.Handler            { return l }
func (l *logCapture) Handle(_ context.Context, r slog.Record) error {
	var b strings.Builder
	b.WriteString(r.Message)
	r.Attrs(func(a slog.Attr) bool { fmt.Fprintf(&b, " %s=%v", a.Key, a.Value); return true })
	l.mu.Lock()
	l.lines = append(l.lines, b.String())
	l.mu.Unlock()
	return nil
}

func (l *logCapture) find(sub string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, s := range l.lines {
		if strings.Contains(s, sub) {
			return true
		}
	}
	return false
}

func TestStderrToLog(t *testing.T) {
	lc := &logCapture{}
	u := newFake(t, 1, 1, 0, nil, slog.New(lc))
	waitFor(t, "stderr line in the log", func() bool {
		return lc.find("worker stderr upstream=fake pid=") && lc.find("line=fake worker ready")
	})
	_ = u
}

func TestSpawnFailureAndClose(t *testing.T) {
	if _, err := New(config.Upstream{Name: "x", Command: []string{"/nonexistent/mcp-server"}}, nil, nil); err == nil {
		t.Fatal("want an error for a missing command")
	}
	// A child that exits at once fails its session 1011 and is not spawned
	// in a tight loop.
	u, err := New(config.Upstream{Name: "x", Command: []string{"/bin/sh", "-c", "exit 1"}, MinIdle: 1, Max: 2}, nil, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	s, sink := pooltest.Open(t, u)
	pooltest.Send(t, s, fakeInit)
	if code, _ := sink.WaitFail(t, wait); code != 1011 {
		t.Fatalf("Fail(%d)", code)
	}
	if d := pooltest.Decode(t, sink.WaitReply(t, wait, `0`)); d.Error == nil || d.Error.Code != -32603 {
		t.Fatalf("initialize: %+v", d)
	}
	u.Close()
	if err := s.Send(upstream.GetBuffer(2)); !errors.Is(err, upstream.ErrClosed) {
		t.Fatalf("Send after Close: %v", err)
	}
	if _, err := u.Open(pooltest.NewSink()); !errors.Is(err, upstream.ErrClosed) {
		t.Fatalf("Open after Close: %v", err)
	}
}
