package cluster

import (
	"context"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestTicketsOnceAcrossNodes(t *testing.T) {
	r := startRedis(t)
	ctx := context.Background()
	a := NewTickets(r.client(t), 30*time.Second)
	b := NewTickets(r.client(t), 30*time.Second)
	for round := range 20 {
		ticket, err := a.Issue(ctx, "alice")
		if err != nil {
			t.Fatal(err)
		}
		if len(ticket) != 43 || strings.ContainsAny(ticket, "+/=") {
			t.Fatalf("ticket %q is not 32 bytes of base64url", ticket)
		}
		// Both nodes race to redeem it, several times each.
		var wins atomic.Int32
		var wg sync.WaitGroup
		for i := range 8 {
			node := a
			if i%2 == 1 {
				node = b
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				sub, ok, err := node.Consume(ctx, ticket)
				if err != nil {
					t.Error(err)
				}
				if ok {
					wins.Add(1)
					if sub != "alice" {
						t.Errorf("subject %q", sub)
					}
				}
			}()
		}
		wg.Wait()
		if wins.Load() != 1 {
			t.Fatalf("round %d: ticket redeemed %d times", round, wins.Load())
		}
	}
	// Only a digest is stored.
	ticket, _ := a.Issue(ctx, "bob")
	keys, _ := r.client(t).Keys(ctx, "*").Result()
	for _, k := range keys {
		if strings.Contains(k, ticket) {
			t.Fatalf("ticket in clear in key %q", k)
		}
	}
	if _, ok, _ := b.Consume(ctx, "not-a-ticket"); ok {
		t.Fatal("garbage accepted")
	}
	if sub, ok, _ := b.Consume(ctx, ticket); !ok || sub != "bob" {
		t.Fatalf("consume on the other node: %q %v", sub, ok)
	}
}

func TestTicketsExpire(t *testing.T) {
	r := startRedis(t)
	ctx := context.Background()
	for _, tk := range []*Tickets{NewTickets(r.client(t), 200*time.Millisecond), NewTickets(nil, 200*time.Millisecond)} {
		old, err := tk.Issue(ctx, "carol")
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(300 * time.Millisecond)
		if _, ok, err := tk.Consume(ctx, old); ok || err != nil {
			t.Fatalf("expired ticket: ok=%v err=%v", ok, err)
		}
		fresh, _ := tk.Issue(ctx, "carol")
		if sub, ok, _ := tk.Consume(ctx, fresh); !ok || sub != "carol" {
			t.Fatalf("fresh ticket refused (redis=%v)", tk.rdb != nil)
		}
	}
}

func TestTicketsInMemory(t *testing.T) {
	ctx := context.Background()
	tk := NewTickets(nil, time.Minute)
	ticket, err := tk.Issue(ctx, "dave")
	if err != nil {
		t.Fatal(err)
	}
	if sub, ok, err := tk.Consume(ctx, ticket); !ok || err != nil || sub != "dave" {
		t.Fatalf("first use: %q %v %v", sub, ok, err)
	}
	if _, ok, _ := tk.Consume(ctx, ticket); ok {
		t.Fatal("second use accepted")
	}
	other, _ := tk.Issue(ctx, "erin")
	last := "A"
	if other[42] == 'A' {
		last = "B"
	}
	if _, ok, _ := tk.Consume(ctx, other[:42]+last); ok {
		t.Fatal("altered ticket accepted")
	}
}

// Redis down: Consume reports an error (the upgrade gets 503), not a
// silent "invalid ticket".
func TestTicketsRedisDown(t *testing.T) {
	r := startRedis(t)
	tk := NewTickets(r.client(t), time.Minute)
	ticket, err := tk.Issue(context.Background(), "frank")
	if err != nil {
		t.Fatal(err)
	}
	r.kill()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if _, ok, err := tk.Consume(ctx, ticket); ok || err == nil {
		t.Fatalf("redis down: ok=%v err=%v", ok, err)
	}
}
