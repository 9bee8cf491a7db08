// Package cluster owns what gateway nodes share through Redis: per-subject
// limits, single-use tickets, revocations.
//
// Nothing here may be called from an event loop except Limiter.Allow and
// Revoker.IsRevoked, which answer from memory. Everything that talks to Redis
// runs on a goroutine of its own (the limiter's refill loop, the revoker's
// subscription) or in a caller that is already off the loop (ticket issue and
// consume run in HTTP handlers and upgrade workers).
//
// Keys carry the subject in a hash tag ({subject}), so every key of one
// subject lives in one slot and the same scripts run on Redis Cluster.
package cluster

import (
	"hash/maphash"
	"log/slog"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mcpgate/gateway/clock"
	"github.com/mcpgate/gateway/metrics"
	"github.com/mcpgate/gateway/ratelimit"
	"github.com/redis/go-redis/v9"
)

// Why leases, and why not redis_rate: the limit means "at most N messages of
// a subject in any window W, across all nodes" (SPEC 5). redis_rate is GCRA,
// a token bucket, which lets a full burst through and then refills, so up to
// about 2N pass in one W; and it costs one round trip per message, which the
// event loop cannot wait for. Instead each node leases quota in batches from
// a Lua script that keeps every grant in a sorted set by expiry (an exact
// sliding log of grants, not of messages), and Allow spends the lease from
// memory. A grant stays counted until W after its last use, so the messages
// admitted in any W never exceed N; lease sizes follow each node's demand
// and shrink as the window fills, so that nodes share what is left. The one
// exception is credit: a node that knows nothing recent about a subject
// admits up to max(1, N/(50*K)) messages before its first lease arrives,
// where K is the number of nodes it sees (presence.lua: every node
// heartbeats into one sorted set, and K is its live members, or redis.nodes
// when that is more). So K nodes starting cold together on a subject that
// is already at its limit elsewhere overshoot by N/50 together (2 %), not
// by 2 % each. Before a node's first heartbeat is answered it knows no K
// and takes a credit of 1. See lease.lua for the invariant.
//
// Time: every instant here (lease expiry, last use, the sweep) is on
// package clock's monotonic scale, so a wall-clock step changes nothing;
// Redis measures grant expiry on its own clock (TIME), and the two only
// exchange durations ("used this long ago", "wait this long").

// LimiterOptions tune a Limiter. The zero value is usable.
type LimiterOptions struct {
	// OnFailure is what Allow does while Redis is unreachable: "local"
	// (default: a per-node sliding window with this node's share of N,
	// counting what the node admitted and knew when Redis went away, and
	// kept for W after it returns; see outage.go) or "deny" (refuse every
	// message until Redis is back).
	OnFailure string
	// Nodes is the number of gateway nodes the limit is split across in the
	// "local" fallback. 0: the nodes seen over the last minute (live in the
	// presence set, or the most active on one subject in the lease script's
	// answers), or 1 if none were seen. The credit is sized by the larger
	// of Nodes and the live nodes.
	Nodes int
	// LocalShare, when > 0, is this node's limit per W in the "local"
	// fallback, instead of N/Nodes.
	LocalShare int
	// LeaseTTL is about how long a lease lasts before the node asks again
	// (a lease is sized to this node's demand over it). Default W/25,
	// within [50ms, 1s]. Quota is counted from when it is leased to W after
	// its lease's last use, so a message occupies the window for about
	// W + 1.25*LeaseTTL: steady traffic close to the limit gets about
	// N*W/(W+1.25*LeaseTTL) through (95 % at the default). A flood spends
	// each lease at once and gets N. A shorter TTL is more exact and costs
	// more round trips.
	LeaseTTL time.Duration
	// MaxLease caps the units of one lease. Default N.
	MaxLease int
	// MinLeaseDivisor d: a lease is at most half of what is free divided
	// by the active nodes, but while N/(d*nodes) units are free no lease
	// is smaller than that, so that quota freed by an expiring grant is
	// taken in one or two round trips rather than in crumbs. Default 2.
	// Larger is fairer between nodes and costs more round trips.
	MinLeaseDivisor int
	// KeyPrefix prefixes every key. Default "mcpgate:rl:".
	KeyPrefix string
	// QueueSize bounds the refill requests waiting for the refill goroutine.
	// Default 4096. When it is full Allow does not wait: it asks again later.
	QueueSize int
	// CallTimeout bounds one round trip (a pipeline of lease calls).
	// Default 500ms.
	CallTimeout time.Duration
	// ProbeInterval is how often a Redis that failed is probed. Default 1s.
	ProbeInterval time.Duration
}

