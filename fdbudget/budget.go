// Package fdbudget owns the gateway's descriptor budget (SPEC 10): every
// descriptor the process holds counts against its open-file limit (soft
// RLIMIT_NOFILE), so that accept() never meets EMFILE. gnet v2.9.7 stops its
// whole engine for good when accept() fails with EMFILE, and that engine's
// main reactor accepts everything in the listen queue before the event
// loops see a connection, so a headroom of free descriptors is kept for it.
//
// Each user of descriptors is counted by kind: client sockets (the reactor,
// counted by its own counters through Track), stdio worker pipes, upstream
// HTTP connections, Redis connections, admin connections, other. Users other
// than clients ask TryAcquire before they open, and are refused (gracefully:
// the caller answers "no worker", fails the request, or closes the admin
// connection) when granting would eat into the accept headroom. Clients are
// refused earlier still (ClientVerdict: 503 with Retry-After), a margin
// before the others, so that workers and upstream connections for the
// clients already in are not starved by new clients.
//
// Descriptors nobody counts (the runtime's epoll and eventfd, gnet's
// pollers, listeners, logs, files opened for a moment, connections accepted
// and not yet seen by OnOpen) are found by a reconciliation: every second
// (sooner after a refusal) the entries of /proc/self/fd are counted, and
// whatever the tracked counts do not explain is carried as "untracked" until
// the next count.
//
// Counting: github.com/prometheus/procfs (already in the module graph) has
// Proc.FileDescriptorsLen, but it reads the directory with Readdirnames,
// which allocates a string per descriptor on every call (20,000 strings a
// second at this machine's limit, on a process whose idle heap is measured
// per connection); countFDs reads the same directory with getdents into one
// reused buffer and counts entries without allocating. The limit is one
// getrlimit call (golang.org/x/sys/unix), for which procfs has nothing
// lighter.
package fdbudget

import (
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mcpgate/gateway/clock"
	"github.com/mcpgate/gateway/metrics"
)

// Kind names a user of descriptors.
type Kind uint8

// The kinds counted. Client is counted by the reactor (Track); the others
// through TryAcquire and Release.
const (
	Client Kind = iota // client sockets, open and lingering
	Stdio              // stdio workers: pipes and pidfds
	HTTP               // upstream HTTP connections
	Redis              // Redis connections
	Admin              // admin HTTP connections
	Other              // anything else counted on purpose
	NumKinds
)

var kindNames = [NumKinds]string{"client", "stdio", "http", "redis", "admin", "other"}

