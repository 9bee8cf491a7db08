// Package httpup owns the network upstream: a client of MCP servers that
// speak Streamable HTTP (SPEC 4.5, type http).
//
// Every client message is POSTed with Accept: application/json,
// text/event-stream; the answer may be one JSON body or an SSE stream
// carrying the response and the messages related to it, and 202 answers
// notifications and responses. One http.Client with a tuned Transport
// keeps connections alive across all sessions.
//
// Session mode (the connection began with initialize): the upstream's
// Mcp-Session-Id is carried for that connection only, on the URL the
// session started on; a GET stream brings the session's server-initiated
// messages; the session is DELETEd when the client leaves. Request mode
// (stateless clients): each request goes to the least-loaded URL that is
// up; a server that only speaks sessions gets one shared session per URL,
// opened by the gateway.
//
// A URL that refuses connections is marked down and skipped by new
// sessions and requests until a growing retry delay has passed.
package httpup

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
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
	DefaultRequestTimeout = 60 * time.Second
	// DefaultInFlight bounds the HTTP exchanges of one upstream (queue_depth).
	DefaultInFlight = 4096
	// perSession bounds one connection's exchanges, so one client cannot
	// take the whole upstream.
	perSession = 256
	// maxBody bounds one JSON answer or SSE event.
	maxBody = 64 << 20
	// deleteTimeout bounds the DELETE of a session that ended.
	deleteTimeout = 5 * time.Second
)

// Upstream is a set of Streamable HTTP endpoints. It implements
// upstream.Upstream.
type Upstream struct {
	name    string
	timeout time.Duration
	log     *slog.Logger
	st      *pool.Stats
	gate    pool.Gate
	client  *http.Client
	targets []*target
	sem     chan struct{} // one token per exchange in flight
	table   pool.Table    // request-mode calls
	rr      atomic.Uint32 // round robin among equally loaded URLs

	ctx    context.Context // cancelled by Close: aborts every exchange
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu       sync.Mutex
	closed   bool
	sessions map[*session]struct{}
}

// Option configures an Upstream beyond its config.
type Option func(*options)

type options struct{ fds *fdbudget.Budget }

// WithDescriptors counts each connection to the upstream against b (one
// descriptor, idle in the pool included; given back when it closes): a
// dial that does not fit fails at once, its request is answered -32603
// "Upstream request failed" (error kind "descriptors"), and the URL is not
// marked down, since it refused nothing. Idle connections stay (bounded by
// MaxIdleConnsPerHost and IdleConnTimeout): closing them while a flood of
// clients is refused only made the load behind them re-dial into a full
// budget (measured: 582 of 6,357 upstream requests failed at 20,000 files,
// none without).
func WithDescriptors(b *fdbudget.Budget) Option { return func(o *options) { o.fds = b } }