const (
	shards     = 64
	maxReports = 4
	maxBatch   = 128
	// clockSlack is subtracted from "time since last use" in reports: the
	// caller's now may lag the refill goroutine's clock by a tick, and a
	// report must never claim a use happened earlier than it did.
	clockSlack = int64(5 * time.Millisecond)
)

// grant is a lease held by this node. id 0 means none.
type grant struct {
	id      uint64
	units   int32 // left to spend
	granted int32
	exp     int64 // clock ns after which it must not be spent
	lastUse int64 // clock ns; 0 = never
}

// report tells the script how a retired grant was spent.
type report struct {
	id      uint64
	unused  int32
	lastUse int64
}

// entry is one subject's state on this node, guarded by its shard's mutex.
type entry struct {
	subject   string
	keys      []string // built by the refill goroutine
	cur, next grant    // next is prefetched before cur runs out
	reports   [maxReports]report
	nrep      int
	repAt     int64 // when the oldest pending report was made
	repUnused bool  // a pending report hands units back
	debt      int32 // admitted on credit, not yet sent to Redis
	owed      int32 // admitted on credit, sent in the call in flight
	debtAt    int64
	nodes     int32 // active nodes in the last answer
	free      int32 // units the last answer left free
	hot       bool  // the last call asked for more than a small lease
	infoAt    int64 // when the last answer arrived
	fullUntil int64 // the window is full until then: no credit, no asking
	attempts  int64 // Allow calls since the last refill (demand)
	rateFrom  int64
	lastSeen  int64
	queued    bool // a refill is queued or in flight
	dead      bool // dropped from the map by the sweep

	// What this node knows beyond its leases, for Redis outages
	// (outage.go): every message it admitted on the subject in the last
	// W, however admitted; a seed standing for the other nodes' part of
	// the last cluster count, counted locally for W from seedAt; until
	// when admissions must also fit this node's local share; and whether
	// the next call writes own back to Redis.
	own         ratelimit.Window
	seed        int32
	seedAt      int64
	epoch       uint64 // the outage the seed was taken for
	recUntil    int64
	restore     bool
	restoreFrom int64 // buckets ending after this are written back whatever Redis holds; older ones only if Redis lost the subject
}

// retire stops g from being spent and keeps a report of it for the next
// call. With the report ring full the oldest report is dropped: Redis then
// keeps counting that grant in full until it expires (conservative).
func (e *entry) retire(g *grant, t int64) {
	if g.units > 0 || g.lastUse != 0 {
		if e.nrep == 0 {
			e.repAt = t
			e.repUnused = false
		}
		e.repUnused = e.repUnused || g.units > 0
		if e.nrep == maxReports {
			copy(e.reports[:], e.reports[1:])
			e.nrep--
		}
		e.reports[e.nrep] = report{id: g.id, unused: g.units, lastUse: g.lastUse}
		e.nrep++
	}
	*g = grant{}
}

type shard struct {
	mu sync.Mutex
	m  map[string]*entry
}

