package cluster

import (
	"time"

	"github.com/mcpgate/gateway/clock"
)

// Redis outages and restarts (issue 15).
//
// The bound to keep: at most N messages of a subject in any window W
// across all nodes, within 5 %, through a Redis that dies, pauses, or comes
// back empty. Three things make it hold.
//
//  1. Every node records every message it admits on a subject, however it
//     admitted it (lease, credit, fallback), in a sliding window of its own
//     (entry.own, exact to W/15).
//
//  2. While Redis is unreachable (on_failure local), or for W after it
//     answers again, or for W after Redis is found to have forgotten a
//     subject, a node admits a message only if its local count fits its
//     share S = ceil(N/K) of the limit (K: redis.nodes, or the nodes it
//     saw). Its local count is its own admissions plus a seed, taken when
//     the fault began, for W: the larger of its own count and C/K, where C
//     is the last cluster count Redis told it for the subject (its answers
//     carry N minus what is counted) if that answer is fresh (within two
//     lease TTLs of the fault), else S less the cold-start credit. So the
//     K nodes together admit at most K*S - (their seeds) <= N - C in any
//     window that began before the fault, on top of the C Redis had
//     counted; a node that knew nothing recent about a subject admits its
//     credit (N/(50K)) and no more until W has passed; and every window
//     that ends within W of Redis coming back is held to K*S by the local
//     counts, whatever order the nodes come back in.
//
//  3. When Redis answers again, each node writes its own admissions of the
//     last W back (restores: one grant per bucket of entry.own, expiring W
//     after the bucket's end, counted even past N since they happened):
//     those made since the outage began always, older ones only if Redis
//     lost the subject (then nothing it had counted survives). A node
//     knows that Redis lost a subject when it had an answer on it less
//     than 2W ago (so the subject's keys and this node's member in its
//     node set must still be there; both live 2W) and the member is gone:
//     the script then grants nothing, the node drops its leases (their
//     spent part is in own), seeds and caps itself as in 2, and its next
//     call writes everything back. A Redis restarted empty is so re-seeded
//     by every node that admitted on a subject in the last W, on its next
//     call on that subject, whether or not the node saw Redis go away;
//     and each node's presence heartbeat (every second) finds its own
//     member of the presence set gone and writes back every subject it
//     admitted on in the last W at once (emptied), so that a node new to a
//     subject does not find it empty for long.
//
// Leases held when Redis goes away are not spent until it answers again:
// Redis counted them whole, and the fallback counts anew.

// recovering reports whether entry e must also fit the local share at t:
// within W of Redis answering again after an outage, or of Redis losing
// the subject.
func (l *Limiter) recovering(e *entry, t int64) bool {
	return t < e.recUntil || t < l.upAt.Load()+l.window
}

// localRoom says whether n more messages fit this node's share at t
// (own admissions plus the seed of the current fault); the caller records
// an admission in e.own.
func (l *Limiter) localRoom(e *entry, t int64, n int) (bool, time.Duration) {
	if ep := l.epoch.Load(); e.epoch != ep && t >= l.outStart.Load() {
		// First look at this subject since the outage began: seed it
		// with what the node knew when it began.
		e.epoch = ep
		l.seedEntry(e, l.outStart.Load(), t)
	}
	share := int(l.share.Load())
	have := e.own.Count(t, l.limit.N, l.window)
	if t < e.seedAt+l.window {
		have += int(e.seed)
	}
	if have+n <= share {
		return true, 0
	}
	if n > share {
		return false, time.Duration(l.window)
	}
	return false, time.Duration(max(l.window/15, l.pendingRetry.Nanoseconds()))
}

// seedEntry seeds e for a fault that began at from, seen at t: the local
// count is made at least C/K (C the last cluster count, when fresh) or the
// share less the cold credit (when not). The seed lasts W from the fault.
func (l *Limiter) seedEntry(e *entry, from, t int64) {
	share := int(l.share.Load())
	k := max(1, (l.limit.N+share-1)/max(share, 1))
	var total int
	if e.infoAt != 0 && from-e.infoAt <= 2*l.lease {
		c := max(0, l.limit.N-int(e.free))
		total = (c + k - 1) / k
	} else {
		total = max(0, share-int(l.coldCredit(t)))
	}
	own := e.own.Count(t, l.limit.N, l.window)
	e.seed = int32(max(0, total-own))
	e.seedAt = from
}

