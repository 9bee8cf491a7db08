//go:build faultinject

package builtin

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/mcpgate/gateway/fault"
	"github.com/mcpgate/gateway/mcp"
	"github.com/mcpgate/gateway/metrics"
	"github.com/mcpgate/gateway/upstream"
)

// The builtin.handle point, inline on the caller's goroutine (an event
// loop) and on a worker: the connection is failed with 1011, nothing is
// answered, and the next message is answered as usual.
func TestInjectedHandlePanic(t *testing.T) {
	t.Cleanup(func() { _ = fault.Set("") })
	m := metrics.New()
	s := New("demo", 1, 16, WithMetrics(m))
	defer s.Close()

	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(fault.Set("builtin.handle:1"))
	sink := newFailSink(0)
	ss, _ := s.Open(sink)
	env, err := mcp.Scan([]byte(echoMsg))
	must(err)
	reply, ok := ss.(upstream.Inline).HandleInline(make([]byte, 4, 64), []byte(echoMsg), env)
	if !ok || len(reply) != 4 {
		t.Fatalf("inline panic: ok %v, reply %q", ok, reply)
	}
	if code, reason := sink.waitFail(t); code != fault.Code || reason != fault.Reason {
		t.Fatalf("failed with %d %q", code, reason)
	}
	reply, ok = ss.(upstream.Inline).HandleInline(nil, []byte(echoMsg), env)
	if !ok || !strings.Contains(string(reply), "Echo: hi") {
		t.Fatalf("after the panic: ok %v, reply %q", ok, reply)
	}

	must(fault.Set("builtin.handle:1"))
	sink2 := newFailSink(0)
	ss2, _ := s.Open(sink2)
	must(send(t, ss2, echoMsg))
	if code, _ := sink2.waitFail(t); code != 1011 {
		t.Fatalf("worker panic: failed with %d", code)
	}
	good := &fakeSink{}
	ss3, _ := s.Open(good)
	must(send(t, ss3, echoMsg))
	good.wait(t, 1)
	if got := sink2.messages(); len(got) != 0 {
		t.Fatalf("the panicking message was answered: %q", got)
	}
	if n := testutil.ToFloat64(m.Panics.WithLabelValues("builtin")); n != 2 {
		t.Fatalf("gateway_panics_total{site=builtin} = %v, want 2", n)
	}
}
