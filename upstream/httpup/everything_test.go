package httpup

import (
	"fmt"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/mcpgate/gateway/metrics"
	"github.com/mcpgate/gateway/upstream/pool/pooltest"
)

// Tests against the reference server @modelcontextprotocol/server-everything
// (test/peers), run over Streamable HTTP.

func TestEverythingSession(t *testing.T) {
	ev := startEverything(t)
	m := metrics.New()
	u := newUp(t, []string{ev.url}, 0, m)
	s, sink := pooltest.Open(t, u)
	pooltest.Initialize(t, s, sink, wait)

	pooltest.EverythingCalls(t, s, sink, wait)

	for _, kind := range []string{"protocol", "late_reply", "unrouted", "http", "status"} {
		if v := value(t, m.UpstreamErrors.WithLabelValues("h", kind)); v != 0 {
			t.Errorf("%s errors = %v", kind, v)
		}
	}
	if v := value(t, m.UpstreamRequests.WithLabelValues("h")); v != 5 {
		t.Errorf("requests = %v, want 5", v)
	}
	// The client leaves: the upstream session is DELETEd.
	s.Close()
	waitFor(t, "DELETE of the session", func() bool {
		return strings.Contains(ev.out.String(), "Received session termination request")
	})
}

func TestEverythingSessionsDoNotCross(t *testing.T) {
	ev := startEverything(t)
	u := newUp(t, []string{ev.url}, 0, nil)
	var wg sync.WaitGroup
	sinks := make([]*pooltest.Sink, 2)
	for i := range sinks {
		s, sink := pooltest.Open(t, u)
		sinks[i] = sink
		wg.Add(1)
		go func() {
			defer wg.Done()
			pooltest.Initialize(t, s, sink, wait)
			pooltest.Send(t, s, fmt.Sprintf(`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"trigger-long-running-operation","arguments":{"duration":1,"steps":4},"_meta":{"progressToken":"tok-%d"}}}`, i))
			sink.WaitReply(t, wait, `1`)
		}()
	}
	wg.Wait()
	for i, sink := range sinks {
		mine := 0
		for _, m := range sink.Messages() {
			if pooltest.IsMethod(m, "notifications/progress") {
				if !strings.Contains(string(m), fmt.Sprintf(`"tok-%d"`, i)) {
					t.Fatalf("sink %d got another session's notification: %s", i, m)
				}
				mine++
			}
		}
		if mine != 4 {
			t.Fatalf("sink %d: %d progress notifications, want 4", i, mine)
		}
	}
}

// Stateless clients reach a server that only speaks sessions: the gateway
// opens one shared session on its URL and every connection gets its own
// answer, with its own id.
func TestEverythingRequestMode(t *testing.T) {
	ev := startEverything(t)
	u := newUp(t, []string{ev.url}, 0, nil)
	const n = 20
	sinks := make([]*pooltest.Sink, n)
	var wg sync.WaitGroup
	for i := range sinks {
		s, sink := pooltest.Open(t, u)
		sinks[i] = sink
		wg.Add(1)
		go func() {
			defer wg.Done()
			pooltest.Send(t, s, fmt.Sprintf(`{"jsonrpc":"2.0","id":"q-%d","method":"tools/call","params":{"name":"echo","arguments":{"message":"m%d"},"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}`, i, i))
		}()
	}
	wg.Wait()
	for i, sink := range sinks {
		if got := pooltest.EchoText(t, sink.WaitReply(t, wait, fmt.Sprintf(`"q-%d"`, i))); got != fmt.Sprintf("Echo: m%d", i) {
			t.Fatalf("conn %d: %q", i, got)
		}
	}
	if k := u.targets[0].kind.Load(); k != kindLegacy {
		t.Fatalf("target kind %d, want legacy (shared session)", k)
	}
}

// The server dies in the middle of a session's request: the request gets
// -32603, then the connection is failed 1011.
func TestEverythingServerKilled(t *testing.T) {
	ev := startEverything(t)
	u := newUp(t, []string{ev.url}, 0, nil)
	s, sink := pooltest.Open(t, u)
	pooltest.Initialize(t, s, sink, wait)
	pooltest.Send(t, s, `{"jsonrpc":"2.0","id":"long","method":"tools/call","params":{"name":"trigger-long-running-operation","arguments":{"duration":30,"steps":30},"_meta":{"progressToken":1}}}`)
	sink.WaitFor(t, wait, "first progress", func(m []byte) bool { return pooltest.IsMethod(m, "notifications/progress") })
	_ = syscall.Kill(-ev.cmd.Process.Pid, syscall.SIGKILL)
	if d := pooltest.Decode(t, sink.WaitReply(t, wait, `"long"`)); d.Error == nil || d.Error.Code != -32603 {
		t.Fatalf("want -32603, got %+v", d)
	}
	if code, reason := sink.WaitFail(t, wait); code != 1011 || reason != "Upstream worker died" {
		t.Fatalf("Fail(%d, %q)", code, reason)
	}
}
