package cluster

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"hash/maphash"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/mcpgate/gateway/clock"
	"github.com/redis/go-redis/v9"
)

//go:embed lease.lua
var leaseScript string

//go:embed presence.lua
var presenceScript string

const (
	// presenceEvery is how often a node heartbeats into the presence set.
	presenceEvery = time.Second
	// presenceTTL is how long a member counts after its last heartbeat:
	// three missed beats. A node that died counts that long (fewer credits
	// for the others, never more).
	presenceTTL = 3 * time.Second
)

// call is one lease script invocation: what was taken from an entry, and the
// command carrying it.
type call struct {
	e      *entry
	want   int32
	debt   int32
	debtAt int64
	id     uint64
	life   int64 // lease lifetime asked for (ns)
	// restored: the call writes the entry's admissions back (outage.go),
	// with restoreFrom as the entry had it.
	restored    bool
	restoreFrom int64
	keys        []string
	args        []any
	cmd         *redis.Cmd
}

// run is the limiter's only goroutine. It sends the refills Allow queues,
// in pipelines of up to maxBatch subjects (one round trip however many
// subjects are hot), sweeps expired leases, and probes Redis while it is
// down. Its queue is bounded and Allow never waits on it.
func (l *Limiter) run() {
	defer close(l.done)
	every := min(max(time.Duration(l.lease/4), 10*time.Millisecond), 250*time.Millisecond)
	tick := time.NewTicker(every)
	defer tick.Stop()
	l.probe() // SCRIPT LOAD and the first heartbeat; marks Redis down on failure
	var lastProbe int64
	batch := make([]*entry, 0, maxBatch)
	for {
		select {
		case <-l.stop:
			return
		case e := <-l.queue:
			batch = append(batch[:0], e)
		drain:
			for len(batch) < maxBatch {
				select {
				case e := <-l.queue:
					batch = append(batch, e)
				default:
					break drain
				}
			}
			if l.down.Load() {
				l.release(batch)
				continue
			}
			l.refill(batch)
		case <-tick.C:
			now := clock.Now()
			if !l.down.Load() {
				if now-l.liveAt.Load() >= int64(presenceEvery) {
					l.heartbeat()
				}
				l.sweep(now)
				continue
			}
			l.sweep(now) // forgets idle subjects; sends nothing while down
			if now-lastProbe >= int64(l.opts.ProbeInterval) {
				lastProbe = now
				l.probe()
			}
		}
	}
}

// probe loads the script (which also proves Redis answers), heartbeats,
// and flips the state to up on success.
func (l *Limiter) probe() {
	start := clock.Now()
	ctx, cancel := context.WithTimeout(context.Background(), l.opts.CallTimeout)
	defer cancel()
	l.trips.Add(1)
	sha, err := l.rdb.ScriptLoad(ctx, l.src).Result()
	if err != nil {
		l.failed(err, start)
		return
	}
	l.sha = sha
	if !l.heartbeat() {
		return
	}
	if l.down.CompareAndSwap(true, false) {
		if l.epoch.Load() > 0 {
			l.log.Info("redis reachable: per-subject limits are shared across nodes again; each node keeps to its local share for one window while its admissions are written back",
				"window", l.limit.Window)
			l.cameBack()
		} else {
			l.setGauges()
		}
	} else {
		l.setGauges()
	}
}

// heartbeat records this node in the presence set and learns how many
// nodes are live (presence.lua). It reports whether Redis answered.
func (l *Limiter) heartbeat() bool {
	start := clock.Now()
	// Expect our member while the last answered heartbeat is well within
	// its TTL (a second of slack for the clocks and the round trips).
	expect := l.liveAt.Load() != 0 && start-l.liveAt.Load() < int64(presenceTTL-time.Second)
	n, lost, err := l.presenceCall(false, expect)
	if err != nil {
		l.failed(err, start)
		return false
	}
	l.live.Store(int32(min(max(n, 1), math.MaxInt32)))
	l.liveAt.Store(clock.Now())
	if lost {
		l.emptied()
	}
	return true
}

// leave takes this node out of the presence set (at Close; best effort: a
// node that does not leave drops out after presenceTTL).
func (l *Limiter) leave() {
	if l.rdb != nil && l.presence != nil {
		_, _, _ = l.presenceCall(true, false)
	}
}

