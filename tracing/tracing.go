// Package tracing owns the gateway's OpenTelemetry tracer (SPEC 12): a
// span per relayed request, exported over OTLP/HTTP, continuing the W3C
// traceparent a client put in params._meta and handing the gateway's own
// on to the worker. It holds the process's one tracer; the upstream pools
// ask Active for it and do nothing more when it is nil (tracing off), so
// the relay path costs one atomic load when off. It reads no message and
// touches no connection: callers pass the bytes they already scanned.
package tracing

import (
	"context"

	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.26.0"
	"go.opentelemetry.io/otel/trace"
)

// Config is what the tracer needs from the gateway's config (tracing:).
type Config struct {
	Endpoint    string  // OTLP/HTTP traces URL; "" = off
	SampleRatio float64 // share of new traces sampled; sampled parents always are
	Version     string  // service.version
	// Exporter, when set, replaces the OTLP/HTTP exporter (tests,
	// benchmarks, embedding); Endpoint is then not needed.
	Exporter sdktrace.SpanExporter
}

// Tracer is the running tracer.
type Tracer struct {
	tp *sdktrace.TracerProvider
	t  trace.Tracer
}

var active atomic.Pointer[Tracer]

// Active returns the running tracer, nil when tracing is off.
func Active() *Tracer { return active.Load() }

// Start builds the exporter and the provider and makes them Active. With
// no endpoint it returns nil, nil: tracing stays off.
func Start(c Config) (*Tracer, error) {
	exp := c.Exporter
	if exp == nil {
		if c.Endpoint == "" {
			return nil, nil
		}
		var err error
		exp, err = otlptracehttp.New(context.Background(), otlptracehttp.WithEndpointURL(c.Endpoint),
			otlptracehttp.WithTimeout(5*time.Second))
		if err != nil {
			return nil, err
		}
	}
	res := resource.NewSchemaless(semconv.ServiceName("mcp-gateway"), semconv.ServiceVersion(c.Version))
	tp := sdktrace.NewTracerProvider(
		sdktrace.WithBatcher(exp, sdktrace.WithBatchTimeout(time.Second)),
		sdktrace.WithResource(res),
		sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.TraceIDRatioBased(c.SampleRatio))),
	)
	t := &Tracer{tp: tp, t: tp.Tracer("github.com/mcpgate/gateway")}
	active.Store(t)
	return t, nil
}

// Shutdown flushes the spans still buffered and stops the tracer.
func (t *Tracer) Shutdown(ctx context.Context) error {
	if t == nil {
		return nil
	}
	active.CompareAndSwap(t, nil)
	return t.tp.Shutdown(ctx)
}

// TraceparentLen is the length of a version-00 traceparent value
// ("00-<32 hex>-<16 hex>-<2 hex>").
const TraceparentLen = 55

type carrier map[string]string

func (c carrier) Get(k string) string { return c[k] }
func (c carrier) Set(k, v string)     { c[k] = v }
func (c carrier) Keys() []string {
	out := make([]string, 0, len(c))
	for k := range c {
		out = append(out, k)
	}
	return out
}

var tc propagation.TraceContext

// Request is the span of one relayed request.
type Request struct {
	span  trace.Span
	ended atomic.Bool
	// Traceparent is the gateway span's traceparent, to pass to the worker
	// (an http upstream's header, a stdio message's params._meta); empty
	// when the span is not sampled (nothing to continue).
	Traceparent string
}

// StartRequest starts the span of a request of method to upstream,
// continuing parent (the raw traceparent value from params._meta, without
// quotes; nil or invalid: a new trace).
func (t *Tracer) StartRequest(parent []byte, method, upstream string) *Request {
	ctx := context.Background()
	if len(parent) == TraceparentLen {
		ctx = tc.Extract(ctx, carrier{"traceparent": string(parent)})
	}
	ctx, span := t.t.Start(ctx, "mcp "+method, trace.WithSpanKind(trace.SpanKindClient),
		trace.WithAttributes(attribute.String("rpc.system", "jsonrpc"), attribute.String("rpc.method", method),
			attribute.String("mcp.upstream", upstream)))
	r := &Request{span: span}
	if span.SpanContext().IsSampled() {
		c := carrier{}
		tc.Inject(ctx, c)
		r.Traceparent = c["traceparent"]
	}
	return r
}

// End ends the span once: with the JSON-RPC error code when the answer was
// an error (0: a result), or with why there was no answer.
func (r *Request) End(errCode int, gone string) {
	if r == nil || !r.ended.CompareAndSwap(false, true) {
		return
	}
	switch {
	case gone != "":
		r.span.SetStatus(codes.Error, gone)
	case errCode != 0:
		r.span.SetAttributes(attribute.Int("rpc.jsonrpc.error_code", errCode))
		r.span.SetStatus(codes.Error, "JSON-RPC error")
	}
	r.span.End()
}
