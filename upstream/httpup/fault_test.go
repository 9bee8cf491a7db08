package httpup

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/mcpgate/gateway/metrics"
	"github.com/mcpgate/gateway/upstream"
	"github.com/mcpgate/gateway/upstream/pool/pooltest"
)

// Fault cases and wire details, against the fake server of helpers_test.go.

const fakeInit = `{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18"}}`

func value(t *testing.T, c interface{ Write(*dto.Metric) error }) float64 {
	t.Helper()
	var d dto.Metric
	if err := c.Write(&d); err != nil {
		t.Fatal(err)
	}
	if d.Counter != nil {
		return d.Counter.GetValue()
	}
	return d.Gauge.GetValue()
}

// A URL that refuses connections: a new session goes to the other URL, the
// refusing one is marked down and skipped by the next sessions, and with
// every URL down a session gets -31503 (with data.retry_after_ms) and
// close 1013.
func TestURLDown(t *testing.T) {
	f := newFakeServer(t, false)
	m := metrics.New()
	u := newUp(t, []string{deadURL(t), f.URL()}, 0, m)
	for i := 0; i < 3; i++ {
		s, sink := pooltest.Open(t, u)
		pooltest.Send(t, s, fakeInit)
		if d := pooltest.Decode(t, sink.WaitReply(t, wait, `0`)); d.Error != nil {
			t.Fatalf("session %d: %+v", i, d.Error)
		}
	}
	if v := value(t, m.UpstreamErrors.WithLabelValues("h", "connect")); v != 1 {
		t.Fatalf("connect errors = %v: a URL that is down must be skipped", v)
	}
	if v := value(t, m.WorkerPoolSize.WithLabelValues("h")); v != 1 {
		t.Fatalf("urls up = %v", v)
	}

	all := newUp(t, []string{deadURL(t), deadURL(t)}, 0, nil)
	s, sink := pooltest.Open(t, all)
	pooltest.Send(t, s, fakeInit)
	d := pooltest.Decode(t, sink.WaitReply(t, wait, `0`))
	if d.Error == nil || d.Error.Code != -31503 || d.Error.Message != "Upstream unavailable" || d.Error.Data.RetryAfterMS == nil {
		t.Fatalf("want -31503 Upstream unavailable with retry_after_ms, got %+v", d)
	}
	if code, _ := sink.WaitFail(t, wait); code != 1013 {
		t.Fatalf("Fail(%d)", code)
	}
	// Stateless requests get the same answer, and the connection stays.
	r, rsink := pooltest.Open(t, all)
	pooltest.Send(t, r, `{"jsonrpc":"2.0","id":"x","method":"echo"}`)
	if d := pooltest.Decode(t, rsink.WaitReply(t, wait, `"x"`)); d.Error == nil || d.Error.Code != -31503 || d.Error.Data.RetryAfterMS == nil {
		t.Fatalf("%+v", d)
	}
	if _, _, failed := rsink.Failed(); failed {
		t.Fatal("request-mode connection failed")
	}
}

// The session id of initialize is carried on every later message, with the
// negotiated version, and DELETEd at the end; SSE answers are read, and
// the progress token comes back as the client wrote it.
func TestSessionWire(t *testing.T) {
	f := newFakeServer(t, false)
	u := newUp(t, []string{f.URL()}, 0, nil)
	s, sink := pooltest.Open(t, u)
	pooltest.Send(t, s, fakeInit)
	sink.WaitReply(t, wait, `0`)
	pooltest.Send(t, s, `{"jsonrpc":"2.0","method":"notifications/initialized"}`)
	pooltest.Send(t, s, `{"jsonrpc":"2.0","id":"s","method":"sse","params":{"_meta":{"progressToken":-0.5}}}`)
	sink.WaitReply(t, wait, `"s"`)
	note := sink.WaitFor(t, wait, "progress", func(m []byte) bool { return pooltest.IsMethod(m, "notifications/progress") })
	if !strings.Contains(string(note), `"progressToken":-0.5`) {
		t.Fatalf("token not restored: %s", note)
	}
	pooltest.Send(t, s, `{"jsonrpc":"2.0","id":"e","method":"echo","params":{"message":"v"}}`)
	if d := pooltest.Decode(t, sink.WaitReply(t, wait, `"e"`)); !strings.Contains(string(d.Result), `"version":"2025-06-18"`) {
		t.Fatalf("negotiated version not sent: %s", d.Result)
	}
	s.Close()
	waitFor(t, "DELETE", func() bool { _, _, del := f.record(); return slices.Equal(del, []string{"sess-1"}) })
	methods, sids, _ := f.record()
	if want := []string{"initialize", "notifications/initialized", "sse", "echo"}; !slices.Equal(methods, want) {
		t.Fatalf("server saw %v, want %v (in order)", methods, want)
	}
	if want := []string{"", "sess-1", "sess-1", "sess-1"}; !slices.Equal(sids, want) {
		t.Fatalf("session ids %v, want %v", sids, want)
	}
}

