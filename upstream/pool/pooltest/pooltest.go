// Package pooltest owns the test helpers of the upstream pools: a recording
// upstream.Sink, and where the real MCP peers of test/peers are installed.
// Only tests import it.
package pooltest

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mcpgate/gateway/mcp"
	"github.com/mcpgate/gateway/upstream"
)

// Sink records what an upstream delivers to one connection.
type Sink struct {
	mu     sync.Mutex
	msgs   [][]byte
	failed bool
	code   uint16
	reason string
	// AfterFail counts messages delivered after Fail (must stay 0).
	AfterFail int
	// Principal is what Subject returns ("" by default); set it before Open.
	Principal string
	wake      chan struct{}
}

// NewSink returns an empty sink.
func NewSink() *Sink { return &Sink{wake: make(chan struct{}, 1)} }

// Deliver copies msg (it is only valid during the call).
func (s *Sink) Deliver(msg []byte) {
	s.mu.Lock()
	s.msgs = append(s.msgs, append([]byte(nil), msg...))
	if s.failed {
		s.AfterFail++
	}
	s.mu.Unlock()
	s.poke()
}

// Subject returns Principal.
func (s *Sink) Subject() string { return s.Principal }

// Fail records the close code and reason.
func (s *Sink) Fail(code uint16, reason string) {
	s.mu.Lock()
	if !s.failed {
		s.failed, s.code, s.reason = true, code, reason
	}
	s.mu.Unlock()
	s.poke()
}

func (s *Sink) poke() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// Messages returns a copy of what was delivered so far.
func (s *Sink) Messages() [][]byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([][]byte(nil), s.msgs...)
}

// Failed returns the close code and reason, if Fail was called.
func (s *Sink) Failed() (uint16, string, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.code, s.reason, s.failed
}

// WaitFor waits until a delivered message satisfies match, and returns it.
func (s *Sink) WaitFor(t testing.TB, d time.Duration, what string, match func(msg []byte) bool) []byte {
	t.Helper()
	deadline := time.After(d)
	seen := 0
	for {
		msgs := s.Messages()
		for _, m := range msgs[seen:] {
			if match(m) {
				return m
			}
		}
		seen = len(msgs)
		select {
		case <-s.wake:
		case <-deadline:
			t.Fatalf("timed out after %v waiting for %s; got %d messages:\n%s", d, what, len(msgs), Dump(msgs))
		}
	}
}

// WaitReply waits for the response whose raw id is exactly id.
func (s *Sink) WaitReply(t testing.TB, d time.Duration, id string) []byte {
	t.Helper()
	return s.WaitFor(t, d, "reply with id "+id, func(m []byte) bool {
		env, err := mcp.Scan(m)
		return err == nil && env.Kind == mcp.KindResponse && string(env.ID) == id
	})
}

// WaitFail waits for Fail and returns its code and reason.
func (s *Sink) WaitFail(t testing.TB, d time.Duration) (uint16, string) {
	t.Helper()
	deadline := time.After(d)
	for {
		if code, reason, ok := s.Failed(); ok {
			return code, reason
		}
		select {
		case <-s.wake:
		case <-deadline:
			t.Fatalf("timed out after %v waiting for Fail; got:\n%s", d, Dump(s.Messages()))
		}
	}
}

// Dump formats messages for a failure report.
func Dump(msgs [][]byte) string {
	var b strings.Builder
	for _, m := range msgs {
		if len(m) > 300 {
			m = append(m[:300:300], "..."...)
		}
		fmt.Fprintf(&b, "  %s\n", m)
	}
	return b.String()
}

// Decoded is the parts of a JSON-RPC message tests look at.
type Decoded struct {
	ID     json.RawMessage `json:"id"`
	Method string          `json:"method"`
	Params json.RawMessage `json:"params"`
	Result json.RawMessage `json:"result"`
	Error  *struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
		Data    struct {
			RetryAfterMS *int64 `json:"retry_after_ms"`
			Reason       string `json:"reason"`
		} `json:"data"`
	} `json:"error"`
}

// Decode parses msg or fails the test.
func Decode(t testing.TB, msg []byte) Decoded {
	t.Helper()
	var d Decoded
	if err := json.Unmarshal(msg, &d); err != nil {
		t.Fatalf("bad JSON %q: %v", msg, err)
	}
	return d
}

// IsMethod reports whether msg is a notification or request with method m.
func IsMethod(msg []byte, m string) bool {
	env, err := mcp.Scan(msg)
	return err == nil && (env.Kind == mcp.KindNotification || env.Kind == mcp.KindRequest) && env.MethodIs(m)
}

// RawID returns the raw id of msg ("" if none).
func RawID(msg []byte) string {
	env, _ := mcp.Scan(msg)
	return string(env.ID)
}