// Limiter is a ratelimit.SubjectLimiter counted across every node sharing a
// Redis. Allow never blocks and never does I/O; one goroutine per Limiter
// leases quota in the background.
type Limiter struct {
	rdb     *redis.Client
	limit   ratelimit.Limit
	opts    LimiterOptions
	m       *metrics.Metrics
	log     *slog.Logger
	enabled bool
	deny    bool

	window       int64 // W in ns
	lease        int64 // lease TTL in ns
	pendingRetry time.Duration
	nodeID       string
	seed         maphash.Seed
	shards       [shards]shard

	queue chan *entry
	down  atomic.Bool
	// fallback is the node-local limiter used without Redis (nil with
	// Redis: the fallback during an outage is per entry, outage.go).
	fallback atomic.Pointer[ratelimit.Keyed[string]]
	seq      uint64 // grant ids, refill goroutine only
	sha      string
	src      string

	// Outages (outage.go): when the last one began (clock ns, a lease TTL
	// before the first failed call), how many there have been, when Redis
	// last came back, and the local share in force.
	outStart atomic.Int64
	epoch    atomic.Uint64
	upAt     atomic.Int64
	share    atomic.Int64

	calls, trips, errs atomic.Uint64
	restored, losses   atomic.Uint64
	nodesSeen          atomic.Int32 // most nodes active on one subject (0: none seen)
	nodesSeenAt        atomic.Int64 // clock ns
	live               atomic.Int32 // live members of the presence set (0: not heard yet)
	liveAt             atomic.Int64 // clock ns of the last heartbeat answer
	presence           *redis.Script

	stop      chan struct{}
	done      chan struct{}
	closeOnce sync.Once
}

// LimiterStats are counters for tests and diagnostics.
type LimiterStats struct {
	Calls      uint64 // lease script calls
	RoundTrips uint64 // pipelines sent to Redis (each with one or more calls)
	Errors     uint64 // failed round trips and probes
	Down       bool   // Redis is considered unreachable
	Nodes      int    // live nodes in the presence set at the last heartbeat (0: none yet)
	Credit     int    // messages a cold node may admit on credit now
	Fallback   bool   // the local fallback is serving (Down, on_failure local)
	Restored   uint64 // messages written back to Redis after an outage or a loss
	Losses     uint64 // subjects Redis was found to have forgotten (a restart)
}

// NewLimiter returns a cluster-wide per-subject limiter and starts its refill
// goroutine (stop it with Close). A nil rdb gives a node-local limiter with
// the whole limit. m and log may be nil.
func NewLimiter(rdb *redis.Client, limit ratelimit.Limit, opts LimiterOptions, m *metrics.Metrics, log *slog.Logger) *Limiter {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	l := &Limiter{
		rdb: rdb, limit: limit, opts: opts, m: m, log: log,
		enabled: limit.Enabled(), deny: opts.OnFailure == "deny",
		seed: maphash.MakeSeed(), nodeID: randomID(),
		stop: make(chan struct{}), done: make(chan struct{}),
	}
	for i := range l.shards {
		l.shards[i].m = make(map[string]*entry)
	}
	if !l.enabled || rdb == nil {
		// Disabled: Allow says yes before looking. No Redis: a node-local
		// window with the whole limit, as if Redis were down for good.
		l.deny = false
		l.fallback.Store(ratelimit.NewLocalSubjectLimiter(limit))
		l.down.Store(true)
		close(l.done)
		return l
	}
	l.window = int64(limit.Window)
	l.lease = int64(opts.LeaseTTL)
	if l.lease <= 0 {
		l.lease = min(max(l.window/25, int64(50*time.Millisecond)), int64(time.Second))
	}
	if l.opts.MaxLease <= 0 || l.opts.MaxLease > limit.N {
		l.opts.MaxLease = limit.N
	}
	l.opts.MaxLease = min(l.opts.MaxLease, math.MaxInt32/2) // units are int32
	if l.opts.MinLeaseDivisor <= 0 {
		l.opts.MinLeaseDivisor = 2
	}
	if l.opts.KeyPrefix == "" {
		l.opts.KeyPrefix = "mcpgate:rl:"
	}
	if l.opts.QueueSize <= 0 {
		l.opts.QueueSize = 4096
	}
	if l.opts.CallTimeout <= 0 {
		l.opts.CallTimeout = 500 * time.Millisecond
	}
	if l.opts.ProbeInterval <= 0 {
		l.opts.ProbeInterval = time.Second
	}
	l.pendingRetry = min(max(limit.Window/time.Duration(limit.N), time.Millisecond), time.Duration(l.lease))
	l.queue = make(chan *entry, l.opts.QueueSize)
	l.src = leaseScript
	l.sha = redis.NewScript(leaseScript).Hash()
	l.presence = redis.NewScript(presenceScript)
	go l.run()
	return l
}

