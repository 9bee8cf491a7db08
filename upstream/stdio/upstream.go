// Package stdio owns the process upstream: pools of MCP server child
// processes that speak newline-delimited JSON-RPC on stdin and stdout
// (SPEC 4.5, type stdio).
//
// Each child runs in a process group of its own, so ending it ends what it
// started; its stderr goes to the log, one record per line; writes to its
// stdin go through a bounded queue (full: upstream.ErrBusy). A child that
// exits is replaced, never reused.
//
// A child's environment is only what the operator names (SPEC 10): the
// variables of upstreams[].env_passthrough copied from the gateway's
// environment (default PATH, HOME, LANG; an empty list passes none), then
// upstreams[].env, which wins over a passed-through variable of the same
// name. Nothing else of the gateway's environment (cloud credentials, its
// GATEWAY_* settings) reaches a worker.
//
// The pool holds at most max children in all: min_idle warm ones ready to
// be given out, one dedicated child per session-mode connection (ended
// with it), and shared children that serve every request-mode connection
// (least-loaded first). Id rewriting and routing come from package pool.
//
// Session-mode children are budgeted so that no subject can take the pool
// from the others (SPEC 10, Workers):
//   - one subject (the connection's authenticated principal) holds at most
//     max_per_subject dedicated children (default max/4, at least 1); its
//     next session-mode connection is closed 1013 "No worker available".
//     A child counts against its subject from the moment it is given out
//     until its process has exited and its slot is back in the pool, so a
//     subject cannot hold more processes than its share even by opening
//     and closing connections quickly.
//   - dedicated children of all subjects together hold at most max-1
//     slots (when max > 1): the last slot is kept for request mode, so
//     stateless clients are answered (by at least one shared child) however
//     many sessions are open. A session may still take the slot of a
//     shared child that has nothing in flight, never that last one. With
//     max 1 there is nothing to keep: the one child goes to whoever asks
//     first (run max >= 2 where sessions and stateless clients mix).
//
// With the default max_per_subject (max/4) and max >= 5, a subject at its
// share leaves session slots to at least three other subjects; an operator
// who raises max_per_subject towards max lets one subject take every
// session slot (never the request-mode one).
//
// Faults (issue 15): every child is pinged when it starts and boots until
// it answers; the shared pool grows by one child per boot at most
// (pickShared), so a crash or a burst does not fork a child per request. A
// child silent for request_timeout while a request waits, that then
// ignores a ping, is killed as hung (checkHung). A request-mode request
// that never reached its child (queued when it died, or its stdin write
// failed) is retried once on another (Upstream.retry). Answers: -32603
// for a request on a child that died, -31504 on request_timeout, -31503
// when no child can take a request (SPEC 4.6).
package stdio

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"sort"
	"sync"
	"syscall"
	"time"

	"github.com/mcpgate/gateway/clock"
	"github.com/mcpgate/gateway/config"
	"github.com/mcpgate/gateway/fdbudget"
	"github.com/mcpgate/gateway/metrics"
	"github.com/mcpgate/gateway/upstream"
	"github.com/mcpgate/gateway/upstream/pool"
)

// Defaults for the fields left at 0.
const (
	DefaultMax            = 64
	DefaultRequestTimeout = 60 * time.Second
	// DefaultQueue bounds the messages waiting for one child's stdin.
	DefaultQueue = 1024
)

var (
	errNoWorker = errors.New("stdio: no worker available")
	// errSubjectShare: the subject holds max_per_subject dedicated children.
	errSubjectShare = errors.New("stdio: subject holds its share of workers")
)

// A child's descriptors in the gateway, measured (TestChildDescriptors):
// while it starts, its three pipes (six ends), exec's status pipe (two)
// and its pidfd; once it runs, our ends of the pipes and the pidfd.
const (
	spawnFDs = 9
	childFDs = 4
)

// Option configures an Upstream beyond its config.
type Option func(*Upstream)

// WithDescriptors counts each child's descriptors against b: a child that
// does not fit is not started (a session then gets "no worker", 1013).
func WithDescriptors(b *fdbudget.Budget) Option { return func(u *Upstream) { u.fds = b } }

// Upstream is a pool of child processes. It implements upstream.Upstream.
type Upstream struct {
	name    string
	argv    []string
	env     []string
	minIdle int
	max     int
	queue   int
	timeout time.Duration
	log     *slog.Logger
	st      *pool.Stats
	gate    pool.Gate
	wg      sync.WaitGroup
	fds     *fdbudget.Budget // nil: not counted

	mu        sync.Mutex
	closed    bool
	total     int // children holding a slot
	idle      []*child
	shared    []*child
	all       map[*child]struct{}
	fails     int // consecutive children that died young: spawn backoff
	nextSpawn time.Time
	refillT   *time.Timer

	// perSubject bounds the dedicated children of one subject; sessionCap
	// those of all subjects together (max-1: one slot is request mode's).
	perSubject, sessionCap int
	// Under mu: the dedicated children holding a slot, in all and per
	// subject (no zero entries).
	sessions  int
	bySubject map[string]int
}