func (k Kind) String() string {
	if k < NumKinds {
		return kindNames[k]
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// ErrNoDescriptor is what a dial refused by the budget returns.
var ErrNoDescriptor = errors.New("descriptor budget exhausted (open-file limit near)")

// Verdict is the answer for a client connection just accepted.
type Verdict uint8

const (
	// Admit: serve it.
	Admit Verdict = iota
	// Refuse: answer 503 with Retry-After (over TLS after the handshake).
	Refuse
	// Close: past the refusal margin; close at once (a plaintext client may
	// still get its 503 written before the close: it costs nothing more).
	Close
)

func (v Verdict) String() string {
	switch v {
	case Admit:
		return "admit"
	case Refuse:
		return "refuse"
	}
	return "close"
}

// Options configures a Budget. Zero values take the defaults.
type Options struct {
	// Limit is the open-file limit; 0 reads the soft RLIMIT_NOFILE (and
	// follows it when it changes).
	Limit int64
	// AcceptBurst is how many descriptors accept() may take before the
	// reactor's OnOpen sees them (see SetAcceptBurst); 0: one listener with
	// a backlog of Backlog(limit).
	AcceptBurst int64
	// Interval between reconciliations; 0: one second.
	Interval time.Duration
	// Count returns how many descriptors the process holds; nil counts
	// /proc/self/fd.
	Count   func() (int, error)
	Metrics *metrics.Metrics
	Log     *slog.Logger
}

// Budget is the process's descriptor budget. Its methods are safe for
// concurrent use; ClientVerdict, Free and TryAcquire are a few atomic loads
// and may run on an event loop.
type Budget struct {
	fixedLimit bool
	limit      atomic.Int64
	burst      atomic.Int64 // accept burst (SetAcceptBurst)
	headroom   atomic.Int64 // kept free for accept(): burst plus slack
	margin     atomic.Int64 // clients stop this much before the others

	counts  [NumKinds]atomic.Int64
	tracks  [NumKinds]atomic.Pointer[func() int64]
	refused [NumKinds]atomic.Int64

	untracked atomic.Int64 // what the last count found beyond the tracked
	measured  atomic.Int64 // the last count

	interval time.Duration
	count    func() (int, error)
	m        *metrics.Metrics
	log      *slog.Logger
	kick     chan struct{}

	mu      sync.Mutex // one reconciliation at a time; dir, buf
	dir     int        // /proc/self/fd, kept open: counting never opens
	buf     []byte
	lastRun atomic.Int64 // clock.Now ns of the last reconciliation
}

// New returns a budget at the process's current limit and takes a first
// count. Run keeps it up to date.
func New(o Options) *Budget {
	b := &Budget{
		fixedLimit: o.Limit > 0,
		interval:   o.Interval,
		count:      o.Count,
		m:          o.Metrics,
		log:        o.Log,
		kick:       make(chan struct{}, 1),
		dir:        -1,
	}
	if b.interval <= 0 {
		b.interval = time.Second
	}
	if b.log == nil {
		b.log = slog.Default()
	}
	if b.count == nil {
		b.count = b.countProc
	}
	limit := o.Limit
	if limit <= 0 {
		limit = SoftLimit()
	}
	b.limit.Store(limit)
	burst := o.AcceptBurst
	if burst <= 0 {
		burst = AcceptBurst(1, int64(Backlog(limit)), 1)
	}
	b.burst.Store(burst)
	b.setHeadroom()
	b.Reconcile()
	return b
}

// SoftLimit is the soft RLIMIT_NOFILE (Go raises it to the hard limit at
// start on Linux); 1024 where it cannot be read.
func SoftLimit() int64 {
	var r unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &r); err != nil || r.Cur == 0 {
		return 1024
	}
	if r.Cur > 1<<31 {
		return 1 << 31
	}
	return int64(r.Cur)
}

// Backlog is the listen backlog the reactor sets on each listener: the
// queue accept() drains in one go, so it bounds the accept burst. limit/16,
// within [16, 4096]: at 256 files, 16; at 20,000, 1,250.
func Backlog(limit int64) int {
	return int(min(4096, max(16, limit/16)))
}

// AcceptBurst is the accept burst of listeners sockets with a backlog each
// (a queue holds backlog+1 connections; a quarter more arrives while it is
// drained) and loops event loops holding one connection each before OnOpen.
func AcceptBurst(listeners, backlog, loops int64) int64 {
	return listeners*(backlog+1)*5/4 + loops
}

// SetAcceptBurst tells the budget how many descriptors accept() may take
// at once before OnOpen counts them (the reactor, once its listeners are
// up and their backlog set).
func (b *Budget) SetAcceptBurst(n int64) {
	b.burst.Store(max(1, n))
	b.setHeadroom()
}

// setHeadroom: the accept burst plus a slack for descriptors opened for a
// moment between two counts (16 plus 1/128 of the limit), at most half the
// limit; the client margin is 1/64 of what is left, at least 16.
func (b *Budget) setHeadroom() {
	l := b.limit.Load()
	h := b.burst.Load() + 16 + l/128
	if h > l/2 {
		b.log.Warn("descriptor budget: the accept burst does not fit in the open-file limit; headroom capped at half of it",
			"limit", l, "accept_burst", b.burst.Load())
		h = l / 2
	}
	b.headroom.Store(h)
	b.margin.Store(max(16, (l-h)/64))
}

// Limit is the open-file limit in force.
func (b *Budget) Limit() int64 { return b.limit.Load() }

// Headroom is how many descriptors are kept free for accept().
func (b *Budget) Headroom() int64 { return b.headroom.Load() }

// Margin is how far before the others clients are refused.
func (b *Budget) Margin() int64 { return b.margin.Load() }

// Reserve is how many descriptors clients never take, even to be refused:
// a quarter of the margin, at least 4 (see ClientVerdict).
func (b *Budget) Reserve() int64 { return max(4, b.margin.Load()/4) }

// Track makes the budget read kind k's count from f (the reactor's own
// counters of open and lingering sockets) instead of Acquire and Release.
// f must be cheap and safe from any goroutine.
func (b *Budget) Track(k Kind, f func() int64) { b.tracks[k].Store(&f) }

// Count returns kind k's current count.
func (b *Budget) Count(k Kind) int64 {
	n := b.counts[k].Load()
	if f := b.tracks[k].Load(); f != nil {
		n += (*f)()
	}
	return n
}

// Tracked is the sum of every kind's count.
func (b *Budget) Tracked() int64 {
	var n int64
	for k := range NumKinds {
		n += b.Count(k)
	}
	return n
}

// InUse is the budget's estimate of the descriptors the process holds: the
// tracked counts now, plus what the last count found that they did not
// explain.
func (b *Budget) InUse() int64 { return b.Tracked() + b.untracked.Load() }

// Free is how many descriptors may still be granted to non-client users
// before the accept headroom (negative: already inside it).
func (b *Budget) Free() int64 { return b.limit.Load() - b.headroom.Load() - b.InUse() }

// TryAcquire grants n descriptors to kind k, or refuses when granting
// would leave less than the accept headroom free. Release gives them back.
func (b *Budget) TryAcquire(k Kind, n int) bool {
	b.counts[k].Add(int64(n))
	if b.Free() < 0 {
		b.counts[k].Add(-int64(n))
		b.refused[k].Add(1)
		b.Kick()
		return false
	}
	return true
}

// Acquire counts n descriptors of kind k that are already open (no
// refusal possible).
func (b *Budget) Acquire(k Kind, n int) { b.counts[k].Add(int64(n)) }

// Release gives back n descriptors of kind k.
func (b *Budget) Release(k Kind, n int) { b.counts[k].Add(-int64(n)) }

// Refused is how many requests of kind k were refused (clients: verdicts
// other than Admit).
func (b *Budget) Refused(k Kind) int64 { return b.refused[k].Load() }

// ClientVerdict decides on a client connection the reactor has just
// accepted (and already counts): Admit while at least the client margin
// is free, Refuse (a 503 that holds the descriptor while it is written)
// while at least the reserve is free, Close at once below it.
//
// The reserve (Reserve: a quarter of the margin, at least 4) is for the
// descriptors that serve the clients already in and the operator: upstream
// and Redis connections, admin requests. Refused clients linger for their
// 503, so without it a flood keeps the budget at zero and an operator's
// POST /admin/revoke during the flood is closed at accept (e2e
// TestDescriptorBudgetEveryKind saw exactly that).
func (b *Budget) ClientVerdict() Verdict {
	free := b.Free()
	switch {
	case free >= b.margin.Load():
		return Admit
	case free >= b.Reserve():
		b.refused[Client].Add(1)
		b.Kick()
		return Refuse
	default:
		b.refused[Client].Add(1)
		b.Kick()
		return Close
	}
}

// Kick asks Run for a reconciliation soon (at most every 100 ms): after a
// refusal, so that descriptors counted as untracked by the last count and
// closed since stop counting. It never blocks.
func (b *Budget) Kick() {
	select {
	case b.kick <- struct{}{}:
	default:
	}
}

// Run reconciles every Interval, and soon after a Kick, until done closes.
func (b *Budget) Run(done <-chan struct{}) {
	t := time.NewTicker(b.interval)
	defer t.Stop()
	for {
		select {
		case <-done:
			return
		case <-t.C:
			b.Reconcile()
		case <-b.kick:
			if wait := time.Duration(b.lastRun.Load() + int64(100*time.Millisecond) - clock.Now()); wait > 0 {
				select {
				case <-done:
					return
				case <-time.After(wait):
				}
			}
			b.Reconcile()
		}
	}
}

// Reconcile counts the process's descriptors and takes what the tracked
// counts do not explain as untracked; it re-reads the limit too. The
// tracked sum is read before and after the count and the smaller one
// used, so descriptors opened or closed meanwhile err on the side of
// counting too many.
func (b *Budget) Reconcile() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.lastRun.Store(clock.Now())
	if !b.fixedLimit {
		if l := SoftLimit(); l != b.limit.Load() {
			b.limit.Store(l)
			b.setHeadroom()
		}
	}
	t0 := b.Tracked()
	n, err := b.count()
	t1 := b.Tracked()
	if err != nil {
		// EMFILE on the directory itself, or no /proc: keep the last
		// figure.
		b.log.Debug("descriptor count failed", "error", err)
		return
	}
	b.measured.Store(int64(n))
	b.untracked.Store(max(0, int64(n)-min(t0, t1)))
	if b.m != nil {
		b.m.DescriptorsOpen.Set(float64(n))
		b.m.DescriptorsLimit.Set(float64(b.limit.Load()))
	}
}

