package cluster

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/mcpgate/gateway/fdbudget"
)

// Every Redis connection, pub/sub included, is one descriptor of the
// budget while it lives; a dial that does not fit fails the command.
func TestRedisDescriptors(t *testing.T) {
	r := startRedis(t)
	b := fdbudget.New(fdbudget.Options{})
	rdb, err := NewClient(r.url(), b)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := rdb.Ping(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	waitUntil := func(what string, cond func() bool) {
		t.Helper()
		for deadline := time.Now().Add(5 * time.Second); !cond(); time.Sleep(10 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("%s: %d counted, pool stats %+v", what, b.Count(fdbudget.Redis), *rdb.PoolStats())
			}
		}
	}
	// The pool's open connections (min_idle_conns warm ones among them).
	waitUntil("pool connections", func() bool { return int(b.Count(fdbudget.Redis)) == int(rdb.PoolStats().TotalConns) })
	pool := b.Count(fdbudget.Redis)
	sub := rdb.Subscribe(ctx, "fdbudget-test")
	if _, err := sub.Receive(ctx); err != nil {
		t.Fatal(err)
	}
	if got := b.Count(fdbudget.Redis); got != pool+1 {
		t.Fatalf("with a subscription: %d counted, want %d", got, pool+1)
	}
	sub.Close()
	rdb.Close()
	waitUntil("all closed", func() bool { return b.Count(fdbudget.Redis) == 0 })

	full := fdbudget.New(fdbudget.Options{Limit: 1000, AcceptBurst: 1, Count: func() (int, error) { return 0, nil }})
	full.Acquire(fdbudget.Other, int(full.Free()))
	rdb, _ = NewClient(r.url(), full)
	defer rdb.Close()
	if err := rdb.Ping(ctx).Err(); !errors.Is(err, fdbudget.ErrNoDescriptor) {
		t.Fatalf("ping with no descriptor to spare: %v", err)
	}
}
