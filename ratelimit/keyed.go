package ratelimit

import (
	"hash/maphash"
	"net/netip"
	"sync"
	"time"
)

// Limit is "at most N in any Window".
type Limit struct {
	N      int
	Window time.Duration
}

// Enabled reports whether the limit applies (N > 0 and Window > 0).
func (l Limit) Enabled() bool { return l.N > 0 && l.Window > 0 }

// SubjectLimiter decides whether a subject (the authenticated principal) may
// send one more message. Allow must not block: it runs on an event loop.
type SubjectLimiter interface {
	Allow(subject string, now time.Time) (ok bool, retryAfter time.Duration)
}

const shards = 64

// Keyed is a set of sliding windows keyed by K, sharded to keep event loops
// off each other's locks. Idle keys are dropped by Sweep.
type Keyed[K comparable] struct {
	limit  Limit
	hash   func(K) uint64
	shards [shards]struct {
		mu sync.Mutex
		m  map[K]*Window
	}
}

func newKeyed[K comparable](l Limit, hash func(K) uint64) *Keyed[K] {
	k := &Keyed[K]{limit: l, hash: hash}
	for i := range k.shards {
		k.shards[i].m = make(map[K]*Window)
	}
	return k
}

// Allow admits one event for key at now.
func (k *Keyed[K]) Allow(key K, now time.Time) (bool, time.Duration) {
	if !k.limit.Enabled() {
		return true, 0
	}
	s := &k.shards[k.hash(key)%shards]
	s.mu.Lock()
	w := s.m[key]
	if w == nil {
		w = &Window{}
		s.m[key] = w
	}
	ok, retry := w.AllowN(now.UnixNano(), 1, k.limit.N, int64(k.limit.Window))
	s.mu.Unlock()
	return ok, retry
}

// Sweep forgets keys with no event in the last two windows, so that a scan
// over many addresses cannot grow the map without bound.
func (k *Keyed[K]) Sweep(now time.Time) {
	win := int64(k.limit.Window)
	for i := range k.shards {
		s := &k.shards[i]
		s.mu.Lock()
		for key, w := range s.m {
			if now.UnixNano()-w.start >= 2*win {
				delete(s.m, key)
			}
		}
		s.mu.Unlock()
	}
}

// Len is the number of keys held.
func (k *Keyed[K]) Len() int {
	n := 0
	for i := range k.shards {
		s := &k.shards[i]
		s.mu.Lock()
		n += len(s.m)
		s.mu.Unlock()
	}
	return n
}

var seed = maphash.MakeSeed()

// NewIPLimiter limits events (handshakes) per client address.
func NewIPLimiter(l Limit) *Keyed[netip.Addr] {
	return newKeyed(l, func(a netip.Addr) uint64 { return maphash.Comparable(seed, a) })
}

// NewLocalSubjectLimiter limits messages per subject on this node only: the
// single-node mode, and the fallback of the Redis limiter.
func NewLocalSubjectLimiter(l Limit) *Keyed[string] {
	return newKeyed(l, func(s string) uint64 { return maphash.String(seed, s) })
}