// presenceCall runs presence.lua: the live nodes, and whether this node's
// member was gone though expected (Redis lost its memory).
func (l *Limiter) presenceCall(leave, expect bool) (int64, bool, error) {
	ctx, cancel := context.WithTimeout(context.Background(), l.opts.CallTimeout)
	defer cancel()
	l.trips.Add(1)
	flag, exp := 0, 0
	if leave {
		flag = 1
	}
	if expect {
		exp = 1
	}
	v, err := l.presence.Run(ctx, l.rdb, []string{l.opts.KeyPrefix + "nodes"},
		l.nodeID, presenceTTL.Milliseconds(), flag, exp).Int64Slice()
	if err == nil && len(v) != 2 {
		err = errBadReply
	}
	if err != nil {
		return 0, false, err
	}
	return v[0], v[1] == 1, nil
}

// fail counts a failed round trip and, on the first one, switches Allow to
// the fallback and logs the change once.
func (l *Limiter) fail(err error, start int64) {
	l.errs.Add(1)
	if l.m != nil {
		l.m.RedisErrors.Inc()
	}
	if l.down.Load() {
		return
	}
	l.wentDown(start)
	l.down.Store(true)
	l.setGauges()
	share := int(l.share.Load())
	mode := "local"
	if l.deny {
		mode = "deny"
		share = 0
	}
	l.log.Warn("redis unreachable: per-subject limits fall back until it answers",
		"on_failure", mode, "local_limit", share, "window", l.limit.Window, "err", err.Error())
}

// localShare is this node's part of N while Redis is down.
func (l *Limiter) localShare() int {
	if l.opts.LocalShare > 0 {
		return l.opts.LocalShare
	}
	nodes := l.opts.Nodes
	if nodes <= 0 {
		nodes = max(1, l.sharers(clock.Now()))
	}
	return max(1, (l.limit.N+nodes-1)/nodes)
}

// release forgets queued refills (Redis is down).
func (l *Limiter) release(batch []*entry) {
	for _, e := range batch {
		s := l.shardOf(e.subject)
		s.mu.Lock()
		e.queued = false
		s.mu.Unlock()
	}
}

func (l *Limiter) shardOf(subject string) *shard {
	return &l.shards[maphash.String(l.seed, subject)%shards]
}

// refill sends one pipeline of lease calls and installs the answers.
func (l *Limiter) refill(batch []*entry) {
	now := clock.Now()
	calls := make([]call, 0, len(batch))
	for _, e := range batch {
		if c, ok := l.prepare(e, now); ok {
			calls = append(calls, c)
		}
	}
	if len(calls) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), l.opts.CallTimeout)
	defer cancel()
	// A lease runs from before the request leaves, so that it ends no later
	// than L after the script granted it, whatever the latency.
	start := clock.Now()
	l.exec(ctx, calls, false)
	// A Redis restarted (or flushed) has lost the script: EVAL it, which
	// also caches it again for the next EVALSHA.
	var again []call
	for _, c := range calls {
		if redis.HasErrorPrefix(c.cmd.Err(), "NOSCRIPT") {
			again = append(again, c)
		}
	}
	if len(again) > 0 {
		l.exec(ctx, again, true)
		for i, j := 0, 0; i < len(calls) && j < len(again); i++ {
			if calls[i].e == again[j].e {
				calls[i].cmd = again[j].cmd
				j++
			}
		}
	}
	recv := clock.Now()
	var failed error
	for i := range calls {
		if err := l.install(&calls[i], start, recv); err != nil && failed == nil {
			failed = err
		}
	}
	if failed != nil {
		l.failed(failed, start) // a call's debt goes again with the next one
	}
}

// failed handles a failed round trip begun at start: an outage (fail)
// unless Redis was up and still answers a PING. One slow or broken round
// trip (a loaded host, a connection closed under it) is counted, not
// treated as an outage.
func (l *Limiter) failed(err error, start int64) {
	if !l.down.Load() && l.stillUp() {
		l.errs.Add(1)
		if l.m != nil {
			l.m.RedisErrors.Inc()
		}
		return
	}
	l.fail(err, start)
}