// smallLease is N/(50*nodes), at least 1: the credit a node may take, so
// that nodes racing on stale answers overshoot by 2 % of N at most.
func smallLease(n, nodes int) int32 {
	return int32(max(1, n/(50*max(nodes, 1))))
}

// Allow is AllowNAt(subject, 1, clock.At(now)).
func (l *Limiter) Allow(subject string, now time.Time) (ok bool, retryAfter time.Duration) {
	return l.AllowN(subject, 1, now)
}

// AllowN is AllowNAt(subject, n, clock.At(now)).
func (l *Limiter) AllowN(subject string, n int, now time.Time) (ok bool, retryAfter time.Duration) {
	if !l.enabled {
		return true, 0
	}
	return l.AllowNAt(subject, n, clock.At(now))
}

// AllowAt is AllowNAt(subject, 1, t).
func (l *Limiter) AllowAt(subject string, t int64) (ok bool, retryAfter time.Duration) {
	return l.AllowNAt(subject, 1, t)
}

// AllowNAt admits n messages of subject at t (clock.Now's scale), all or
// none, from memory. It implements ratelimit.SubjectLimiter; retryAfter is
// a hint for a refused message.
func (l *Limiter) AllowNAt(subject string, n int, t int64) (ok bool, retryAfter time.Duration) {
	if !l.enabled || n <= 0 {
		return true, 0
	}
	if l.fallback.Load() != nil {
		// No Redis configured.
		return l.fallback.Load().AllowNAt(subject, n, t)
	}
	down := l.down.Load()
	if down && l.deny {
		return false, l.opts.ProbeInterval
	}
	n = min(n, math.MaxInt32/2)
	s := &l.shards[maphash.String(l.seed, subject)%shards]
	s.mu.Lock()
	e := s.m[subject]
	if e == nil {
		e = &entry{subject: subject, rateFrom: t}
		s.m[subject] = e
	}
	e.lastSeen = t
	if down || l.recovering(e, t) {
		// Redis is down (the local fallback), or came back less than W
		// ago: this node's share, counted from what it knew (outage.go).
		if ok, retryAfter = l.localRoom(e, t, n); !ok || down {
			if ok {
				e.own.Add(t, n, l.limit.N, l.window)
			}
			s.mu.Unlock()
			return ok, retryAfter
		}
	}
	e.attempts += int64(n)
	if ok, retryAfter = l.take(e, t, int32(n)); ok {
		e.own.Add(t, n, l.limit.N, l.window)
	}
	if !e.queued && l.wantsRefill(e, t) {
		select {
		case l.queue <- e:
			e.queued = true
		default: // the refill goroutine is behind; ask again on a later call
		}
	}
	s.mu.Unlock()
	return ok, retryAfter
}

// take spends n units, all or none: from the current lease, then the
// prefetched one, then on credit when the last answer said there was
// plenty left.
func (l *Limiter) take(e *entry, t int64, n int32) (bool, time.Duration) {
	// Drop a spent or expired current lease; the prefetched one takes its
	// place.
	if e.cur.id == 0 {
		e.cur, e.next = e.next, grant{}
	}
	for e.cur.id != 0 && (e.cur.units <= 0 || t >= e.cur.exp) {
		e.retire(&e.cur, t)
		e.cur, e.next = e.next, grant{}
	}
	have := int32(0)
	if e.cur.id != 0 {
		have = e.cur.units
	}
	if g := &e.next; g.id != 0 && g.units > 0 && t < g.exp {
		have += g.units
	}
	credit := int32(0)
	if have < n && t >= e.fullUntil {
		credit = max(0, l.credit(e, t)-e.debt-e.owed)
	}
	if have+credit < n {
		if t < e.fullUntil {
			return false, time.Duration(e.fullUntil - t)
		}
		return false, l.pendingRetry
	}
	for n > 0 && e.cur.id != 0 {
		k := min(n, e.cur.units)
		e.cur.units -= k
		e.cur.lastUse = t
		n -= k
		if e.cur.units == 0 {
			e.retire(&e.cur, t)
			e.cur, e.next = e.next, grant{}
			if e.cur.id != 0 && t >= e.cur.exp {
				e.retire(&e.cur, t)
			}
		}
	}
	if n > 0 {
		e.debt += n
		e.debtAt = t
	}
	return true, 0
}

