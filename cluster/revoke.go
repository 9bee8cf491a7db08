package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// Revoker spreads revocations: a subject revoked on any node has its
// connections closed on every node within a second (Redis pub/sub) and its
// tokens refused until they expire (a key per revoked subject, with that
// expiry, which nodes that were down or not yet started read at start).
//
// IsRevoked answers from memory: the event loop calls it on every
// authentication. Revoke does I/O; Run is a goroutine.
type Revoker struct {
	rdb      *redis.Client
	maxTTL   time.Duration
	onRevoke func(subject string)
	log      *slog.Logger
	nodeID   string
	prefix   string
	channel  string

	mu  sync.RWMutex
	set map[string]int64 // subject -> revoked until (unix ns)

	synced     chan struct{}
	syncedOnce sync.Once
}

// NewRevoker returns a revoker. rdb nil: revocations stay on this node.
// maxTTL is the longest token lifetime: a revocation never needs to last
// longer, and lasts that long when Revoke is given no end. onRevoke (may be
// nil) is called for each revocation, local or from another node, on the
// caller's goroutine or Run's: it must not block (hand the closes to the
// event loops).
func NewRevoker(rdb *redis.Client, maxTTL time.Duration, onRevoke func(subject string), log *slog.Logger) *Revoker {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if maxTTL <= 0 {
		maxTTL = 24 * time.Hour
	}
	if onRevoke == nil {
		onRevoke = func(string) {}
	}
	r := &Revoker{
		rdb: rdb, maxTTL: maxTTL, onRevoke: onRevoke, log: log, nodeID: randomID(),
		prefix: "mcpgate:revoked:", channel: "mcpgate:revocations",
		set: make(map[string]int64), synced: make(chan struct{}),
	}
	if rdb == nil {
		r.syncedOnce.Do(func() { close(r.synced) })
	}
	return r
}

// Revoke revokes subject until the given time (zero, or later than maxTTL
// from now: maxTTL from now). It applies locally at once, calling onRevoke,
// then records and publishes it in Redis; an error means other nodes may
// not know (the local effect stands).
func (r *Revoker) Revoke(ctx context.Context, subject string, until time.Time) error {
	now := time.Now()
	if limit := now.Add(r.maxTTL); until.IsZero() || until.After(limit) {
		until = limit
	}
	if !until.After(now) {
		return errors.New("revoke: until is in the past")
	}
	r.add(subject, until.UnixNano())
	r.onRevoke(subject)
	if r.rdb == nil {
		return nil
	}
	ms := strconv.FormatInt(until.UnixMilli(), 10)
	// The key first, then the message: a node that reconnects between the
	// two finds the key in its scan.
	_, err := r.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		p.Set(ctx, r.key(subject), ms+"\n"+subject, until.Sub(now))
		p.Publish(ctx, r.channel, r.nodeID+"\n"+ms+"\n"+subject)
		return nil
	})
	if err != nil {
		return fmt.Errorf("revoke: %w", err)
	}
	return nil
}

// IsRevoked reports whether subject is revoked now. Memory only.
func (r *Revoker) IsRevoked(subject string) bool {
	r.mu.RLock()
	until, ok := r.set[subject]
	r.mu.RUnlock()
	return ok && time.Now().UnixNano() < until
}

// Synced is closed once this node has read the revocations recorded in
// Redis (at once without Redis). A node may wait for it before serving.
func (r *Revoker) Synced() <-chan struct{} { return r.synced }

// add records a revocation and reports whether it is news.
func (r *Revoker) add(subject string, until int64) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if cur, ok := r.set[subject]; ok && cur >= until {
		return false
	}
	r.set[subject] = until
	return true
}

func (r *Revoker) purge() {
	now := time.Now().UnixNano()
	r.mu.Lock()
	for s, until := range r.set {
		if until <= now {
			delete(r.set, s)
		}
	}
	r.mu.Unlock()
}

func (r *Revoker) key(subject string) string { return r.prefix + "{" + subject + "}" }

