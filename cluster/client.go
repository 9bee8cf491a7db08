package cluster

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"

	"github.com/mcpgate/gateway/fdbudget"
)

// Client settings. Each is set explicitly rather than left to go-redis
// defaults, which are sized for request/response services (5 s timeouts,
// 10 connections per CPU, 3 retries with backoff) and would let a dead Redis
// hold the limiter's refill goroutine and the ticket handlers for seconds. A
// URL query parameter of the same name (dial_timeout, read_timeout, ...)
// overrides the value here.
const (
	// DialTimeout bounds a TCP connect to Redis. A Redis on the same network
	// answers in well under a millisecond; a second is long enough for a
	// loaded host and short enough for the fallback to take over fast.
	DialTimeout = time.Second
	// ReadTimeout and WriteTimeout bound every command. The lease script is
	// the slowest command sent (it walks the grants of one subject), and
	// takes microseconds.
	ReadTimeout  = 500 * time.Millisecond
	WriteTimeout = 500 * time.Millisecond
	// PoolTimeout bounds the wait for a free connection.
	PoolTimeout = time.Second
	// PoolSize caps connections per node: the limiter uses one at a time
	// (one refill goroutine, pipelined), the revoker one for its
	// subscription (a separate pool inside go-redis), tickets one per
	// in-flight upgrade. 32 covers bursts of ticket upgrades; beyond it
	// callers wait PoolTimeout rather than open more sockets.
	PoolSize = 32
	// MinIdleConns keeps a couple of connections warm so the first refill
	// after a quiet spell does not pay a TCP handshake.
	MinIdleConns = 2
	// MaxRetries is 1: one retry covers a connection closed by the server
	// while idle; more would only lengthen an outage's stalls, and the
	// limiter has its own recovery loop.
	MaxRetries = 1
	// DialerRetries: go-redis retries a failed dial 5 times with 100 ms
	// pauses by default; once is enough for us (see MaxRetries).
	DialerRetries = 1
)

// NewClient parses a redis:// or rediss:// URL and returns a client with the
// explicit settings above (a setting given in the URL's query wins). It does
// not connect: the first command does.
//
// With fds, every connection the client opens (its command pool, its warm
// idle connections and its pub/sub connections alike) counts as one
// descriptor of the budget: a dial that does not fit fails at once with
// fdbudget.ErrNoDescriptor (a Redis error like any other: redis.on_failure
// decides), and the descriptor is given back when go-redis closes the
// connection. It wraps go-redis's own dialer (TLS for rediss://, its
// timeouts) in Options.Dialer, set before the client exists: a dial hook
// added afterwards misses the warm connections go-redis dials at once.
func NewClient(url string, fds *fdbudget.Budget) (*redis.Client, error) {
	opt, err := redis.ParseURL(url)
	if err != nil {
		return nil, fmt.Errorf("redis url: %w", err)
	}
	if opt.DialTimeout == 0 {
		opt.DialTimeout = DialTimeout
	}
	if opt.ReadTimeout == 0 {
		opt.ReadTimeout = ReadTimeout
	}
	if opt.WriteTimeout == 0 {
		opt.WriteTimeout = WriteTimeout
	}
	if opt.PoolTimeout == 0 {
		opt.PoolTimeout = PoolTimeout
	}
	if opt.PoolSize == 0 {
		opt.PoolSize = PoolSize
	}
	if opt.MinIdleConns == 0 {
		opt.MinIdleConns = MinIdleConns
	}
	if opt.MaxActiveConns == 0 {
		opt.MaxActiveConns = opt.PoolSize
	}
	if opt.MaxRetries == 0 {
		opt.MaxRetries = MaxRetries
	}
	if opt.PipelinePoolSize == 0 {
		// Pipelines (the limiter's batches) share the main pool: one
		// bounded set of sockets instead of two.
		opt.PipelinePoolSize = -1
	}
	opt.DialerRetries = DialerRetries
	// Honour deadlines on the contexts we pass (every call has one).
	opt.ContextTimeoutEnabled = true
	// Maintenance push notifications need RESP3 and a Redis Enterprise or
	// Cloud endpoint; "auto" would probe for them on every new connection.
	opt.MaintNotificationsConfig = &maintnotifications.Config{Mode: maintnotifications.ModeDisabled}
	if opt.ClientName == "" {
		opt.ClientName = "mcpgate"
	}
	if fds != nil && opt.Dialer == nil {
		opt.Dialer = fds.Dial(fdbudget.Redis, redis.NewDialer(opt))
	}
	return redis.NewClient(opt), nil
}

// RouteRedisLogs sends go-redis's own log lines (one per failed dial, among
// others: dozens a second while Redis is down) to log at debug level instead
// of stderr. go-redis has one logger per process, so call this once, from
// main. The limiter and revoker log Redis state changes themselves, once
// each.
func RouteRedisLogs(log *slog.Logger) {
	redis.SetLogger(slogPrintf{log})
}

type slogPrintf struct{ log *slog.Logger }

func (s slogPrintf) Printf(ctx context.Context, format string, v ...any) {
	if s.log.Enabled(ctx, slog.LevelDebug) {
		s.log.DebugContext(ctx, fmt.Sprintf(format, v...), "component", "go-redis")
	}
}
