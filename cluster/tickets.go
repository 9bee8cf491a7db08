package cluster

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// Tickets are single-use credentials for browsers, which cannot set headers
// on a WebSocket upgrade (SPEC 4.3): POST /tickets issues one for an
// authenticated subject, and ?ticket= on the upgrade consumes it, once,
// cluster-wide.
//
// Only sha256(ticket) is stored, so a Redis dump or a heap dump holds
// nothing that authenticates; and nothing here logs. Issue and Consume do
// network I/O when Redis is configured: call them off the event loop.
type Tickets struct {
	rdb    *redis.Client
	ttl    time.Duration
	prefix string

	mu        sync.Mutex
	mem       map[[32]byte]memTicket
	lastSweep time.Time
}

type memTicket struct {
	subject string
	exp     time.Time
}

// TicketBytes is the entropy of a ticket; its text is their base64url form.
const TicketBytes = 32

var ticketLen = base64.RawURLEncoding.EncodedLen(TicketBytes)

// NewTickets returns a ticket store: in Redis when rdb is non-nil (any node
// accepts a ticket, exactly once; Redis 6.2+ for GETDEL), else in this
// process's memory (single node).
func NewTickets(rdb *redis.Client, ttl time.Duration) *Tickets {
	if ttl <= 0 {
		ttl = 30 * time.Second
	}
	return &Tickets{rdb: rdb, ttl: ttl, prefix: "mcpgate:ticket:", mem: make(map[[32]byte]memTicket)}
}

// TTL is how long an issued ticket stays valid.
func (t *Tickets) TTL() time.Duration { return t.ttl }

// Issue mints a ticket for subject: 32 random bytes, base64url without
// padding (URL-safe as is).
func (t *Tickets) Issue(ctx context.Context, subject string) (string, error) {
	var b [TicketBytes]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails
	ticket := base64.RawURLEncoding.EncodeToString(b[:])
	h := sha256.Sum256([]byte(ticket))
	if t.rdb == nil {
		now := time.Now()
		t.mu.Lock()
		if now.Sub(t.lastSweep) >= t.ttl {
			t.lastSweep = now
			for k, v := range t.mem {
				if !now.Before(v.exp) {
					delete(t.mem, k)
				}
			}
		}
		t.mem[h] = memTicket{subject: subject, exp: now.Add(t.ttl)}
		t.mu.Unlock()
		return ticket, nil
	}
	// NX: never overwrite an existing ticket (a 256-bit collision will not
	// happen, and if it did the first holder keeps theirs).
	ok, err := t.rdb.SetNX(ctx, t.key(h), subject, t.ttl).Result()
	if err != nil {
		return "", err
	}
	if !ok {
		return "", errors.New("ticket collision")
	}
	return ticket, nil
}

// Consume redeems ticket: the subject it was issued for and true, the first
// time on any node and before it expires; false afterwards, for an unknown
// ticket, or for anything that is not a ticket's shape. err reports a Redis
// failure (the caller should refuse the upgrade: 503, not 401).
func (t *Tickets) Consume(ctx context.Context, ticket string) (subject string, ok bool, err error) {
	if len(ticket) != ticketLen {
		return "", false, nil
	}
	if _, err := base64.RawURLEncoding.DecodeString(ticket); err != nil {
		return "", false, nil
	}
	h := sha256.Sum256([]byte(ticket))
	if t.rdb == nil {
		now := time.Now()
		t.mu.Lock()
		v, found := t.mem[h]
		delete(t.mem, h)
		t.mu.Unlock()
		if !found || !now.Before(v.exp) {
			return "", false, nil
		}
		return v.subject, true, nil
	}
	// GETDEL is atomic: of two nodes racing on one ticket, one gets it.
	subject, err = t.rdb.GetDel(ctx, t.key(h)).Result()
	if errors.Is(err, redis.Nil) {
		return "", false, nil
	}
	if err != nil {
		return "", false, err
	}
	return subject, true, nil
}

func (t *Tickets) key(h [32]byte) string {
	return t.prefix + hex.EncodeToString(h[:])
}
