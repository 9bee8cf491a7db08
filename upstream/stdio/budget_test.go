package stdio

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mcpgate/gateway/config"
	"github.com/mcpgate/gateway/upstream"
	"github.com/mcpgate/gateway/upstream/pool/pooltest"
)

// SPEC 10 budgets of the stdio pool: the worker environment and the
// session-mode children per subject.

func TestChildEnv(t *testing.T) {
	gw := map[string]string{"PATH": "/bin", "HOME": "/root", "LANG": "C.UTF-8",
		"AWS_SECRET_ACCESS_KEY": "secret", "GATEWAY_AUTH_JWT_HS256_SECRET": "secret", "EXTRA": "x"}
	lookup := func(k string) (string, bool) { v, ok := gw[k]; return v, ok }
	cases := []struct {
		name string
		set  map[string]string
		pass []string
		want []string
	}{
		{"default passthrough", nil, nil, []string{"HOME=/root", "LANG=C.UTF-8", "PATH=/bin"}},
		{"empty passthrough passes none", map[string]string{"A": "1"}, []string{}, []string{"A=1"}},
		{"nothing at all", nil, []string{}, []string{}},
		{"named, missing ones skipped", nil, []string{"EXTRA", "NOT_SET"}, []string{"EXTRA=x"}},
		{"env wins over passthrough", map[string]string{"PATH": "/opt/bin", "TOKEN": "t=1"}, []string{"PATH", "LANG"},
			[]string{"LANG=C.UTF-8", "PATH=/opt/bin", "TOKEN=t=1"}},
	}
	for _, c := range cases {
		got := childEnv(c.set, c.pass, lookup)
		if got == nil {
			t.Fatalf("%s: nil (exec would pass the whole environment)", c.name)
		}
		if !slices.Equal(got, c.want) {
			t.Errorf("%s: %q, want %q", c.name, got, c.want)
		}
	}
}

// workerEnv asks a fake worker for its environment, in session mode.
func workerEnv(t *testing.T, u *Upstream) map[string]string {
	t.Helper()
	s, sink := pooltest.Open(t, u)
	pooltest.Send(t, s, fakeInit)
	sink.WaitReply(t, wait, `0`)
	pooltest.Send(t, s, `{"jsonrpc":"2.0","id":"env","method":"env"}`)
	var res struct{ Env []string }
	if err := json.Unmarshal(pooltest.Decode(t, sink.WaitReply(t, wait, `"env"`)).Result, &res); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{}
	for _, kv := range res.Env {
		k, v, _ := strings.Cut(kv, "=")
		env[k] = v
	}
	delete(env, "STDIO_FAKE_WORKER") // the fake's own command line sets it
	return env
}

// A child sees upstreams[].env and the passed-through variables, and
// nothing else of the gateway's environment (its secrets above all).
func TestWorkerEnvironment(t *testing.T) {
	t.Setenv("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY")
	t.Setenv("GATEWAY_AUTH_JWT_HS256_SECRET", "gateway-secret")
	t.Setenv("STDIO_TEST_PASSED", "passed-through")
	t.Setenv("STDIO_TEST_OVERRIDDEN", "from-gateway")
	t.Setenv("LANG", "C.UTF-8")
	newEnvUpstream := func(env map[string]string, pass []string) *Upstream {
		u, err := New(config.Upstream{Name: "fake", Type: "stdio", Command: fakeCommand(), Max: 2,
			Env: env, EnvPassthrough: pass}, nil, slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { u.Close() })
		return u
	}

	got := workerEnv(t, newEnvUpstream(map[string]string{"MCP_API_TOKEN": "from-config", "STDIO_TEST_OVERRIDDEN": "from-config"},
		[]string{"PATH", "STDIO_TEST_PASSED", "STDIO_TEST_OVERRIDDEN", "STDIO_TEST_NOT_SET"}))
	want := map[string]string{"PATH": gatewayEnv(t, "PATH"), "STDIO_TEST_PASSED": "passed-through",
		"STDIO_TEST_OVERRIDDEN": "from-config", "MCP_API_TOKEN": "from-config"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("worker environment:\n got %v\nwant %v", got, want)
	}

	// The default passthrough: PATH, HOME, LANG.
	got = workerEnv(t, newEnvUpstream(nil, nil))
	for k := range got {
		if k != "PATH" && k != "HOME" && k != "LANG" {
			t.Fatalf("default passthrough gave the worker %s (%v)", k, got)
		}
	}
	if got["LANG"] != "C.UTF-8" || got["PATH"] != gatewayEnv(t, "PATH") {
		t.Fatalf("default passthrough: %v", got)
	}

	// An explicit empty list passes none.
	if got = workerEnv(t, newEnvUpstream(map[string]string{"ONLY": "this"}, []string{})); fmt.Sprint(got) != "map[ONLY:this]" {
		t.Fatalf("empty passthrough: %v", got)
	}
}

