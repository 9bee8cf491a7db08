//go:build faultinject

package httpup

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/mcpgate/gateway/fault"
	"github.com/mcpgate/gateway/metrics"
	"github.com/mcpgate/gateway/upstream/pool/pooltest"
)

// SPEC 10, the http.response point: a panic while an exchange reads its
// answer fails that exchange's connection with 1011 "Internal error" and is
// counted; the other connections are served. Session and request mode.
func TestInjectedResponsePanic(t *testing.T) {
	t.Cleanup(func() { _ = fault.Set("") })
	set := func(spec string) {
		t.Helper()
		if err := fault.Set(spec); err != nil {
			t.Fatal(err)
		}
	}
	m := metrics.New()
	panics := func() float64 { return testutil.ToFloat64(m.Panics.WithLabelValues("upstream")) }

	u := newUp(t, []string{newFakeServer(t, false).URL()}, 0, m)
	a, sinkA := pooltest.Open(t, u)
	b, sinkB := pooltest.Open(t, u)
	pooltest.Send(t, a, fakeInit)
	sinkA.WaitReply(t, wait, `0`)
	pooltest.Send(t, b, fakeInit)
	sinkB.WaitReply(t, wait, `0`)
	set("http.response:1")
	pooltest.Send(t, a, `{"jsonrpc":"2.0","id":"a1","method":"echo","params":{"message":"x"}}`)
	waitFor(t, "session a failed", func() bool { _, _, failed := sinkA.Failed(); return failed })
	if code, reason, _ := sinkA.Failed(); code != 1011 || reason != "Internal error" {
		t.Fatalf("session a failed with %d %q", code, reason)
	}
	pooltest.Send(t, b, `{"jsonrpc":"2.0","id":"b1","method":"echo","params":{"message":"y"}}`)
	if d := pooltest.Decode(t, sinkB.WaitReply(t, wait, `"b1"`)); d.Error != nil {
		t.Fatalf("b1: %+v", d.Error)
	}
	if panics() != 1 {
		t.Fatalf("gateway_panics_total{site=upstream} = %v, want 1", panics())
	}

	r := newUp(t, []string{newFakeServer(t, true).URL()}, 0, m)
	c, sinkC := pooltest.Open(t, r)
	d, sinkD := pooltest.Open(t, r)
	set("http.response:1")
	pooltest.Send(t, c, `{"jsonrpc":"2.0","id":"c1","method":"echo","params":{"message":"x"}}`)
	waitFor(t, "connection c failed", func() bool { _, _, failed := sinkC.Failed(); return failed })
	if code, reason, _ := sinkC.Failed(); code != 1011 || reason != "Internal error" {
		t.Fatalf("connection c failed with %d %q", code, reason)
	}
	pooltest.Send(t, d, `{"jsonrpc":"2.0","id":"d1","method":"echo","params":{"message":"y"}}`)
	if dd := pooltest.Decode(t, sinkD.WaitReply(t, wait, `"d1"`)); dd.Error != nil {
		t.Fatalf("d1: %+v", dd.Error)
	}
	if _, _, failed := sinkD.Failed(); failed {
		t.Fatal("connection d was failed")
	}
	if panics() != 2 {
		t.Fatalf("gateway_panics_total{site=upstream} = %v, want 2", panics())
	}
}
