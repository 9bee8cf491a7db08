package e2e

import (
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mcpgate/gateway/conformance/wsraw"
	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/protobuf/proto"
)

// otlpSpan is what the test receiver keeps of each exported span.
type otlpSpan struct {
	traceID, spanID, parentID, name, upstream string
}

// otlpReceiver is an OTLP/HTTP traces endpoint (protobuf, as the SDK's
// otlptracehttp exporter sends): it decodes every export request with the
// OTLP protobuf types and keeps the spans.
type otlpReceiver struct {
	mu    sync.Mutex
	spans []otlpSpan
}

func (o *otlpReceiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	var req coltracepb.ExportTraceServiceRequest
	if r.URL.Path != "/v1/traces" || proto.Unmarshal(body, &req) != nil {
		http.Error(w, "bad export", http.StatusBadRequest)
		return
	}
	o.mu.Lock()
	for _, rs := range req.ResourceSpans {
		for _, ss := range rs.ScopeSpans {
			for _, s := range ss.Spans {
				sp := otlpSpan{traceID: hex.EncodeToString(s.TraceId), spanID: hex.EncodeToString(s.SpanId),
					parentID: hex.EncodeToString(s.ParentSpanId), name: s.Name}
				for _, a := range s.Attributes {
					if a.Key == "mcp.upstream" {
						sp.upstream = a.Value.GetStringValue()
					}
				}
				o.spans = append(o.spans, sp)
			}
		}
	}
	o.mu.Unlock()
	w.Header().Set("Content-Type", "application/x-protobuf")
	out, _ := proto.Marshal(&coltracepb.ExportTraceServiceResponse{})
	_, _ = w.Write(out)
}

func (o *otlpReceiver) find(pred func(otlpSpan) bool) (otlpSpan, bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, s := range o.spans {
		if pred(s) {
			return s, true
		}
	}
	return otlpSpan{}, false
}

// traceWorker is a stdio MCP worker that answers every request with the
// params._meta it received, so the test sees the traceparent passed on.
const traceWorker = `import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if "id" not in m or "method" not in m:
        continue
    if m["method"] == "initialize":
        r = {"protocolVersion": "2025-06-18", "capabilities": {}, "serverInfo": {"name": "t", "version": "1"}}
    else:
        r = {"meta": m.get("params", {}).get("_meta", {})}
    sys.stdout.write(json.dumps({"jsonrpc": "2.0", "id": m["id"], "result": r}) + "\n")
    sys.stdout.flush()
`

// TestTracing (SPEC 12): with tracing.otlp_endpoint set, each relayed
// request is a span exported over OTLP/HTTP to a real receiver, continuing
// the client's params._meta.traceparent (same trace id, the client's span
// as parent); the worker gets the gateway's span as its parent: in the
// traceparent header (http upstream) or in params._meta (stdio upstream).
func TestTracing(t *testing.T) {
	recv := &otlpReceiver{}
	collector := httptest.NewServer(recv)
	defer collector.Close()

	var hmu sync.Mutex
	var headers []string
	mcpHTTP := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var m struct {
			ID     json.RawMessage `json:"id"`
			Method string          `json:"method"`
		}
		body, _ := io.ReadAll(r.Body)
		if json.Unmarshal(body, &m) != nil || m.ID == nil {
			w.WriteHeader(http.StatusAccepted)
			return
		}
		hmu.Lock()
		if m.Method == "tools/call" {
			headers = append(headers, r.Header.Get("Traceparent"))
		}
		hmu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		result := `{}`
		if m.Method == "initialize" {
			result = `{"protocolVersion":"2025-06-18","capabilities":{},"serverInfo":{"name":"h","version":"1"}}`
		}
		fmt.Fprintf(w, `{"jsonrpc":"2.0","id":%s,"result":%s}`, m.ID, result)
	}))
	defer mcpHTTP.Close()

	g := &gateway{wsraw.LaunchOnFreePorts(t, gatewayBin, func(addr, admin string) wsraw.Spec {
		cfg := baseConfig(addr, admin)
		cfg["tracing"] = fmt.Sprintf("\n  otlp_endpoint: %q\n  sample_ratio: 1.0", collector.URL+"/v1/traces")
		cfg["upstreams"] = fmt.Sprintf(`
  - {name: py, type: stdio, command: ["python3", "worker.py"], max: 2}
  - {name: web, type: http, urls: [%q]}`, mcpHTTP.URL+"/mcp")
		cfg["routes"] = `
  - {path: /s, upstream: py}
  - {path: /h, upstream: web}`
		return wsraw.Spec{Addr: addr, Admin: admin, Config: cfg, LogLimit: -1,
			Files: map[string]string{
				"tokens.txt":  sha(aliceToken) + " alice\n",
				"jwt.key":     jwtSecret + "\n",
				"admin.token": adminToken + "\n",
				"worker.py":   traceWorker,
			}}
	})}

	const traceID, clientSpan = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
	call := func(path string, withParent bool) string {
		t.Helper()
		r := authOver(t, g.raw(t, path), aliceToken)
		meta := ""
		if withParent {
			meta = fmt.Sprintf(`,"_meta":{"traceparent":"00-%s-%s-01"}`, traceID, clientSpan)
		}
		r.sendText(`{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"x","arguments":{}` + meta + `}}`)
		return r.readText()
	}

	stdioReply := call("/s", true)
	call("/h", true)
	call("/h", false) // no parent: a new trace, sampled at ratio 1

	span := func(upstream string, parent bool) otlpSpan {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			s, ok := recv.find(func(s otlpSpan) bool {
				return s.upstream == upstream && s.name == "mcp tools/call" &&
					(s.traceID == traceID && s.parentID == clientSpan) == parent
			})
			if ok {
				return s
			}
			if time.Now().After(deadline) {
				recv.mu.Lock()
				defer recv.mu.Unlock()
				t.Fatalf("no span for %s (continuing the client's: %v); got %+v\n%s", upstream, parent, recv.spans, g.Logs())
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	sStdio := span("py", true)
	sHTTP := span("web", true)
	span("web", false)

	// The stdio worker got the gateway's span as its parent, in _meta.
	want := fmt.Sprintf("00-%s-%s-01", traceID, sStdio.spanID)
	if !strings.Contains(stdioReply, `"traceparent": "`+want+`"`) && !strings.Contains(stdioReply, `"traceparent":"`+want+`"`) {
		t.Errorf("stdio worker saw %s, want traceparent %s", stdioReply, want)
	}
	// The http server got it in the traceparent header.
	hmu.Lock()
	defer hmu.Unlock()
	if len(headers) < 2 || headers[0] != fmt.Sprintf("00-%s-%s-01", traceID, sHTTP.spanID) {
		t.Errorf("http upstream saw traceparent headers %q, want 00-%s-%s-01 first", headers, traceID, sHTTP.spanID)
	}
}
