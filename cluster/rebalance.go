package cluster

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"log/slog"
	"math"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
)

// Rebalancing (config rebalance, issue 15): long-lived connections stay
// where they first landed, so after a rolling restart or when a node joins,
// one node can hold most of them. Every node publishes its connection count
// each second into one Redis hash (field: a random node id, value:
// "count:expiry_ms", expiry by the Redis clock, so node clocks never
// matter); a node that stops publishing drops out after RebalanceTTL. A
// node whose count is above its fair share (the cluster's connections over
// the live nodes) by more than the margin asks the excess of its idle
// clients to reconnect, at most rate a second, with the drain protocol
// (-31000 to their requests, 1001 once quiet); their balancer sends them
// on, most of them elsewhere, and the next heartbeats count again.

// RebalanceKey is the hash of the nodes' connection counts. The braces
// make it one hash slot (Redis Cluster).
const RebalanceKey = "{mcpgate:rebalance}:nodes"

// RebalanceTTL is how long a node's count stands without a heartbeat.
const RebalanceTTL = 3 * time.Second

// rebalanceScript publishes one node's count (or removes it: count < 0),
// drops the counts whose time has passed, and returns the live ones as
// id, count pairs. Time is Redis's, read inside the script.
var rebalanceScript = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[3])
if tonumber(ARGV[2]) >= 0 then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2] .. ':' .. (now + ttl))
else
  redis.call('HDEL', KEYS[1], ARGV[1])