// Measured is the last count of the process's descriptors.
func (b *Budget) Measured() int64 { return b.measured.Load() }

// Untracked is what the last count found beyond the tracked counts.
func (b *Budget) Untracked() int64 { return b.untracked.Load() }

// Snapshot is the budget's state, for logs and tests.
type Snapshot struct {
	Limit, Headroom, Margin, InUse, Untracked, Measured int64
	Kinds                                               [NumKinds]int64
}

// Snapshot returns the budget's current figures.
func (b *Budget) Snapshot() Snapshot {
	s := Snapshot{Limit: b.Limit(), Headroom: b.Headroom(), Margin: b.Margin(),
		InUse: b.InUse(), Untracked: b.Untracked(), Measured: b.Measured()}
	for k := range NumKinds {
		s.Kinds[k] = b.Count(k)
	}
	return s
}

// countProc counts /proc/self/fd through a descriptor opened once (so a
// count never needs a descriptor of its own near the limit, and never
// allocates), less that descriptor itself.
func (b *Budget) countProc() (int, error) {
	if b.dir < 0 {
		fd, err := openFDDir()
		if err != nil {
			return 0, err
		}
		b.dir = fd
		b.buf = make([]byte, 16<<10)
	}
	n, err := countFDs(b.dir, b.buf)
	return n - 1, err
}