// Run follows revocations from other nodes until ctx ends: it subscribes,
// reads the recorded revocations (at start and after every reconnect, so
// nothing published while disconnected is missed), and reconnects with
// backoff when Redis goes away. It logs once when the feed is lost and
// once when it is back.
func (r *Revoker) Run(ctx context.Context) {
	if r.rdb == nil {
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				r.purge()
			}
		}
	}
	backoff := 100 * time.Millisecond
	lost := false
	for ctx.Err() == nil {
		connected, err := r.session(ctx, func() {
			if lost {
				lost = false
				r.log.Info("revocation feed back")
			}
		})
		if ctx.Err() != nil {
			return
		}
		if connected {
			backoff = 100 * time.Millisecond
		}
		if !lost {
			lost = true
			r.log.Warn("revocation feed lost; reconnecting", "err", err.Error())
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

// session runs one subscription until it fails. connected reports whether
// it got as far as reading the recorded revocations.
func (r *Revoker) session(ctx context.Context, onUp func()) (connected bool, err error) {
	sub := r.rdb.Subscribe(ctx, r.channel)
	defer sub.Close()
	stop := context.AfterFunc(ctx, func() { _ = sub.Close() })
	defer stop()
	// Wait for the confirmation, then scan: a revocation is then either in
	// the scan or in a message after it.
	for {
		msg, err := sub.ReceiveTimeout(ctx, 2*time.Second)
		if err != nil {
			return false, err
		}
		if s, ok := msg.(*redis.Subscription); ok && s.Kind == "subscribe" {
			break
		}
	}
	if err := r.scan(ctx); err != nil {
		return false, err
	}
	r.syncedOnce.Do(func() { close(r.synced) })
	onUp()
	const quiet = time.Second
	lastRead, lastPing, lastPurge := time.Now(), time.Now(), time.Now()
	for {
		msg, err := sub.ReceiveTimeout(ctx, quiet)
		now := time.Now()
		if now.Sub(lastPurge) >= quiet {
			lastPurge = now
			r.purge()
		}
		if err != nil {
			var ne net.Error
			if !errors.As(err, &ne) || !ne.Timeout() {
				return true, err
			}
			// Quiet: prove the connection is alive with a ping, whose
			// pong arrives as a message.
			if now.Sub(lastRead) > 5*quiet {
				return true, errors.New("no pong from redis")
			}
			if now.Sub(lastPing) >= 2*quiet {
				lastPing = now
				if err := sub.Ping(ctx); err != nil {
					return true, err
				}
			}
			continue
		}
		lastRead = now
		if m, ok := msg.(*redis.Message); ok {
			r.handle(m.Payload)
		}
	}
}

// handle applies "node\nuntil-ms\nsubject" from another node.
func (r *Revoker) handle(payload string) {
	node, rest, ok := strings.Cut(payload, "\n")
	if !ok || node == r.nodeID {
		return // ours: applied when Revoke was called
	}
	r.apply(rest)
}

// apply takes "until-ms\nsubject" (a message body or a key's value).
func (r *Revoker) apply(v string) {
	ms, subject, ok := strings.Cut(v, "\n")
	if !ok {
		return
	}
	until, err := strconv.ParseInt(ms, 10, 64)
	if err != nil || until*int64(time.Millisecond) <= time.Now().UnixNano() {
		return
	}
	if r.add(subject, until*int64(time.Millisecond)) {
		r.onRevoke(subject)
	}
}

// scan reads every recorded revocation (SCAN, then GETs in a pipeline).
func (r *Revoker) scan(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var cursor uint64
	for {
		keys, next, err := r.rdb.Scan(ctx, cursor, r.prefix+"*", 1000).Result()
		if err != nil {
			return err
		}
		if len(keys) > 0 {
			cmds, err := r.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
				for _, k := range keys {
					p.Get(ctx, k)
				}
				return nil
			})
			if err != nil && !errors.Is(err, redis.Nil) {
				return err
			}
			for _, c := range cmds {
				if v, err := c.(*redis.StringCmd).Result(); err == nil {
					r.apply(v)
				}
			}
		}
		if cursor = next; cursor == 0 {
			return nil
		}
	}
}
