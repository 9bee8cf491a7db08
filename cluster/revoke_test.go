package cluster

import (
	"context"
	"log/slog"
	"sync"
	"testing"
	"time"
)

type revokeSeen struct {
	mu sync.Mutex
	at map[string]time.Time
}

func (s *revokeSeen) fn(subject string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.at == nil {
		s.at = map[string]time.Time{}
	}
	if _, ok := s.at[subject]; !ok {
		s.at[subject] = time.Now()
	}
}

func (s *revokeSeen) get(subject string) (time.Time, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	at, ok := s.at[subject]
	return at, ok
}

func startRevoker(t *testing.T, r *testRedis, seen *revokeSeen, log *slog.Logger) *Revoker {
	t.Helper()
	rv := NewRevoker(r.client(t), time.Hour, seen.fn, log)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { rv.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	select {
	case <-rv.Synced():
	case <-time.After(5 * time.Second):
		t.Fatal("revoker did not sync")
	}
	return rv
}

func TestRevokeAcrossNodes(t *testing.T) {
	r := startRedis(t)
	var seenA, seenB, seenC revokeSeen
	a := startRevoker(t, r, &seenA, nil)
	b := startRevoker(t, r, &seenB, nil)
	start := time.Now()
	until := start.Add(1500 * time.Millisecond)
	if err := a.Revoke(context.Background(), "mallory", until); err != nil {
		t.Fatal(err)
	}
	if _, ok := seenA.get("mallory"); !ok {
		t.Fatal("onRevoke not called on the revoking node")
	}
	waitFor(t, time.Second, "node B's onRevoke", func() bool { _, ok := seenB.get("mallory"); return ok })
	at, _ := seenB.get("mallory")
	t.Logf("revocation reached node B in %v", at.Sub(start))
	if !a.IsRevoked("mallory") || !b.IsRevoked("mallory") {
		t.Fatal("IsRevoked false right after the revoke")
	}
	if a.IsRevoked("alice") || b.IsRevoked("alice") {
		t.Fatal("another subject revoked")
	}
	// A node started after the revoke learns it from the key.
	c := startRevoker(t, r, &seenC, nil)
	if !c.IsRevoked("mallory") {
		t.Fatal("late node does not see the revocation")
	}
	// Revocations end at their until.
	sleepUntil(until.Add(50 * time.Millisecond))
	for i, rv := range []*Revoker{a, b, c} {
		if rv.IsRevoked("mallory") {
			t.Errorf("node %d: still revoked after until", i)
		}
	}
}

// The subscription survives Redis restarts: a revoke published after the
// restart still reaches the other node.
func TestRevokeReconnects(t *testing.T) {
	r := startRedis(t)
	logs := &logLines{}
	var seenA, seenB revokeSeen
	a := startRevoker(t, r, &seenA, nil)
	b := startRevoker(t, r, &seenB, slog.New(logs))
	r.kill()
	waitFor(t, 5*time.Second, "B to notice the feed is lost", func() bool { return logs.count("feed lost") > 0 })
	r.start()
	waitFor(t, 10*time.Second, "B to resubscribe", func() bool { return logs.count("feed back") > 0 })
	start := time.Now()
	if err := a.Revoke(context.Background(), "trudy", time.Time{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, time.Second, "node B's onRevoke after a restart", func() bool { _, ok := seenB.get("trudy"); return ok })
	t.Logf("after a Redis restart, revocation reached node B in %v", time.Since(start))
	if !b.IsRevoked("trudy") {
		t.Fatal("B: not revoked")
	}
	if n := logs.count("feed lost"); n != 1 {
		t.Errorf("%d 'feed lost' lines, want 1", n)
	}
}

func TestRevokeSingleNode(t *testing.T) {
	var seen revokeSeen
	rv := NewRevoker(nil, time.Hour, seen.fn, nil)
	<-rv.Synced()
	if err := rv.Revoke(context.Background(), "oscar", time.Now().Add(100*time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	if _, ok := seen.get("oscar"); !ok || !rv.IsRevoked("oscar") {
		t.Fatal("local revoke not applied")
	}
	time.Sleep(150 * time.Millisecond)
	if rv.IsRevoked("oscar") {
		t.Fatal("revocation outlived until")
	}
	if err := rv.Revoke(context.Background(), "oscar", time.Now().Add(-time.Second)); err == nil {
		t.Fatal("revoke in the past accepted")
	}
}