func gatewayEnv(t *testing.T, k string) string {
	t.Helper()
	v, ok := os.LookupEnv(k)
	if !ok {
		t.Fatalf("%s not set in the test's environment", k)
	}
	return v
}

func newShared(t *testing.T, maxN, perSubject int) *Upstream {
	t.Helper()
	u, err := New(config.Upstream{Name: "fake", Type: "stdio", Command: fakeCommand(),
		Max: maxN, MaxPerSubject: perSubject}, nil, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { u.Close() })
	return u
}

// openAs opens a connection of subject on u.
func openAs(t *testing.T, u *Upstream, subject string) (upstream.Session, *pooltest.Sink) {
	t.Helper()
	sink := pooltest.NewSink()
	sink.Principal = subject
	s, err := u.Open(sink)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s, sink
}

// sessionAs opens a session-mode connection of subject and waits for its
// initialize answer.
func sessionAs(t *testing.T, u *Upstream, subject string) (upstream.Session, *pooltest.Sink) {
	t.Helper()
	s, sink := openAs(t, u, subject)
	pooltest.Send(t, s, fakeInit)
	if d := pooltest.Decode(t, sink.WaitReply(t, wait, `0`)); d.Error != nil {
		t.Fatalf("initialize for %s: %+v", subject, d.Error)
	}
	return s, sink
}

// refusedAs opens a session-mode connection of subject that must be closed
// 1013 "No worker available".
func refusedAs(t *testing.T, u *Upstream, subject string) {
	t.Helper()
	s, sink := openAs(t, u, subject)
	pooltest.Send(t, s, fakeInit) // taken: the close is the answer
	if code, reason := sink.WaitFail(t, wait); code != 1013 || reason != "No worker available" {
		t.Fatalf("%s's extra session: Fail(%d, %q), want 1013", subject, code, reason)
	}
	if msgs := sink.Messages(); len(msgs) != 0 {
		t.Fatalf("refused session got messages:\n%s", pooltest.Dump(msgs))
	}
}

// requestModeAnswered sends one stateless request and waits for its answer.
func requestModeAnswered(t *testing.T, u *Upstream, subject, id string) {
	t.Helper()
	s, sink := openAs(t, u, subject)
	pooltest.Send(t, s, `{"jsonrpc":"2.0","id":"`+id+`","method":"echo","params":{"message":"`+id+`","_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}`)
	if d := pooltest.Decode(t, sink.WaitReply(t, wait, `"`+id+`"`)); d.Error != nil {
		t.Fatalf("request-mode %s: %+v", id, d.Error)
	}
	s.Close()
}

// One subject holds at most max_per_subject dedicated children: the next
// session of that subject is closed 1013, while another subject still gets
// a session and stateless requests are still answered. A child stops
// counting once it is gone, whichever way it went.
func TestMaxPerSubject(t *testing.T) {
	u := newShared(t, 8, 2)
	a1, _ := sessionAs(t, u, "alice")
	a2, sinkA2 := sessionAs(t, u, "alice")
	refusedAs(t, u, "alice")
	refusedAs(t, u, "alice")
	b1, _ := sessionAs(t, u, "bob")
	requestModeAnswered(t, u, "alice", "stateless-alice")
	requestModeAnswered(t, u, "carol", "stateless-carol")
	if n := u.SubjectSessions("alice"); n != 2 {
		t.Fatalf("alice holds %d, want 2", n)
	}
	if st := u.Stats(); st.Sessions != 3 || st.Subjects != 2 {
		t.Fatalf("pool %+v: want 3 sessions of 2 subjects", st)
	}

	// The client leaves: once its child is gone, alice has room again.
	a1.Close()
	waitFor(t, "alice's first child gone", func() bool { return u.SubjectSessions("alice") == 1 })
	a3, _ := sessionAs(t, u, "alice")

	// The child dies under the session (1011): that frees its share too.
	killPID(t, a2.(*session).child.PID())
	if code, _ := sinkA2.WaitFail(t, wait); code != 1011 {
		t.Fatalf("dead worker: Fail(%d)", code)
	}
	waitFor(t, "alice's dead child released", func() bool { return u.SubjectSessions("alice") == 1 })
	a4, _ := sessionAs(t, u, "alice")
	refusedAs(t, u, "alice")

	for _, s := range []upstream.Session{a3, a4, b1} {
		s.Close()
	}
	waitFor(t, "every share given back", func() bool {
		st := u.Stats()
		return st.Sessions == 0 && st.Subjects == 0
	})
}