// stillUp pings Redis once after a failed refill: an outage only if that
// fails too. Falling back costs accuracy (a node on its local share while
// the others lease from Redis admits its share on top of theirs), so one
// slow answer must not cause it; a dead Redis refuses the ping at once and
// a paused one lets it time out.
func (l *Limiter) stillUp() bool {
	ctx, cancel := context.WithTimeout(context.Background(), l.opts.CallTimeout)
	defer cancel()
	l.trips.Add(1)
	return l.rdb.Ping(ctx).Err() == nil
}

func (l *Limiter) exec(ctx context.Context, calls []call, eval bool) {
	pipe := l.rdb.Pipeline()
	for i := range calls {
		c := &calls[i]
		if eval {
			c.cmd = pipe.Eval(ctx, l.src, c.keys, c.args...)
		} else {
			c.cmd = pipe.EvalSha(ctx, l.sha, c.keys, c.args...)
		}
	}
	l.trips.Add(1)
	l.calls.Add(uint64(len(calls)))
	_, _ = pipe.Exec(ctx) // errors are read per command
}

// prepare takes an entry's demand, debt and reports into a call.
func (l *Limiter) prepare(e *entry, now int64) (call, bool) {
	s := l.shardOf(e.subject)
	s.mu.Lock()
	defer s.mu.Unlock()
	if e.dead {
		e.queued = false
		return call{}, false
	}
	// Size the lease to this node's demand (messages admitted or refused
	// since the last call): what it would spend in one lease TTL, held a
	// quarter longer because the next lease is fetched before this one runs
	// out. Leftovers go back to Redis when the lease ends. Under four
	// messages per TTL the lease lives longer instead (up to W), for about
	// four messages and the gap before the next one, so that a slow subject
	// finds a lease in hand when its next message comes. The floor on the
	// elapsed time lets a lease grow at most tenfold per call.
	elapsed := max(now-e.rateFrom, l.lease/10)
	rate := float64(e.attempts) / float64(elapsed) // per ns
	life := l.lease + l.lease/4
	want := 0
	switch k := rate * float64(l.lease); {
	case k >= 4:
		want = int(math.Min(math.Ceil(k), float64(l.opts.MaxLease)))
	case rate*float64(l.window) >= 0.5:
		life = min(l.window, max(l.lease, int64(5/rate)))
		want = min(max(1, int(math.Ceil(rate*float64(life)*4/5))), l.opts.MaxLease)
	}
	e.hot = want > int(smallLease(l.limit.N, int(max(e.nodes, 1))))
	if want == 0 && e.attempts > 0 && e.debt == 0 && e.cur.id == 0 {
		want = 1 // refused for want of credit: ask for at least one
	}
	if e.next.id != 0 || now < e.fullUntil {
		want = 0 // nothing to fetch: this call only records debt or reports
	}
	c := call{e: e, want: int32(want), debt: e.debt, debtAt: e.debtAt, life: life}
	e.owed = e.debt
	e.debt = 0
	e.attempts = 0
	e.rateFrom = now
	if c.want > 0 || c.debt > 0 || e.restore {
		l.seq++
		c.id = l.seq
	}
	if e.keys == nil {
		e.keys = l.keysFor(e.subject)
	}
	c.keys = e.keys
	c.args = make([]any, 0, 11+3*e.nrep)
	c.args = append(c.args, l.limit.N, l.window/1000, life/1000, l.nodeID,
		l.grantName(c.id), want, c.debt, l.opts.MinLeaseDivisor, e.nrep)
	for _, r := range e.reports[:e.nrep] {
		ago := int64(-1)
		if r.lastUse != 0 {
			ago = max(0, now-r.lastUse-clockSlack) / 1000
		}
		c.args = append(c.args, l.grantName(r.id), r.unused, ago)
	}
	e.nrep = 0
	// Expect Redis to know this node on the subject if it answered less
	// than 2W ago (less a tenth of W for the clocks' drift): the loss
	// check (outage.go).
	expect := 0
	if e.infoAt != 0 && now-e.infoAt < 2*l.window-l.window/10 {
		expect = 1
	}
	c.args = append(c.args, expect)
	if e.restore {
		c.restored, c.restoreFrom = true, e.restoreFrom
		c.args, _ = l.restoreArgs(e, now, c.args)
		e.restore = false
	} else {
		c.args = append(c.args, 0)
	}
	return c, true
}