// Peer returns the path of server-everything's dist/index.js in
// test/peers. Without it (npm ci --prefix test/peers not run) the test is
// skipped, or fails when CI=true: CI must run the real peers.
func Peer(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			break
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("go.mod not found above the test directory")
		}
		dir = parent
	}
	p := filepath.Join(dir, "test", "peers", "node_modules", "@modelcontextprotocol", "server-everything", "dist", "index.js")
	_, statErr := os.Stat(p)
	_, nodeErr := exec.LookPath("node")
	if statErr != nil || nodeErr != nil {
		msg := "real MCP peer not installed (run: npm ci --prefix test/peers; node must be on PATH)"
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	return p
}

// FreePort returns a TCP port free on 127.0.0.1 at the time of the call,
// below the usual ephemeral range (32768 and up on Linux), so that an
// outgoing connection is unlikely to take it before a server binds it.
func FreePort(t testing.TB) int {
	t.Helper()
	for range 100 {
		port := 20000 + rand.IntN(12000)
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err == nil {
			l.Close()
			return port
		}
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// Send hands msg to s through a pooled buffer, as the reactor does.
func Send(t testing.TB, s upstream.Session, msg string) {
	t.Helper()
	buf := upstream.GetBuffer(len(msg))
	copy(buf, msg)
	if err := s.Send(buf); err != nil {
		t.Fatalf("Send(%s): %v", msg, err)
	}
}

// Open starts a session on u with a recording Sink; it is closed at cleanup.
func Open(t testing.TB, u upstream.Upstream) (upstream.Session, *Sink) {
	t.Helper()
	sink := NewSink()
	s, err := u.Open(sink)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s, sink
}

// InitMsg is a session-mode initialize request with id "init-1".
const InitMsg = `{"jsonrpc":"2.0","id":"init-1","method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"test","version":"1"}}}`

// Initialize runs the MCP initialize handshake on s.
func Initialize(t *testing.T, s upstream.Session, sink *Sink, wait time.Duration) {
	t.Helper()
	Send(t, s, InitMsg)
	d := Decode(t, sink.WaitReply(t, wait, `"init-1"`))
	if d.Error != nil || !strings.Contains(string(d.Result), `"protocolVersion"`) {
		t.Fatalf("initialize: %s", d.Result)
	}
	Send(t, s, `{"jsonrpc":"2.0","method":"notifications/initialized"}`)
}

// EchoText is the text of the first content item of a tools/call result.
func EchoText(t *testing.T, msg []byte) string {
	t.Helper()
	var r struct {
		Content []struct{ Text string } `json:"content"`
	}
	d := Decode(t, msg)
	if d.Error != nil {
		t.Fatalf("error reply: %s", msg)
	}
	if err := json.Unmarshal(d.Result, &r); err != nil || len(r.Content) == 0 {
		t.Fatalf("no content in %s", msg)
	}
	return r.Content[0].Text
}

// EverythingCalls runs, on an initialized session with server-everything
// behind it, what every transport must relay the same way: tools/list with
// an id the server would not take itself (1.50, back byte for byte), the
// echo tool, resources/read, and a long-running tool whose three progress
// notifications must carry the client's own progressToken.
func EverythingCalls(t *testing.T, s upstream.Session, sink *Sink, wait time.Duration) {
	t.Helper()
	Send(t, s, `{"jsonrpc":"2.0","id":1.50,"method":"tools/list"}`)
	list := Decode(t, sink.WaitReply(t, wait, `1.50`))
	for _, tool := range []string{`"echo"`, `"trigger-long-running-operation"`} {
		if !strings.Contains(string(list.Result), tool) {
			t.Fatalf("tools/list lacks %s", tool)
		}
	}
	Send(t, s, `{"jsonrpc":"2.0","id":"e-1","method":"tools/call","params":{"name":"echo","arguments":{"message":"hello"}}}`)
	if got := EchoText(t, sink.WaitReply(t, wait, `"e-1"`)); got != "Echo: hello" {
		t.Fatalf("echo: %q", got)
	}
	Send(t, s, `{"jsonrpc":"2.0","id":"r","method":"resources/read","params":{"uri":"demo://resource/static/document/architecture.md"}}`)
	if d := Decode(t, sink.WaitReply(t, wait, `"r"`)); d.Error != nil || !strings.Contains(string(d.Result), `"contents"`) {
		t.Fatalf("resources/read: %+v %s", d.Error, d.Result)
	}
	Send(t, s, `{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"trigger-long-running-operation","arguments":{"duration":1,"steps":3},"_meta":{"progressToken":"p-1"}}}`)
	sink.WaitReply(t, wait, `7`)
	progress := 0
	for _, m := range sink.Messages() {
		if IsMethod(m, "notifications/progress") {
			if !strings.Contains(string(m), `"progressToken":"p-1"`) {
				t.Fatalf("progress with a foreign token: %s", m)
			}
			progress++
		}
	}
	if progress != 3 {
		t.Fatalf("got %d progress notifications, want 3", progress)
	}
}