// credit is how many messages a node without a lease may admit before
// Redis records them (as debt, with its next call), so that the first
// messages of a new or quiet subject are not refused while its lease is on
// the way. It is small (smallLease) and only given when the last answer is
// older than a window, or said the window was at most half full and this
// node is not flooding the subject: a node that spends leases as fast as it
// gets them must wait for Redis, since its answers go stale as soon as the
// other nodes spend.
func (l *Limiter) credit(e *entry, t int64) int32 {
	// A node told to wait for a full window is not cold when the wait
	// ends, however long it was.
	age := t - max(e.infoAt, e.fullUntil)
	if age > l.window || (int(e.free)*2 >= l.limit.N && (!e.hot || age >= l.lease)) {
		return l.coldCredit(t)
	}
	return 0
}

// coldCredit is the credit of a node with nothing recent on a subject:
// N/(50*K), at least 1, for the K nodes it sees; 1 while it sees none.
func (l *Limiter) coldCredit(t int64) int32 {
	k := l.sharers(t)
	if k == 0 {
		return 1
	}
	return smallLease(l.limit.N, k)
}

// sharers is how many nodes this node knows share the limit: the larger of
// opts.Nodes, the presence set's live members and the most nodes active on
// one subject, the last two as heard within a minute; 0 if none is known.
func (l *Limiter) sharers(t int64) int {
	k := l.opts.Nodes
	if n := l.live.Load(); n > 0 && t-l.liveAt.Load() < int64(time.Minute) {
		k = max(k, int(n))
	}
	if n := l.nodesSeen.Load(); n > 0 && t-l.nodesSeenAt.Load() < int64(time.Minute) {
		k = max(k, int(n))
	}
	return k
}

// wantsRefill: record debt at once; otherwise prefetch the next lease when
// the current one is three quarters spent or near its end.
func (l *Limiter) wantsRefill(e *entry, t int64) bool {
	if e.debt > 0 || e.nrep == maxReports || e.restore {
		return true
	}
	if t < e.fullUntil || e.next.id != 0 {
		return false
	}
	g := &e.cur
	return g.id == 0 || g.units*4 <= g.granted || t >= g.exp-l.lease/4
}

// Stats returns the limiter's counters.
func (l *Limiter) Stats() LimiterStats {
	return LimiterStats{Calls: l.calls.Load(), RoundTrips: l.trips.Load(), Errors: l.errs.Load(), Down: l.down.Load(),
		Nodes: int(l.live.Load()), Credit: int(l.coldCredit(clock.Now())),
		Fallback: l.Fallback(), Restored: l.restored.Load(), Losses: l.losses.Load()}
}

// Down reports whether Redis is considered unreachable (always true
// without Redis).
func (l *Limiter) Down() bool { return l.down.Load() }

// Fallback reports whether the local fallback is serving: Redis is
// configured, unreachable, and on_failure is "local".
func (l *Limiter) Fallback() bool {
	return l.enabled && l.fallback.Load() == nil && !l.deny && l.down.Load()
}

// Refusing reports whether every message is being refused: Redis is
// configured, unreachable, and on_failure is "deny". /readyz answers 503
// then, so that a load balancer sends clients elsewhere.
func (l *Limiter) Refusing() bool {
	return l.enabled && l.fallback.Load() == nil && l.deny && l.down.Load()
}

// Close stops the refill goroutine and takes this node out of the presence
// set. Allow keeps answering afterwards, from leases it holds and then from
// nothing (it refuses), so close it last.
func (l *Limiter) Close() {
	l.closeOnce.Do(func() {
		select {
		case <-l.done:
		default:
			close(l.stop)
			<-l.done
			l.leave()
		}
	})
}

var _ ratelimit.SubjectLimiter = (*Limiter)(nil)