// Sessions never take the last slot request mode needs: with max 3 and a
// subject allowed all three, two sessions take the slots of idle shared
// children, the third is refused 1013, and stateless requests are still
// answered by the shared child that is left.
func TestSessionsLeaveARequestSlot(t *testing.T) {
	u := newShared(t, 3, 3)
	// Requests that keep every booted child busy grow the shared pool to
	// max, one child per boot (a new child gets the next request, not the
	// one that made it).
	var conns []*pooltest.Sink
	for i := 0; i < 10 && u.Stats().Shared < 3; i++ {
		s, sink := openAs(t, u, "carol")
		pooltest.Send(t, s, fmt.Sprintf(`{"jsonrpc":"2.0","id":%d,"method":"sleep","params":{"ms":2000}}`, i))
		conns = append(conns, sink)
		waitFor(t, "shared children booted", func() bool { return sharedBooted(u) })
		time.Sleep(2 * busyAfter)
	}
	for i, sink := range conns {
		sink.WaitReply(t, wait, fmt.Sprint(i))
	}
	if st := u.Stats(); st.Shared != 3 || st.Total != 3 {
		t.Fatalf("pool %+v: want 3 shared children", st)
	}
	sessionAs(t, u, "alice")
	sessionAs(t, u, "alice")
	refusedAs(t, u, "alice")
	refusedAs(t, u, "bob") // the cap holds for every subject
	if st := u.Stats(); st.Shared != 1 || st.Sessions != 2 || st.Total != 3 {
		t.Fatalf("pool %+v: want 2 sessions and 1 shared child", st)
	}
	for i := range 5 {
		requestModeAnswered(t, u, "carol", fmt.Sprintf("after-%d", i))
	}
}

// With max 1 nothing can be kept for request mode: the one child goes to a
// session (the pool is at max for everyone else).
func TestMaxOneGoesToASession(t *testing.T) {
	u := newShared(t, 1, 0) // 0: the default, max/4 but at least 1
	s, _ := sessionAs(t, u, "alice")
	refusedAs(t, u, "bob")
	s.Close()
	waitFor(t, "the child gone", func() bool { return u.Stats().Total == 0 })
	sessionAs(t, u, "bob")
}

// Many connections of a few subjects come and go, some refused, some
// whose child dies: at the end no subject holds anything.
func TestSubjectSharesDoNotLeak(t *testing.T) {
	u := newShared(t, 8, 2)
	subjects := []string{"alice", "bob", "carol"}
	for round := range 4 {
		var open []upstream.Session
		for _, sub := range subjects {
			for range 2 {
				s, _ := sessionAs(t, u, sub)
				open = append(open, s)
			}
			refusedAs(t, u, sub)
		}
		if round%2 == 1 { // the children die under their sessions
			for _, s := range open {
				killPID(t, s.(*session).child.PID())
			}
		}
		for _, s := range open {
			s.Close()
		}
		waitFor(t, "every share given back", func() bool {
			st := u.Stats()
			return st.Sessions == 0 && st.Subjects == 0
		})
	}
	for _, sub := range subjects {
		sessionAs(t, u, sub)
	}
}

// The reference server prints its environment (tool get-env): it has
// upstreams[].env and the passed-through variables, not the gateway's
// secrets.
func TestEverythingWorkerEnvironment(t *testing.T) {
	peer := pooltest.Peer(t)
	t.Setenv("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY")
	t.Setenv("STDIO_TEST_PASSED", "passed-through")
	u, err := New(config.Upstream{Name: "everything", Type: "stdio", Command: []string{"node", peer, "stdio"},
		Max: 2, Env: map[string]string{"MCP_API_TOKEN": "from-config"},
		EnvPassthrough: []string{"PATH", "STDIO_TEST_PASSED"}}, nil, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { u.Close() })
	s, sink := pooltest.Open(t, u)
	pooltest.Initialize(t, s, sink, wait)
	pooltest.Send(t, s, `{"jsonrpc":"2.0","id":"env","method":"tools/call","params":{"name":"get-env","arguments":{}}}`)
	var res struct{ Content []struct{ Text string } }
	if err := json.Unmarshal(pooltest.Decode(t, sink.WaitReply(t, wait, `"env"`)).Result, &res); err != nil || len(res.Content) != 1 {
		t.Fatalf("get-env: %v %+v", err, res)
	}
	var env map[string]string
	if err := json.Unmarshal([]byte(res.Content[0].Text), &env); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"PATH": gatewayEnv(t, "PATH"), "STDIO_TEST_PASSED": "passed-through", "MCP_API_TOKEN": "from-config"}
	if fmt.Sprint(env) != fmt.Sprint(want) {
		t.Fatalf("server-everything's environment:\n got %v\nwant %v", env, want)
	}
}