// Two sessions each keep their own upstream session.
func TestSessionsKeepTheirIDs(t *testing.T) {
	f := newFakeServer(t, false)
	u := newUp(t, []string{f.URL()}, 0, nil)
	a, sinkA := pooltest.Open(t, u)
	pooltest.Send(t, a, fakeInit)
	sinkA.WaitReply(t, wait, `0`)
	b, sinkB := pooltest.Open(t, u)
	pooltest.Send(t, b, fakeInit)
	sinkB.WaitReply(t, wait, `0`)
	pooltest.Send(t, a, `{"jsonrpc":"2.0","id":1,"method":"echo"}`)
	sinkA.WaitReply(t, wait, `1`)
	pooltest.Send(t, b, `{"jsonrpc":"2.0","id":1,"method":"echo"}`)
	sinkB.WaitReply(t, wait, `1`)
	_, sids, _ := f.record()
	if want := []string{"", "", "sess-1", "sess-2"}; !slices.Equal(sids, want) {
		t.Fatalf("session ids %v, want %v", sids, want)
	}
}

// The upstream forgets the session (404): in-flight requests get -32603
// and the connection is failed 1011.
func TestSessionExpired(t *testing.T) {
	f := newFakeServer(t, false)
	u := newUp(t, []string{f.URL()}, 0, nil)
	s, sink := pooltest.Open(t, u)
	pooltest.Send(t, s, fakeInit)
	sink.WaitReply(t, wait, `0`)
	f.expire("sess-1")
	pooltest.Send(t, s, `{"jsonrpc":"2.0","id":"after","method":"echo"}`)
	if d := pooltest.Decode(t, sink.WaitReply(t, wait, `"after"`)); d.Error == nil || d.Error.Code != -32603 {
		t.Fatalf("%+v", d)
	}
	if code, _ := sink.WaitFail(t, wait); code != 1011 {
		t.Fatalf("Fail(%d)", code)
	}
	if err := s.Send(upstream.GetBuffer(2)); !errors.Is(err, upstream.ErrClosed) {
		t.Fatalf("Send after death: %v", err)
	}
}

func TestRequestTimeout(t *testing.T) {
	f := newFakeServer(t, true)
	m := metrics.New()
	u := newUp(t, []string{f.URL()}, 300*time.Millisecond, m)
	s, sink := pooltest.Open(t, u)
	pooltest.Send(t, s, `{"jsonrpc":"2.0","id":"slow","method":"sleep","params":{"ms":800}}`)
	d := pooltest.Decode(t, sink.WaitReply(t, wait, `"slow"`))
	if d.Error == nil || d.Error.Code != -31504 || d.Error.Message != "Upstream timeout" {
		t.Fatalf("%+v", d)
	}
	waitFor(t, "cancellation sent", func() bool {
		methods, _, _ := f.record()
		return slices.Contains(methods, "notifications/cancelled")
	})
	time.Sleep(700 * time.Millisecond)
	if msgs := sink.Messages(); len(msgs) != 1 {
		t.Fatalf("late reply delivered:\n%s", pooltest.Dump(msgs))
	}
	if v := value(t, m.UpstreamErrors.WithLabelValues("h", "timeout")); v != 1 {
		t.Fatalf("timeouts = %v", v)
	}
}

// Stateless requests to a stateless server: no session, ids restored,
// upstream errors passed on with the client's id, the version header set.
func TestRequestModeStateless(t *testing.T) {
	f := newFakeServer(t, true)
	u := newUp(t, []string{f.URL()}, 0, nil)
	s, sink := pooltest.Open(t, u)
	pooltest.Send(t, s, `{"jsonrpc":"2.0","id":1e2,"method":"echo","params":{"message":"a","_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}`)
	if d := pooltest.Decode(t, sink.WaitReply(t, wait, `1e2`)); !strings.Contains(string(d.Result), `"version":"2026-07-28"`) {
		t.Fatalf("%s", d.Result)
	}
	pooltest.Send(t, s, `{"jsonrpc":"2.0","id":"nf","method":"nope"}`)
	if d := pooltest.Decode(t, sink.WaitReply(t, wait, `"nf"`)); d.Error == nil || d.Error.Code != -32601 {
		t.Fatalf("%+v", d)
	}
	pooltest.Send(t, s, `{"jsonrpc":"2.0","id":"500","method":"fail"}`)
	if d := pooltest.Decode(t, sink.WaitReply(t, wait, `"500"`)); d.Error == nil || d.Error.Message != "Upstream HTTP 500" {
		t.Fatalf("%+v", d)
	}
	pooltest.Send(t, s, `[{"jsonrpc":"2.0","id":"b1","method":"echo"},{"jsonrpc":"2.0","id":"b2","method":"sse"}]`)
	batch := sink.WaitFor(t, wait, "batch", func(m []byte) bool { return m[0] == '[' })
	if !strings.Contains(string(batch), `"id":"b1"`) || !strings.Contains(string(batch), `"id":"b2"`) {
		t.Fatalf("batch reply %s", batch)
	}
	_, sids, _ := f.record()
	for _, sid := range sids {
		if sid != "" {
			t.Fatalf("a session id was sent to a stateless server: %v", sids)
		}
	}
	if k := u.targets[0].kind.Load(); k != kindStateless {
		t.Fatalf("kind %d", k)
	}
}