// New starts the pool of cfg (type stdio): min_idle children are started
// at once. m and log may be nil.
func New(cfg config.Upstream, m *metrics.Metrics, log *slog.Logger, opts ...Option) (*Upstream, error) {
	if len(cfg.Command) == 0 || cfg.Command[0] == "" {
		return nil, fmt.Errorf("stdio upstream %q: no command", cfg.Name)
	}
	if _, err := exec.LookPath(cfg.Command[0]); err != nil {
		return nil, fmt.Errorf("stdio upstream %q: %w", cfg.Name, err)
	}
	if log == nil {
		log = slog.Default()
	}
	u := &Upstream{
		name:    cfg.Name,
		argv:    append([]string(nil), cfg.Command...),
		env:     childEnv(cfg.Env, cfg.EnvPassthrough, os.LookupEnv),
		minIdle: cfg.MinIdle,
		max:     cfg.Max,
		queue:   cfg.QueueDepth,
		timeout: time.Duration(cfg.RequestTimeout),
		log:     log,
		st:      pool.NewStats(m, cfg.Name),
		all:     make(map[*child]struct{}),

		perSubject: cfg.MaxPerSubject,
		bySubject:  make(map[string]int),
	}
	u.gate.Name = cfg.Name // the spans of its requests
	for _, o := range opts {
		o(u)
	}
	if u.max <= 0 {
		u.max = DefaultMax
	}
	if u.perSubject <= 0 {
		u.perSubject = max(1, u.max/4)
	}
	u.sessionCap = max(1, u.max-1)
	u.minIdle = max(0, min(u.minIdle, u.max))
	if u.queue <= 0 {
		u.queue = DefaultQueue
	}
	if u.timeout <= 0 {
		u.timeout = DefaultRequestTimeout
	}
	u.mu.Lock()
	u.refillLocked()
	u.mu.Unlock()
	return u, nil
}

// childEnv is a child's whole environment: the variables named in pass
// (nil: config.DefaultEnvPassthrough) that lookup finds in the gateway's
// environment, then set, which wins over a passed-through one. It is never
// nil: a nil exec.Cmd.Env would hand the child the gateway's environment.
func childEnv(set map[string]string, pass []string, lookup func(string) (string, bool)) []string {
	if pass == nil {
		pass = config.DefaultEnvPassthrough
	}
	vars := make(map[string]string, len(pass)+len(set))
	for _, k := range pass {
		if v, ok := lookup(k); ok {
			vars[k] = v
		}
	}
	for k, v := range set {
		vars[k] = v
	}
	out := make([]string, 0, len(vars))
	for k, v := range vars {
		out = append(out, k+"="+v)
	}
	sort.Strings(out)
	return out
}

// Name returns the configured upstream name.
func (u *Upstream) Name() string { return u.name }

// Open starts the upstream side of one client connection. It takes no
// worker yet: the first message decides the mode. It does not block.
func (u *Upstream) Open(sink upstream.Sink) (upstream.Session, error) {
	u.mu.Lock()
	closed := u.closed
	u.mu.Unlock()
	if closed {
		return nil, upstream.ErrClosed
	}
	return &session{u: u, route: pool.NewRoute(&u.gate, sink), subject: sink.Subject()}, nil
}

// Close ends every child and waits for them (at most the kill grace);
// no Deliver or Fail happens once it returns.
func (u *Upstream) Close() error {
	u.mu.Lock()
	if u.closed {
		u.mu.Unlock()
		return nil
	}
	u.closed = true
	if u.refillT != nil {
		u.refillT.Stop()
	}
	children := make([]*child, 0, len(u.all))
	for c := range u.all {
		children = append(children, c)
	}
	u.mu.Unlock()
	u.gate.Shut()
	for _, c := range children {
		c.end(sigEnd)
	}
	u.wg.Wait()
	return nil
}

// spawnLocked starts a child that takes a free slot (u.mu held), or
// returns nil when its descriptors do not fit in the budget.
func (u *Upstream) spawnLocked(r role, after <-chan struct{}) *child {
	if u.fds != nil && !u.fds.TryAcquire(fdbudget.Stdio, spawnFDs) {
		u.st.Error("descriptors")
		return nil
	}
	c := newChild(u, r, after)
	if u.fds != nil {
		c.fds.Store(spawnFDs)
	}
	c.slot = true
	u.total++
	u.all[c] = struct{}{}
	u.st.AddSize(1)
	u.wg.Add(1)
	go c.run()
	return c
}

