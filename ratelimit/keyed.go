package ratelimit

import (
	"hash/maphash"
	"net/netip"
	"sync"
	"time"

	"github.com/mcpgate/gateway/clock"
)

// SubjectLimiter decides whether a subject (the authenticated principal) may
// send one more message. Neither method may block: they run on event loops.
//
// The methods taking a time.Time convert it with clock.At (now from
// time.Now, or a wall reading taken a moment ago, time.Unix(0, ns)); the At
// forms take clock.Now's scale directly and cost no clock read.
type SubjectLimiter interface {
	// AllowAt admits one message at now.
	AllowAt(subject string, now int64) (ok bool, retryAfter time.Duration)
	// AllowNAt admits n messages at now (a batch of n requests), all or
	// none.
	AllowNAt(subject string, n int, now int64) (ok bool, retryAfter time.Duration)
	// Allow is AllowAt(subject, clock.At(now)).
	Allow(subject string, now time.Time) (ok bool, retryAfter time.Duration)
	// AllowN is AllowNAt(subject, n, clock.At(now)).
	AllowN(subject string, n int, now time.Time) (ok bool, retryAfter time.Duration)
}

const shards = 64

// Keyed is a set of sliding windows keyed by K (client addresses,
// subjects), sharded to keep event loops off each other's locks.
//
// A key is forgotten once its window holds nothing (16/15 W after its last
// admission): each shard sweeps itself at most once per window, on the
// first call after that window has passed, and Sweep does every shard at
// once. So the map holds at most the keys admitted in about the last 2 W,
// however many distinct keys (addresses of a scan, subjects) come by.
type Keyed[K comparable] struct {
	limit  Limit
	win    int64
	hash   func(K) uint64
	shards [shards]keyedShard[K]
}

type keyedShard[K comparable] struct {
	mu        sync.Mutex
	m         map[K]*Window
	nextSweep int64 // clock ns; the shard sweeps itself on the first call from then
}

// sweep drops the shard's idle keys; the caller holds mu.
func (s *keyedShard[K]) sweep(now, win int64) {
	for key, w := range s.m {
		if w.Idle(now, win) {
			delete(s.m, key)
		}
	}
	s.nextSweep = now + win
}

func newKeyed[K comparable](l Limit, hash func(K) uint64) *Keyed[K] {
	k := &Keyed[K]{limit: l, win: int64(l.Window), hash: hash}
	for i := range k.shards {
		k.shards[i].m = make(map[K]*Window)
	}
	return k
}

// Allow admits one event for key at now: AllowAt(key, clock.At(now)).
func (k *Keyed[K]) Allow(key K, now time.Time) (bool, time.Duration) {
	return k.AllowN(key, 1, now)
}

// AllowN admits n events for key at now, all or none: AllowNAt(key, n,
// clock.At(now)).
func (k *Keyed[K]) AllowN(key K, n int, now time.Time) (bool, time.Duration) {
	if !k.limit.Enabled() {
		return true, 0
	}
	return k.AllowNAt(key, n, clock.At(now))
}

// AllowAt admits one event for key at now (clock.Now's scale); retry says
// when it would be admitted, when it is not.
func (k *Keyed[K]) AllowAt(key K, now int64) (bool, time.Duration) {
	return k.AllowNAt(key, 1, now)
}

// AllowNAt admits n events for key at now (clock.Now's scale), all or none
// (Window.AllowN).
func (k *Keyed[K]) AllowNAt(key K, n int, now int64) (bool, time.Duration) {
	if !k.limit.Enabled() {
		return true, 0
	}
	s := &k.shards[k.hash(key)%shards]
	s.mu.Lock()
	if now >= s.nextSweep {
		s.sweep(now, k.win)
	}
	w := s.m[key]
	if w == nil {
		w = &Window{}
		s.m[key] = w
	}
	ok, retry := w.AllowN(now, n, k.limit.N, k.win)
	s.mu.Unlock()
	return ok, retry
}

// Sweep forgets every key whose window holds nothing at now: SweepAt(clock.At(now)).
func (k *Keyed[K]) Sweep(now time.Time) { k.SweepAt(clock.At(now)) }

// SweepAt forgets every key whose window holds nothing at now (clock.Now's
// scale). Forgetting such a key changes no decision.
func (k *Keyed[K]) SweepAt(now int64) {
	for i := range k.shards {
		s := &k.shards[i]
		s.mu.Lock()
		s.sweep(now, k.win)
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
// single-node mode (the Redis limiter keeps its own per-subject Windows).
func NewLocalSubjectLimiter(l Limit) *Keyed[string] {
	return newKeyed(l, func(s string) uint64 { return maphash.String(seed, s) })
}

var _ SubjectLimiter = (*Keyed[string])(nil)
