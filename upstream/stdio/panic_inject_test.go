//go:build faultinject

package stdio

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/mcpgate/gateway/fault"
	"github.com/mcpgate/gateway/metrics"
	"github.com/mcpgate/gateway/upstream/pool/pooltest"
)

// SPEC 10, the stdio.line point: a panic while handling a line of a
// session's child fails that session with 1011 "Internal error" and is
// counted; another session goes on. On a shared child the line is dropped
// (its request times out) and the connection stays.
func TestInjectedLinePanic(t *testing.T) {
	t.Cleanup(func() { _ = fault.Set("") })
	m := metrics.New()
	u := newFake(t, 0, 4, 700*time.Millisecond, m, nil)

	a, sinkA := pooltest.Open(t, u)
	b, sinkB := pooltest.Open(t, u)
	pooltest.Send(t, a, fakeInit)
	sinkA.WaitReply(t, wait, `0`)
	pooltest.Send(t, b, fakeInit)
	sinkB.WaitReply(t, wait, `0`)

	if err := fault.Set("stdio.line:1"); err != nil {
		t.Fatal(err)
	}
	pooltest.Send(t, a, `{"jsonrpc":"2.0","id":"a1","method":"echo","params":{"message":"x"}}`)
	waitFor(t, "session a failed", func() bool { _, _, failed := sinkA.Failed(); return failed })
	if code, reason, _ := sinkA.Failed(); code != 1011 || reason != "Internal error" {
		t.Fatalf("session a failed with %d %q", code, reason)
	}
	pooltest.Send(t, b, `{"jsonrpc":"2.0","id":"b1","method":"echo","params":{"message":"y"}}`)
	if d := pooltest.Decode(t, sinkB.WaitReply(t, wait, `"b1"`)); d.Error != nil {
		t.Fatalf("b1: %+v", d.Error)
	}
	if _, _, failed := sinkB.Failed(); failed {
		t.Fatal("session b was failed")
	}
	if n := testutil.ToFloat64(m.Panics.WithLabelValues("upstream")); n != 1 {
		t.Fatalf("gateway_panics_total{site=upstream} = %v, want 1", n)
	}
	a.Close()
	b.Close()

	// Request mode: the answer is lost with its line, the request times
	// out (-31504), the connection stays and its next request is answered.
	c, sinkC := pooltest.Open(t, u)
	if err := fault.Set("stdio.line:1"); err != nil {
		t.Fatal(err)
	}
	pooltest.Send(t, c, `{"jsonrpc":"2.0","id":"c1","method":"echo","params":{"message":"z"}}`)
	if d := pooltest.Decode(t, sinkC.WaitReply(t, wait, `"c1"`)); d.Error == nil || d.Error.Code != -31504 {
		t.Fatalf("c1: %+v", d)
	}
	pooltest.Send(t, c, `{"jsonrpc":"2.0","id":"c2","method":"echo","params":{"message":"z"}}`)
	if d := pooltest.Decode(t, sinkC.WaitReply(t, wait, `"c2"`)); d.Error != nil {
		t.Fatalf("c2: %+v", d.Error)
	}
	if _, _, failed := sinkC.Failed(); failed {
		t.Fatal("a request-mode connection was failed")
	}
	if n := testutil.ToFloat64(m.Panics.WithLabelValues("upstream")); n != 2 {
		t.Fatalf("gateway_panics_total{site=upstream} = %v, want 2", n)
	}
}