// refillLocked starts warm children up to min_idle, within max, unless
// children keep dying young: then it retries after a growing delay rather
// than fork in a loop.
func (u *Upstream) refillLocked() {
	for !u.closed && len(u.idle) < u.minIdle && u.total < u.max {
		if wait := time.Until(u.nextSpawn); wait > 0 {
			if u.refillT == nil {
				u.refillT = time.AfterFunc(wait, func() {
					u.mu.Lock()
					u.refillT = nil
					u.refillLocked()
					u.mu.Unlock()
				})
			}
			return
		}
		c := u.spawnLocked(roleIdle, nil)
		if c == nil {
			// No descriptors to spare: try again in a second.
			if u.refillT == nil {
				u.refillT = time.AfterFunc(time.Second, func() {
					u.mu.Lock()
					u.refillT = nil
					u.refillLocked()
					u.mu.Unlock()
				})
			}
			return
		}
		u.idle = append(u.idle, c)
	}
}

// takeIdleLocked gives out the oldest warm child (the most likely to have
// finished booting), or nil.
func (u *Upstream) takeIdleLocked() *child {
	for len(u.idle) > 0 {
		c := u.idle[0]
		u.idle = append(u.idle[:0], u.idle[1:]...)
		if !c.isDead() { // dying, not yet released: skip it
			return c
		}
	}
	return nil
}

// acquireSession gives route (a connection of subject) a child of its own:
// a warm one, a new one, or (at max) the slot of a shared child that has
// nothing in flight; none beyond the subject's share (errSubjectShare) or
// the session cap, which keeps a slot for request mode (errNoWorker).
func (u *Upstream) acquireSession(route *pool.Route, subject string) (*child, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.closed {
		return nil, upstream.ErrClosed
	}
	if u.bySubject[subject] >= u.perSubject {
		return nil, errSubjectShare
	}
	if u.sessions >= u.sessionCap {
		return nil, errNoWorker
	}
	c := u.takeIdleLocked()
	if c == nil && u.total < u.max {
		c = u.spawnLocked(roleSession, nil)
	}
	if c == nil {
		for i, w := range u.shared {
			if w.table.Len() == 0 {
				// The new child first (it may not fit in the descriptor
				// budget); it starts once w is gone.
				if c = u.spawnLocked(roleSession, w.exited); c == nil {
					break
				}
				u.shared = append(u.shared[:i], u.shared[i+1:]...)
				u.releaseSlotLocked(w)
				go w.end(syscall.SIGKILL)
				break
			}
		}
	}
	if c == nil {
		return nil, errNoWorker
	}
	c.role = roleSession
	c.subject, c.counted = subject, true
	u.sessions++
	u.bySubject[subject]++
	c.busy = true
	u.st.AddBusy(1)
	c.routing.Store(&pool.Routing{Table: &c.table, Session: route, Back: c.trySend, Stats: u.st, Log: u.log})
	u.refillLocked()
	return c, nil
}

// pickShared returns the shared child a request-mode request goes to,
// never not (the child a request is being moved off; nil: any):
//   - the least-loaded booted one unless it is busy (has had requests in
//     flight without a break for busyAfter: two quick calls that overlap
//     are no reason for another process); a stalled child (requests in
//     flight and silent for a second: on long work, or hung) is no
//     candidate;
//   - else, when every booted child is busy (or there is none), the pool
//     grows by one child (a warm one, else a new one within max), unless
//     a shared child is still booting: then the pool waits for it rather
//     than start another. So a burst, or the death of every worker, grows
//     the pool by one child per boot at most (plus the warm ones min_idle
//     keeps), never by one per request as when a booting child, with the
//     requests queued on it, counted as loaded;
//   - the least-loaded booted child, loaded as it is, while one boots; the
//     least-loaded booting one when no child has booted; the least-loaded
//     stalled one when there is nothing else.
//
// A child boots until it has answered anything (every child is pinged at
// start), at most bootLimit. A request given a child that is still booting
// waits in its stdin for it.
func (u *Upstream) pickShared(not *child) (*child, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.closed {
		return nil, upstream.ErrClosed
	}
	now := clock.Now()
	var best, boot, stalled *child
	for _, w := range u.shared {
		switch {
		case w == not || w.isDead():
		case w.booting(now):
			if boot == nil || w.table.Len() < boot.table.Len() {
				boot = w
			}
		case w.stalled(now):
			if stalled == nil || w.table.Len() < stalled.table.Len() {
				stalled = w
			}
		case best == nil || w.table.Len() < best.table.Len():
			best = w
		}
	}
	if best != nil && !best.occupied(now) {
		return best, nil
	}
	if boot == nil {
		warm := true
		n := u.takeIdleLocked()
		if n == nil && u.total < u.max {
			n, warm = u.spawnLocked(roleShared, nil), false
		}
		if n != nil {
			n.role = roleShared
			n.table.OnBusy = func(d int) {
				if d > 0 {
					n.busySince.Store(clock.Now())
				}
				u.st.AddBusy(d)
			}
			n.routing.Store(&pool.Routing{Table: &n.table, Back: n.trySend, Stats: u.st, Log: u.log})
			u.shared = append(u.shared, n)
			u.refillLocked()
			// A child just forked is still booting: the request waits less
			// behind a busy booted one, unless there is none. A warm one
			// has booted, or soon will.
			if best == nil || (warm && !n.booting(now)) {
				return n, nil
			}
			boot = n
		}
	}
	switch {
	case best != nil:
		return best, nil
	case boot != nil:
		return boot, nil
	case stalled != nil:
		return stalled, nil
	}
	return nil, errNoWorker
}