end
redis.call('PEXPIRE', KEYS[1], ttl * 10)
local all = redis.call('HGETALL', KEYS[1])
local out = {}
for i = 1, #all, 2 do
  local c, exp = string.match(all[i + 1], '^(%d+):(%d+)$')
  if c == nil or tonumber(exp) < now then
    redis.call('HDEL', KEYS[1], all[i])
  else
    out[#out + 1] = all[i]
    out[#out + 1] = c
  end
end
return out
`)

// RebalanceNode is what the rebalancer needs of the local server
// (reactor.Server).
type RebalanceNode interface {
	// Stats' Open: connections open on this node.
	OpenConns() int64
	// Reconnecting is how many of them were asked to move and are still open.
	Reconnecting() int64
	// Draining: the node is shutting down; it leaves the count.
	Draining() bool
	// Reconnect asks up to n idle connections to move; it returns how many
	// it asked.
	Reconnect(n int) int
}

// RebalanceOptions are rebalance.margin and rebalance.rate.
type RebalanceOptions struct {
	Margin   float64       // fraction above the fair share tolerated
	Rate     int           // reconnect requests per second, at most
	Interval time.Duration // heartbeat; 0 means one second
}

// Rebalancer publishes this node's count and sheds its excess.
type Rebalancer struct {
	rdb  *redis.Client
	node RebalanceNode
	opt  RebalanceOptions
	id   string
	log  *slog.Logger

	asked prometheus.Counter
	nodes prometheus.Gauge
	fair  prometheus.Gauge
}

// NewRebalancer makes a rebalancer for node; reg (may be nil) gets its
// metrics: gateway_rebalance_reconnects_total (connections asked to
// move), gateway_rebalance_nodes (live nodes seen) and
// gateway_rebalance_fair_share (connections per node).
func NewRebalancer(rdb *redis.Client, node RebalanceNode, opt RebalanceOptions, reg prometheus.Registerer, log *slog.Logger) *Rebalancer {
	if opt.Interval <= 0 {
		opt.Interval = time.Second
	}
	if opt.Rate < 1 {
		opt.Rate = 1
	}
	if log == nil {
		log = slog.Default()
	}
	var b [8]byte
	_, _ = rand.Read(b[:])
	r := &Rebalancer{
		rdb: rdb, node: node, opt: opt, id: hex.EncodeToString(b[:]), log: log,
		asked: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "gateway_rebalance_reconnects_total", Help: "Connections this node asked to reconnect elsewhere (rebalance)."}),
		nodes: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "gateway_rebalance_nodes", Help: "Live gateway nodes seen in the last heartbeat (rebalance)."}),
		fair: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "gateway_rebalance_fair_share", Help: "Connections per node across the cluster in the last heartbeat (rebalance)."}),
	}
	if reg != nil {
		reg.MustRegister(r.asked, r.nodes, r.fair)
	}
	return r
}

// ID is this node's field in RebalanceKey.
func (r *Rebalancer) ID() string { return r.id }

// Run heartbeats until ctx ends; then it removes this node's count.
func (r *Rebalancer) Run(ctx context.Context) {
	t := time.NewTicker(r.opt.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			r.leave()
			return
		case <-t.C:
		}
		if r.node.Draining() {
			r.leave()
			continue
		}
		r.Step(ctx)
	}
}

// leave removes this node's count (best effort: it expires anyway).
func (r *Rebalancer) leave() {
	ctx, cancel := context.WithTimeout(context.Background(), ReadTimeout)
	defer cancel()
	_, _ = rebalanceScript.Run(ctx, r.rdb, []string{RebalanceKey}, r.id, -1, RebalanceTTL.Milliseconds()).Result()
}

// Step is one heartbeat: publish, read the others, shed the excess. It
// returns how many connections it asked to move.
func (r *Rebalancer) Step(ctx context.Context) int {
	// Every open connection is published (those asked to move stay in
	// the cluster's total: they land on some node), but those already
	// asked to move are as good as gone from this node: judging without
	// them never asks for the same excess twice.
	open := r.node.OpenConns()
	cctx, cancel := context.WithTimeout(ctx, ReadTimeout)
	res, err := rebalanceScript.Run(cctx, r.rdb, []string{RebalanceKey}, r.id, open, RebalanceTTL.Milliseconds()).StringSlice()
	cancel()
	if err != nil {
		r.log.Debug("rebalance heartbeat failed", "error", err)
		return 0
	}
	mine := max(open-r.node.Reconnecting(), 0)
	n := Excess(mine, counts(res), r.opt.Margin)
	nodes := len(res) / 2
	r.nodes.Set(float64(nodes))
	if nodes > 0 {
		r.fair.Set(float64(sum(counts(res))) / float64(nodes))
	}
	perStep := max(1, int(math.Round(float64(r.opt.Rate)*r.opt.Interval.Seconds())))
	n = min(n, perStep)
	if n <= 0 {
		return 0
	}
	asked := r.node.Reconnect(n)
	r.asked.Add(float64(asked))
	r.log.Info("rebalancing: asked idle connections to reconnect", "asked", asked,
		"conns", mine, "nodes", nodes, "fair_share", sum(counts(res))/int64(max(nodes, 1)))
	return asked
}

// counts is the count column of the script's id, count pairs.
func counts(res []string) []int64 {
	out := make([]int64, 0, len(res)/2)
	for i := 1; i < len(res); i += 2 {
		var v int64
		for _, ch := range res[i] {
			if ch < '0' || ch > '9' {
				v = 0
				break
			}
			v = v*10 + int64(ch-'0')
		}
		out = append(out, v)
	}
	return out
}

func sum(v []int64) int64 {
	var s int64
	for _, x := range v {
		s += x
	}
	return s
}

// Excess is how many connections a node holding mine should shed when the
// live nodes hold all (this node's count among them): what it holds above
// ceil(fair share x (1 + margin)), 0 with fewer than two nodes.
func Excess(mine int64, all []int64, margin float64) int {
	if len(all) < 2 {
		return 0
	}
	fair := float64(sum(all)) / float64(len(all))
	limit := int64(math.Ceil(fair*(1+margin) - 1e-9)) // 200 x 1.1 is 220, not 220.00000000000003
	return int(max(mine-limit, 0))
}