// New returns the upstream of cfg (type http). It connects lazily. m and
// log may be nil.
func New(cfg config.Upstream, m *metrics.Metrics, log *slog.Logger, opts ...Option) (*Upstream, error) {
	var o options
	for _, f := range opts {
		f(&o)
	}
	if len(cfg.URLs) == 0 {
		return nil, fmt.Errorf("http upstream %q: no urls", cfg.Name)
	}
	if log == nil {
		log = slog.Default()
	}
	u := &Upstream{
		name:     cfg.Name,
		timeout:  time.Duration(cfg.RequestTimeout),
		log:      log,
		st:       pool.NewStats(m, cfg.Name),
		sessions: make(map[*session]struct{}),
	}
	u.gate.Name = cfg.Name // the spans of its requests
	for _, raw := range cfg.URLs {
		p, err := url.Parse(raw)
		if err != nil || (p.Scheme != "http" && p.Scheme != "https") || p.Host == "" {
			return nil, fmt.Errorf("http upstream %q: bad url %q", cfg.Name, raw)
		}
		u.targets = append(u.targets, &target{url: raw})
	}
	if u.timeout <= 0 {
		u.timeout = DefaultRequestTimeout
	}
	n := cfg.QueueDepth
	if n <= 0 {
		n = DefaultInFlight
	}
	u.sem = make(chan struct{}, n)
	tr := &http.Transport{
		// Upstreams are internal services: no proxy from the environment.
		Proxy: nil,
		DialContext: o.fds.Dial(fdbudget.HTTP, (&net.Dialer{
			Timeout:   5 * time.Second,
			KeepAlive: 30 * time.Second,
		}).DialContext),
		ForceAttemptHTTP2:   true,
		MaxIdleConns:        1024,
		MaxIdleConnsPerHost: 256, // the default 2 would reconnect under load
		IdleConnTimeout:     90 * time.Second,
		TLSHandshakeTimeout: 5 * time.Second,
		// SSE must flow event by event; compression buffers.
		DisableCompression: true,
	}
	u.client = &http.Client{
		Transport: tr,
		// A redirect would turn a POST into a GET, or leave the URL the
		// session belongs to: take the answer as it is.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	u.ctx, u.cancel = context.WithCancel(context.Background())
	u.st.AddSize(len(u.targets))
	return u, nil
}

// Name returns the configured upstream name.
func (u *Upstream) Name() string { return u.name }

// Open starts the upstream side of one client connection. Nothing is sent
// until its first message, which decides the mode. It does not block.
func (u *Upstream) Open(sink upstream.Sink) (upstream.Session, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.closed {
		return nil, upstream.ErrClosed
	}
	s := &session{u: u, route: pool.NewRoute(&u.gate, sink)}
	s.ctx, s.cancel = context.WithCancel(u.ctx)
	u.sessions[s] = struct{}{}
	return s, nil
}

// Close aborts every exchange, DELETEs the upstream sessions still open
// (for a few seconds at most) and waits for its goroutines; no Deliver or
// Fail happens once it returns.
func (u *Upstream) Close() error {
	u.mu.Lock()
	if u.closed {
		u.mu.Unlock()
		return nil
	}
	u.closed = true
	open := make([]*session, 0, len(u.sessions))
	for s := range u.sessions {
		open = append(open, s)
	}
	u.mu.Unlock()
	u.gate.Shut()
	for _, s := range open {
		s.Close()
	}
	for _, t := range u.targets {
		t.smu.Lock()
		sid, version := t.sharedSID, t.sharedVer
		t.sharedSID = ""
		t.smu.Unlock()
		if sid != "" {
			u.wg.Add(1)
			go func() {
				defer u.wg.Done()
				u.delete(t, sid, version)
			}()
		}
	}
	u.cancel()
	u.wg.Wait()
	u.client.CloseIdleConnections()
	return nil
}

func (u *Upstream) forget(s *session) {
	u.mu.Lock()
	delete(u.sessions, s)
	u.mu.Unlock()
}

// begin takes n exchange tokens, all or none.
func (u *Upstream) begin(n int) bool {
	for i := 0; i < n; i++ {
		select {
		case u.sem <- struct{}{}:
		default:
			u.end(i)
			return false
		}
	}
	u.st.AddBusy(n)
	return true
}

func (u *Upstream) end(n int) {
	for i := 0; i < n; i++ {
		<-u.sem
	}
	if n > 0 {
		u.st.AddBusy(-n)
	}
}

// target is one URL of the upstream.
type target struct {
	url       string
	inflight  atomic.Int32
	down      atomic.Bool
	downUntil atomic.Int64 // clock.Now ns; retry after
	fails     atomic.Int32
	// kind is what request mode learned the server speaks.
	kind atomic.Int32

	smu       sync.Mutex // the shared session of a session-only server
	sharedSID string
	sharedVer string
}

// Target kinds, learned by request mode.
const (
	kindUnknown   = iota
	kindStateless // answers requests without a session
	kindLegacy    // needs initialize: request mode uses a shared session
)

func (t *target) isDown(now int64) bool {
	return t.down.Load() && now < t.downUntil.Load()
}

// markDown records a refused connection: the URL is skipped for a delay
// that grows with each failure in a row (0.5 s up to 30 s).
func (u *Upstream) markDown(t *target, err error) {
	n := t.fails.Add(1)
	d := min(500*time.Millisecond<<min(n-1, 6), 30*time.Second)
	t.downUntil.Store(clock.Now() + int64(d)) // monotonic: a wall-clock step neither ends nor stretches it
	if !t.down.Swap(true) {
		u.st.AddSize(-1)
		u.log.Warn("upstream url down", "upstream", u.name, "url", redact(t.url), "err", err)
	}
	u.st.Error("connect")
}

func (u *Upstream) markUp(t *target) {
	if t.down.Load() && t.down.Swap(false) {
		u.st.AddSize(1)
		u.log.Info("upstream url up", "upstream", u.name, "url", redact(t.url))
	}
	t.fails.Store(0)
}

// pick returns the least-loaded URL that is up and not in tried, or when
// every such URL is down, the one to be retried soonest (someone has to
// find out it is back); nil when all were tried.
func (u *Upstream) pick(tried uint64) *target {
	now := clock.Now()
	var best, probe *target
	start := int(u.rr.Add(1))
	for i := range u.targets {
		k := (start + i) % len(u.targets)
		t := u.targets[k]
		if tried&(1<<(k%64)) != 0 {
			continue
		}
		if t.isDown(now) {
			if probe == nil || t.downUntil.Load() < probe.downUntil.Load() {
				probe = t
			}
			continue
		}
		if best == nil || t.inflight.Load() < best.inflight.Load() {
			best = t
		}
	}
	if best == nil {
		return probe
	}
	return best
}

func (u *Upstream) index(t *target) uint64 {
	for i, x := range u.targets {
		if x == t {
			return 1 << (i % 64)
		}
	}
	return 0
}

// isDial reports whether err means the connection could not be made: the
// request never reached the server, so it is safe to send elsewhere.
func isDial(err error) bool {
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" {
		return true
	}
	var dns *net.DNSError
	return errors.As(err, &dns)
}

// errKind is the error metric's kind for a failed exchange: "descriptors"
// when the descriptor budget refused the connection, else "http".
func errKind(err error) string {
	if errors.Is(err, fdbudget.ErrNoDescriptor) {
		return "descriptors"
	}
	return "http"
}

// redact keeps credentials a URL may hold out of the log.
func redact(raw string) string {
	p, err := url.Parse(raw)
	if err != nil {
		return "(bad url)"
	}
	return p.Redacted()
}
