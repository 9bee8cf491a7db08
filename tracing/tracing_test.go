package tracing

import (
	"context"
	"strings"
	"testing"

	"go.opentelemetry.io/otel/sdk/trace/tracetest"
)

// TestRequestSpan: a span continues a valid parent, hands on its own
// traceparent, ends once (a late second End is ignored), and an invalid
// parent starts a new trace.
func TestRequestSpan(t *testing.T) {
	if Active() != nil {
		t.Fatal("a tracer is active before Start")
	}
	if tr, err := Start(Config{}); tr != nil || err != nil {
		t.Fatalf("Start without an endpoint: %v %v, want off", tr, err)
	}
	exp := tracetest.NewInMemoryExporter()
	tr, err := Start(Config{SampleRatio: 1, Exporter: exp})
	if err != nil || Active() != tr {
		t.Fatalf("Start: %v", err)
	}
	const parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	r := tr.StartRequest([]byte(parent), "tools/call", "up")
	if len(r.Traceparent) != TraceparentLen || !strings.HasPrefix(r.Traceparent, "00-4bf92f3577b34da6a3ce929d0e0e4736-") ||
		strings.Contains(r.Traceparent, "00f067aa0ba902b7") {
		t.Fatalf("traceparent handed on: %q", r.Traceparent)
	}
	r.End(-31504, "")
	r.End(0, "client gone")
	fresh := tr.StartRequest([]byte("00-zz"), "ping", "up")
	fresh.End(0, "")
	if err := tr.tp.ForceFlush(context.Background()); err != nil {
		t.Fatal(err)
	}
	spans := exp.GetSpans() // before Shutdown, which empties the exporter
	if err := tr.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if Active() != nil {
		t.Fatal("still active after Shutdown")
	}
	if len(spans) != 2 {
		t.Fatalf("%d spans exported, want 2 (one End each)", len(spans))
	}
	if spans[0].Parent.SpanID().String() != "00f067aa0ba902b7" || spans[0].Name != "mcp tools/call" {
		t.Errorf("first span %s, parent %s", spans[0].Name, spans[0].Parent.SpanID())
	}
	if spans[1].Parent.IsValid() || spans[1].SpanContext.TraceID().String() == "4bf92f3577b34da6a3ce929d0e0e4736" {
		t.Errorf("an invalid parent was continued")
	}
}