// retry sends again, once, a request-mode request that never reached the
// child from (it died, or its stdin broke, first): to another shared
// child, chosen as any request's (pickShared). A request already retried,
// or that no child can take now, is answered -31503 "Upstream unavailable"
// with data.retry_after_ms. o.Call has been taken off from's table.
func (u *Upstream) retry(from *child, o pool.Out) {
	call := o.Call
	if call.Route.Closed() {
		upstream.PutBuffer(o.Msg) // the client left
		return
	}
	err := errNoWorker
	if !call.Retried {
		call.Retried = true
		var w *child
		if w, err = u.pickShared(from); err == nil {
			err = w.put([]pool.Out{o}, false)
		}
	}
	if err == nil {
		u.st.Error("retried")
		return
	}
	u.st.Error("unsent")
	call.Unavailable(pool.RetryAfter)
	upstream.PutBuffer(o.Msg)
}

func (u *Upstream) releaseSlotLocked(c *child) {
	if c.slot {
		c.slot = false
		u.total--
		u.st.AddSize(-1)
	}
	if c.counted { // a dedicated child is gone: its subject may have another
		c.counted = false
		u.sessions--
		if u.bySubject[c.subject]--; u.bySubject[c.subject] <= 0 {
			delete(u.bySubject, c.subject)
		}
	}
}

// release takes a dead child out of the pool and replaces it as needed.
func (u *Upstream) release(c *child, diedYoung bool) {
	u.mu.Lock()
	defer u.mu.Unlock()
	delete(u.all, c)
	u.releaseSlotLocked(c)
	if c.busy {
		c.busy = false
		u.st.AddBusy(-1)
	}
	for i, w := range u.idle {
		if w == c {
			u.idle = append(u.idle[:i], u.idle[i+1:]...)
			break
		}
	}
	for i, w := range u.shared {
		if w == c {
			u.shared = append(u.shared[:i], u.shared[i+1:]...)
			break
		}
	}
	if diedYoung {
		u.fails++
		u.nextSpawn = time.Now().Add(min(100*time.Millisecond<<min(u.fails, 7), 10*time.Second))
	} else if !c.ending.Load() || c.spoke.Load() {
		u.fails = 0
	}
	u.refillLocked()
}

// onTimeout answers a request its worker did not answer in time, and tells
// the worker to stop; a late reply finds no call and is dropped.
func (u *Upstream) onTimeout(call *pool.Call) {
	u.st.Error("timeout")
	call.TimedOut()
	if w, ok := call.Worker.(*child); ok {
		var buf [160]byte
		w.trySend(pool.AppendCancel(buf[:0], call.GID, "request timed out"))
		w.checkHung()
	}
}

// Stats is a snapshot of the pool, for tests and the admin API.
type Stats struct {
	Total, Idle, Shared int
	// Sessions counts the dedicated children holding a slot, and
	// Subjects how many subjects hold them.
	Sessions, Subjects int
}

// Stats returns the pool's current shape.
func (u *Upstream) Stats() Stats {
	u.mu.Lock()
	defer u.mu.Unlock()
	return Stats{Total: u.total, Idle: len(u.idle), Shared: len(u.shared),
		Sessions: u.sessions, Subjects: len(u.bySubject)}
}

// SubjectSessions returns the dedicated children subject holds.
func (u *Upstream) SubjectSessions(subject string) int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.bySubject[subject]
}
