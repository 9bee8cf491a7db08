package stdio

import (
	"log/slog"
	"os"
	"testing"

	"github.com/mcpgate/gateway/config"
	"github.com/mcpgate/gateway/fdbudget"
	"github.com/mcpgate/gateway/upstream"
	"github.com/mcpgate/gateway/upstream/pool/pooltest"
)

func openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skip("no /proc/self/fd")
	}
	return len(ents) - 1 // ReadDir's own
}

func newBudgeted(t *testing.T, maxN int, b *fdbudget.Budget) *Upstream {
	t.Helper()
	u, err := New(config.Upstream{Name: "fake", Type: "stdio", Command: fakeCommand(), Max: maxN,
		MaxPerSubject: maxN}, // these sessions are all one (empty) subject's
		nil, slog.New(slog.DiscardHandler), WithDescriptors(b))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { u.Close() })
	return u
}

// What a running child costs the gateway in descriptors, measured: its
// three pipes' ends and its pidfd (childFDs), all counted in the budget,
// and all given back when it is gone.
func TestChildDescriptors(t *testing.T) {
	b := fdbudget.New(fdbudget.Options{})
	u := newBudgeted(t, 8, b)
	session := func() upstream.Session {
		s, sink := pooltest.Open(t, u)
		pooltest.Send(t, s, fakeInit)
		sink.WaitReply(t, wait, `0`)
		return s
	}
	// One first, so the runtime's own first-use descriptors (its poller)
	// are open before the baseline.
	first := session()
	before := openFDs(t)
	var ss []upstream.Session
	for range 5 {
		ss = append(ss, session())
	}
	perChild := float64(openFDs(t)-before) / 5
	t.Logf("descriptors per running child: %.1f (counted: %d)", perChild, childFDs)
	if perChild != childFDs {
		t.Fatalf("a running child holds %.1f descriptors, the budget counts %d", perChild, childFDs)
	}
	if got := b.Count(fdbudget.Stdio); got != 6*childFDs {
		t.Fatalf("budget counts %d for 6 children", got)
	}
	for _, s := range append(ss, first) {
		s.Close()
	}
	waitFor(t, "children gone", func() bool { return u.Stats().Total == 0 && b.Count(fdbudget.Stdio) == 0 })
	waitFor(t, "descriptors back", func() bool { return openFDs(t) <= before-childFDs })
}

// A child whose descriptors do not fit is not started: the session gets
// "no worker" (1013), nothing crashes, and once descriptors are free again
// a session is served.
func TestChildRefusedByBudget(t *testing.T) {
	b := fdbudget.New(fdbudget.Options{Limit: 1000, AcceptBurst: 1,
		Count: func() (int, error) { return 0, nil }})
	b.Acquire(fdbudget.Other, int(b.Free()-(spawnFDs+childFDs+3))) // room for two children, one at a time
	u := newBudgeted(t, 8, b)
	var ss []upstream.Session
	for range 2 {
		s, sink := pooltest.Open(t, u)
		pooltest.Send(t, s, fakeInit)
		sink.WaitReply(t, wait, `0`)
		ss = append(ss, s)
	}
	s, sink := pooltest.Open(t, u)
	pooltest.Send(t, s, fakeInit)
	if code, reason := sink.WaitFail(t, wait); code != 1013 || reason != "No worker available" {
		t.Fatalf("Fail(%d, %q)", code, reason)
	}
	if b.Refused(fdbudget.Stdio) == 0 {
		t.Fatal("no refusal counted")
	}
	ss[0].Close()
	waitFor(t, "a child gone", func() bool { return b.Count(fdbudget.Stdio) == childFDs })
	s, sink = pooltest.Open(t, u)
	pooltest.Send(t, s, fakeInit)
	sink.WaitReply(t, wait, `0`)
	s.Close()
	ss[1].Close()
	waitFor(t, "children gone", func() bool { return b.Count(fdbudget.Stdio) == 0 })
}