// install applies a script answer {lease, free, nodes, wait us, lost,
// restored} to the entry. On error the call's reports are lost (Redis
// keeps counting those grants in full until they expire) and its debt and
// restores are kept for the next call.
func (l *Limiter) install(c *call, start, recv int64) error {
	e := c.e
	s := l.shardOf(e.subject)
	s.mu.Lock()
	defer s.mu.Unlock()
	e.queued = false
	e.owed = 0
	v, err := c.cmd.Int64Slice()
	if err == nil && len(v) != 6 {
		err = errBadReply
	}
	if err != nil {
		// Whether Redis ran the call is unknown: send its debt and
		// restores again (counting them twice errs on the safe side).
		if c.restored && !e.restore {
			e.restore, e.restoreFrom = true, c.restoreFrom
		}
		if c.debt > 0 {
			e.debt += c.debt
			e.debtAt = max(e.debtAt, c.debtAt)
		}
		return err
	}
	lease, nodes, wait := int32(v[0]), max(int32(v[2]), 1), v[3]
	l.restored.Add(uint64(max(v[5], 0)))
	if v[4] == 1 {
		// Redis lost the subject (restarted empty): before taking in
		// this answer, which counts only what was written back.
		l.lostSubject(e, recv, c.restored)
	}
	e.infoAt = recv
	e.nodes = nodes
	e.free = int32(max(min(v[1], math.MaxInt32), 0))
	if n := l.nodesSeen.Load(); nodes >= n || recv-l.nodesSeenAt.Load() > int64(time.Minute) {
		l.nodesSeen.Store(nodes)
		l.nodesSeenAt.Store(recv)
	}
	switch {
	case lease > 0:
		g := grant{id: c.id, units: lease, granted: lease, exp: start + c.life - clockSlack}
		if c.debt > 0 {
			g.lastUse = c.debtAt // the grant's count includes the debt
		}
		e.fullUntil = 0
		switch {
		case e.cur.id == 0:
			e.cur = g
		case e.next.id == 0:
			e.next = g
		default:
			e.retire(&g, recv)
		}
	case c.want > 0:
		e.fullUntil = recv + wait*1000
	}
	return nil
}

// sweep retires expired leases (handing their unused units back), flushes
// reports no refill carried within a lease TTL, and forgets idle subjects.
func (l *Limiter) sweep(t int64) {
	var batch []*entry
	for i := range l.shards {
		s := &l.shards[i]
		s.mu.Lock()
		for k, e := range s.m {
			if e.cur.id != 0 && t >= e.cur.exp {
				e.retire(&e.cur, t)
			}
			if e.next.id != 0 && t >= e.next.exp {
				e.retire(&e.next, t)
			}
			if e.cur.id == 0 && e.next.id != 0 {
				e.cur, e.next = e.next, grant{}
			}
			if e.queued {
				continue
			}
			// Unused units go back at once (a node waiting for a full
			// window may be about to poll for them); reports that only
			// shorten a spent grant's expiry ride on the next refill, or
			// go after a lease TTL.
			if e.debt > 0 || e.restore || (e.nrep > 0 && (e.repUnused || t-e.repAt >= l.lease)) {
				e.queued = true
				batch = append(batch, e)
				continue
			}
			if e.cur.id == 0 && e.nrep == 0 && t-e.lastSeen > l.window+l.lease {
				delete(s.m, k)
				e.dead = true
			}
		}
		s.mu.Unlock()
	}
	for len(batch) > 0 && !l.down.Load() {
		n := min(len(batch), maxBatch)
		l.refill(batch[:n])
		batch = batch[n:]
	}
	l.release(batch)
}

// keysFor names a subject's keys, with the subject as the hash tag. A
// subject that would break the tag (braces, empty) or make long keys is
// replaced by a digest.
func (l *Limiter) keysFor(subject string) []string {
	tag := subject
	if tag == "" || len(tag) > 128 || strings.ContainsAny(tag, "{}") {
		sum := sha256.Sum256([]byte(subject))
		tag = "#" + hex.EncodeToString(sum[:16])
	}
	base := l.opts.KeyPrefix + "{" + tag + "}"
	return []string{base + ":g", base + ":c", base + ":n"}
}

func (l *Limiter) grantName(id uint64) string {
	return l.nodeID + ":" + strconv.FormatUint(id, 36)
}

func randomID() string {
	var b [8]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails
	return hex.EncodeToString(b[:])
}

type constError string

func (e constError) Error() string { return string(e) }

const errBadReply = constError("lease script: unexpected reply")
