package stdio

import (
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mcpgate/gateway/config"
	"github.com/mcpgate/gateway/upstream"
	"github.com/mcpgate/gateway/upstream/pool/pooltest"
)

// Tests against the reference server @modelcontextprotocol/server-everything
// (test/peers), run over stdio.

const wait = 20 * time.Second

func newEverything(t *testing.T, minIdle, maxN int) *Upstream {
	t.Helper()
	peer := pooltest.Peer(t)
	u, err := New(config.Upstream{Name: "everything", Type: "stdio",
		Command: []string{"node", peer, "stdio"}, MinIdle: minIdle, Max: maxN, MaxPerSubject: maxN}, nil, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { u.Close() })
	return u
}

func TestEverythingSession(t *testing.T) {
	u := newEverything(t, 1, 4)
	s, sink := pooltest.Open(t, u)
	pooltest.Initialize(t, s, sink, wait)

	pooltest.EverythingCalls(t, s, sink, wait)
	if st := u.Stats(); st.Total < 2 || st.Total > 4 {
		t.Fatalf("pool: %+v, want the session's child plus a warm one", st)
	}
}

func TestEverythingSessionsDoNotCross(t *testing.T) {
	u := newEverything(t, 2, 4)
	var wg sync.WaitGroup
	sinks := make([]*pooltest.Sink, 2)
	for i := range sinks {
		s, sink := pooltest.Open(t, u)
		sinks[i] = sink
		wg.Add(1)
		go func() {
			defer wg.Done()
			pooltest.Initialize(t, s, sink, wait)
			// The same request id on both: routing must not go by id.
			pooltest.Send(t, s, fmt.Sprintf(`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"trigger-long-running-operation","arguments":{"duration":1,"steps":4},"_meta":{"progressToken":"tok-%d"}}}`, i))
			sink.WaitReply(t, wait, `1`)
		}()
	}
	wg.Wait()
	for i, sink := range sinks {
		mine, replies := 0, 0
		for _, m := range sink.Messages() {
			if pooltest.IsMethod(m, "notifications/progress") {
				if !strings.Contains(string(m), fmt.Sprintf(`"tok-%d"`, i)) {
					t.Fatalf("sink %d got another session's notification: %s", i, m)
				}
				mine++
			}
			if pooltest.RawID(m) == "1" {
				replies++
			}
		}
		if mine != 4 || replies != 1 {
			t.Fatalf("sink %d: %d progress, %d replies; want 4 and 1", i, mine, replies)
		}
	}
}

// Fifty stateless connections share two children, and each gets its own
// id back, with its own answer.
func TestEverythingRequestModeSharedPool(t *testing.T) {
	u := newEverything(t, 0, 2)
	const n = 50
	type conn struct {
		s    upstream.Session
		sink *pooltest.Sink
		id   string
	}
	conns := make([]conn, n)
	for i := range conns {
		s, sink := pooltest.Open(t, u)
		id := fmt.Sprintf(`"req-%d"`, i)
		switch i % 3 {
		case 1:
			id = fmt.Sprintf("%d", 1000+i)
		case 2:
			id = fmt.Sprintf("%d.0", i) // a number as written, not as parsed
		}
		conns[i] = conn{s, sink, id}
	}
	var wg sync.WaitGroup
	for i, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			pooltest.Send(t, c.s, fmt.Sprintf(`{"jsonrpc":"2.0","id":%s,"method":"tools/call","params":{"name":"echo","arguments":{"message":"m%d"},"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}`, c.id, i))
		}()
	}
	wg.Wait()
	for i, c := range conns {
		if got := pooltest.EchoText(t, c.sink.WaitReply(t, wait, c.id)); got != fmt.Sprintf("Echo: m%d", i) {
			t.Fatalf("conn %d got %q", i, got)
		}
		if msgs := c.sink.Messages(); len(msgs) != 1 {
			t.Fatalf("conn %d got %d messages:\n%s", i, len(msgs), pooltest.Dump(msgs))
		}
	}
	if st := u.Stats(); st.Total > 2 {
		t.Fatalf("pool grew past max: %+v", st)
	}
}

// Two stateless connections on one shared child use the same progress
// token: the gateway's tokens keep their notifications apart.
func TestEverythingRequestModeProgress(t *testing.T) {
	u := newEverything(t, 0, 1)
	sinks := make([]*pooltest.Sink, 2)
	for i := range sinks {
		s, sink := pooltest.Open(t, u)
		sinks[i] = sink
		pooltest.Send(t, s, fmt.Sprintf(`{"jsonrpc":"2.0","id":"x","method":"tools/call","params":{"name":"trigger-long-running-operation","arguments":{"duration":1,"steps":%d},"_meta":{"progressToken":"t","io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}`, 2+i))
	}
	for i, sink := range sinks {
		sink.WaitReply(t, wait, `"x"`)
		n := 0
		for _, m := range sink.Messages() {
			if pooltest.IsMethod(m, "notifications/progress") {
				if !strings.Contains(string(m), `"progressToken":"t"`) {
					t.Fatalf("token not restored: %s", m)
				}
				n++
			}
		}
		if n != 2+i {
			t.Fatalf("sink %d: %d progress notifications, want %d", i, n, 2+i)
		}
	}
}

// The session's child is killed in the middle of a request: the request
// gets -32603 with its id, then the connection is failed 1011, and the
// pool replaces the child.
func TestEverythingWorkerKilled(t *testing.T) {
	u := newEverything(t, 1, 2)
	s, sink := pooltest.Open(t, u)
	pooltest.Initialize(t, s, sink, wait)
	pooltest.Send(t, s, `{"jsonrpc":"2.0","id":"long","method":"tools/call","params":{"name":"trigger-long-running-operation","arguments":{"duration":30,"steps":30},"_meta":{"progressToken":1}}}`)
	sink.WaitFor(t, wait, "first progress", func(m []byte) bool { return pooltest.IsMethod(m, "notifications/progress") })
	killPID(t, s.(*session).child.PID())
	reply := pooltest.Decode(t, sink.WaitReply(t, wait, `"long"`))
	if reply.Error == nil || reply.Error.Code != -32603 {
		t.Fatalf("want -32603, got %+v", reply)
	}
	if code, reason := sink.WaitFail(t, wait); code != 1011 || reason != "Upstream worker died" {
		t.Fatalf("Fail(%d, %q)", code, reason)
	}
	waitFor(t, "pool refilled", func() bool { st := u.Stats(); return st.Idle == 1 && st.Total == 1 })
}
