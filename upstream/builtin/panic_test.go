package builtin

import (
	"bytes"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/mcpgate/gateway/metrics"
)

// failSink records Fail; its Deliver panics while panics is above zero.
type failSink struct {
	fakeSink
	mu     sync.Mutex
	panics int
	code   uint16
	reason string
	failed chan struct{}
}

func newFailSink(panics int) *failSink {
	return &failSink{panics: panics, failed: make(chan struct{}, 1)}
}

func (f *failSink) Deliver(msg []byte) {
	f.mu.Lock()
	p := f.panics > 0
	f.panics--
	f.mu.Unlock()
	if p {
		panic("sink blew up")
	}
	f.fakeSink.Deliver(msg)
}

func (f *failSink) Fail(code uint16, reason string) {
	f.mu.Lock()
	f.code, f.reason = code, reason
	f.mu.Unlock()
	select {
	case f.failed <- struct{}{}:
	default:
	}
}

func (f *failSink) waitFail(t *testing.T) (uint16, string) {
	t.Helper()
	select {
	case <-f.failed:
	case <-time.After(5 * time.Second):
		t.Fatal("the connection was not failed")
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.code, f.reason
}

const echoMsg = `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"message":"hi"}}}`

// SPEC 10: a panic while a worker handles one message closes that message's
// connection with 1011 and is counted; the worker (the only one) goes on
// answering the other connections.
func TestWorkerPanicFailsOneConnection(t *testing.T) {
	m := metrics.New()
	var logs bytes.Buffer
	s := New("demo", 1, 16, WithMetrics(m), WithLogger(slog.New(slog.NewJSONHandler(&logs, nil))))
	defer s.Close()
	bad := newFailSink(1)
	good := &fakeSink{}
	a, _ := s.Open(bad)
	b, _ := s.Open(good)
	if err := send(t, a, echoMsg); err != nil {
		t.Fatal(err)
	}
	if code, reason := bad.waitFail(t); code != 1011 || reason != "Internal error" {
		t.Fatalf("failed with %d %q, want 1011 \"Internal error\"", code, reason)
	}
	if err := send(t, b, echoMsg); err != nil {
		t.Fatal(err)
	}
	if got := good.wait(t, 1); !strings.Contains(got[0], "Echo: hi") {
		t.Fatalf("after the panic: %s", got[0])
	}
	if n := testutil.ToFloat64(m.Panics.WithLabelValues("builtin")); n != 1 {
		t.Fatalf("gateway_panics_total{site=builtin} = %v, want 1", n)
	}
	if !strings.Contains(logs.String(), `"msg":"panic recovered"`) || strings.Contains(logs.String(), "Echo: hi") {
		t.Fatalf("log: %s", logs.String())
	}
}