// setShare fixes the local share S for the fault now beginning.
func (l *Limiter) setShare() {
	l.share.Store(int64(l.localShare()))
}

// wentDown starts an outage (refill goroutine): the first call that failed
// began at start; a lease TTL before it is when Redis may have stopped
// counting.
func (l *Limiter) wentDown(start int64) {
	l.setShare()
	l.outStart.Store(start - l.lease)
	l.epoch.Add(1)
	l.setGauges()
}

// cameBack ends an outage (refill goroutine): every subject known is
// capped for W more and writes its admissions back.
func (l *Limiter) cameBack() {
	now := clock.Now()
	l.upAt.Store(now)
	l.setGauges()
	from := l.outStart.Load()
	l.writeBack(func(e *entry) bool {
		if e.epoch != l.epoch.Load() {
			e.epoch = l.epoch.Load()
			l.seedEntry(e, from, now)
		}
		if e.own.Count(now, l.limit.N, l.window) == 0 {
			return false
		}
		e.restore = true
		e.restoreFrom = from
		return true
	})
}

// writeBack runs pick on every entry (under its shard's lock) and sends a
// refill, in batches of maxBatch, for each entry pick chose that was not
// already queued; what Redis going down again leaves unsent is released.
func (l *Limiter) writeBack(pick func(e *entry) bool) {
	var batch []*entry
	for i := range l.shards {
		s := &l.shards[i]
		s.mu.Lock()
		for _, e := range s.m {
			if pick(e) && !e.queued {
				e.queued = true
				batch = append(batch, e)
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

// emptied handles a Redis found to have lost its memory by the presence
// heartbeat (refill goroutine): every subject this node admitted on in the
// last W and has not yet found lost is handled as lost now (lostSubject)
// and written back at once, so that a node that starts on a subject after
// the restart finds the others' admissions counted within about a
// heartbeat, not only once each of them happens to call on it.
func (l *Limiter) emptied() {
	now := clock.Now()
	l.log.Warn("redis lost its memory (restarted empty or flushed): writing this node's admissions of the last window back",
		"window", l.limit.Window)
	l.writeBack(func(e *entry) bool {
		if now < e.recUntil || e.own.Count(now, l.limit.N, l.window) == 0 {
			return false
		}
		l.lostSubject(e, now, false)
		return true
	})
}

// lostSubject handles Redis having forgotten e's subject (the shard lock
// is held): drop the leases, seed and cap as for an outage begun at t, and
// write everything back on the next call (unless this call did).
func (l *Limiter) lostSubject(e *entry, t int64, restored bool) {
	l.losses.Add(1)
	e.cur, e.next = grant{}, grant{}
	e.nrep = 0
	e.fullUntil = 0
	if t >= e.recUntil {
		l.setShare()
		l.seedEntry(e, t, t)
		e.epoch = l.epoch.Load() // an earlier outage's seed must not replace this one
	}
	e.recUntil = t + l.window
	if !restored {
		e.restore = true
		e.restoreFrom = 0
	}
}

// restoreArgs appends e's write-back to a lease call's arguments (the
// shard lock is held): a count, then per bucket of e.own: units, us since
// the bucket's end (0 for the current one), and 1 to count it whatever
// Redis holds or 0 to count it only if Redis lost the subject.
func (l *Limiter) restoreArgs(e *entry, now int64, args []any) ([]any, int) {
	at := len(args)
	args = append(args, 0)
	n, units := 0, 0
	e.own.Buckets(now, l.limit.N, l.window, func(end int64, k int) {
		always := 0
		if end > e.restoreFrom {
			always = 1
		}
		ago := max(0, now-min(end, now)) / 1000
		args = append(args, k, ago, always)
		n++
		units += k
	})
	args[at] = n
	return args, units
}

// setGauges publishes gateway_redis_up and gateway_redis_fallback.
func (l *Limiter) setGauges() {
	if l.m == nil {
		return
	}
	up, fb := 1.0, 0.0
	if l.down.Load() {
		up = 0
		if !l.deny {
			fb = 1
		}
	}
	l.m.RedisUp.Set(up)
	l.m.RedisFallback.Set(fb)
}
