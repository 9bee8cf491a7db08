package pool

import (
	"context"
	"testing"

	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/mcpgate/gateway/tracing"
	"github.com/mcpgate/gateway/upstream"
)

// BenchmarkPrepareTracing: a tools/call prepared for a worker and answered,
// with tracing off (the default: one atomic load more than before) and on
// (a span per request, sampled, exported to memory). Compare the two in one
// run: go test -bench PrepareTracing -benchmem ./upstream/pool
func BenchmarkPrepareTracing(b *testing.B) {
	msg := []byte(`{"jsonrpc":"2.0","id":42,"method":"tools/call","params":{"name":"echo","arguments":{"message":"hi"},` +
		`"_meta":{"traceparent":"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}}}`)
	reply := []byte(`{"jsonrpc":"2.0","id":42,"result":{}}`)
	run := func(b *testing.B) {
		r := NewRoute(&Gate{Name: "bench"}, discardSink{})
		b.ReportAllocs()
		for b.Loop() {
			p := Prepare(r, msg, ModeRequest)
			c := p.Out[0].Call
			c.Reply(reply)
			upstream.PutBuffer(p.Out[0].Msg)
		}
	}
	b.Run("off", run)
	b.Run("on", func(b *testing.B) {
		tr, err := tracing.Start(tracing.Config{SampleRatio: 1, Exporter: tracetest.NewNoopExporter()})
		if err != nil {
			b.Fatal(err)
		}
		defer tr.Shutdown(context.Background())
		run(b)
	})
}

// TestTracingOffAddsNoAllocation: with tracing off, preparing and answering
// a request that carries a traceparent allocates what it did before
// tracing existed (the Call and the worker's message buffer, recycled).
func TestTracingOffAddsNoAllocation(t *testing.T) {
	if tracing.Active() != nil {
		t.Fatal("a tracer is active")
	}
	with := []byte(`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"_meta":{"traceparent":"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}}}`)
	without := []byte(`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"_meta":{"x":"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}}}`)
	r := NewRoute(&Gate{}, discardSink{})
	allocs := func(msg []byte) float64 {
		return testing.AllocsPerRun(200, func() {
			p := Prepare(r, msg, ModeRequest)
			p.Out[0].Call.Reply([]byte(`{"jsonrpc":"2.0","id":1,"result":{}}`))
			upstream.PutBuffer(p.Out[0].Msg)
		})
	}
	if a, b := allocs(with), allocs(without); a != b {
		t.Fatalf("tracing off: %.1f allocations with a traceparent, %.1f without", a, b)
	}
}

type discardSink struct{}

func (discardSink) Deliver([]byte)      {}
func (discardSink) Fail(uint16, string) {}
func (discardSink) Subject() string     { return "s" }
