package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/mcpgate/gateway/conformance/wsraw"
)

// The issue 15 drain rows: a client that obeys -31000 "Reconnect" (stops
// sending on it, reconnects elsewhere when it may) loses nothing, through
// a drain (SIGTERM) and through a rolling restart behind HAProxy; and with
// rebalancing on, the nodes even out after the restart.

// obeyClient is an MCP client that sends a request every interval and
// keeps count of each request id until it is answered (a result or a
// JSON-RPC error) or lost (its connection closed first). On -31000 it stops
// sending on that connection and waits for the close; with reconnect set it
// then dials again (through the balancer) and carries on.
type obeyClient struct {
	dial      func() (*wsraw.Conn, error)
	interval  time.Duration
	reconnect bool
	pad       string // every fourth request carries it (past the builtin's inline size)

	next atomic.Int64
	// counts, read once the client is done
	sent, results, reconnects, otherErrors, lost atomic.Int64
	closes                                       atomic.Int64 // closes by the server with 1001
	badCloses                                    atomic.Int64 // closes with another code, or none
	retryAfterMissing                            atomic.Int64
	conns                                        atomic.Int64
	closedAt                                     atomic.Int64 // unix ns of the last 1001 seen
	lastErr                                      atomic.Value
	lostWhy                                      atomic.Value // how the last loss happened
}

// runConn serves one connection until it closes or ctx ends; it reports
// whether the gateway closed it (the client may reconnect).
func (c *obeyClient) runConn(ctx context.Context, r *wsraw.Conn) (closedByServer bool) {
	c.conns.Add(1)
	var (
		mu      sync.Mutex
		pending = map[int64]bool{}
		stop    atomic.Bool // -31000 seen, or the connection ended
		told    atomic.Bool // -31000 seen
		// the last two writes (unix ns), for the account of a loss
		lastWrite, prevWrite atomic.Int64
		opened               = time.Now()
		closeAt, ended       time.Time
	)
	done := make(chan struct{})
	go func() { // writer
		defer close(done)
		// A random phase, then every interval.
		t := time.NewTimer(time.Duration(rand.Int64N(int64(c.interval))))
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			if stop.Load() {
				return
			}
			id := c.next.Add(1)
			msg := fmt.Sprintf(`{"jsonrpc":"2.0","id":%d,"method":"tools/call","params":{"name":"echo","arguments":{"message":"m%d"}}}`, id, id)
			if id%4 == 0 && c.pad != "" {
				msg = fmt.Sprintf(`{"jsonrpc":"2.0","id":%d,"method":"tools/call","params":{"name":"echo","arguments":{"message":"%s"}}}`, id, c.pad)
			}
			mu.Lock()
			pending[id] = true
			mu.Unlock()
			c.sent.Add(1)
			prevWrite.Store(lastWrite.Load())
			lastWrite.Store(time.Now().UnixNano())
			if err := r.Write(wsraw.Frame(true, 0, wsraw.OpText, []byte(msg))); err != nil {
				return // the reader sees the end
			}
			t.Reset(c.interval)
		}
	}()
	defer func() {
		stop.Store(true)
		r.Close()
		<-done
		mu.Lock()
		if n := len(pending); n > 0 {
			c.lost.Add(int64(n))
			lw, pw := time.Unix(0, lastWrite.Load()), time.Unix(0, prevWrite.Load())
			c.lostWhy.Store(fmt.Sprintf("%d unanswered at close: conn age %v, -31000 seen %v, last write %v before the close, the one before %v earlier",
				n, closeAt.Sub(opened).Round(time.Millisecond), told.Load(), closeAt.Sub(lw).Round(time.Millisecond), lw.Sub(pw).Round(time.Millisecond)))
		}
		mu.Unlock()
	}()
	var resp struct {
		ID    int64
		Error *struct {
			Code int
			Data struct {
				RetryAfterMS *int64 `json:"retry_after_ms"`
			}
		}
	}
	for {
		f, err := r.ReadFrame(3 * time.Second)
		if err != nil {
			if wsraw.IsTimeout(err) {
				if ctx.Err() != nil {
					mu.Lock()
					n := len(pending)
					mu.Unlock()
					if ended.IsZero() {
						ended = time.Now()
					}
					// Done: once nothing is due, or 10 s on (what is
					// still due is then lost).
					if n == 0 || time.Since(ended) > 10*time.Second {
						closeAt = time.Now()
						return false
					}
				}
				continue
			}
			closeAt = time.Now()
			c.badCloses.Add(1)
			c.lastErr.Store(err.Error())
			return true
		}
		switch f.Op {
		case wsraw.OpText:
			resp.ID, resp.Error = 0, nil
			if err := json.Unmarshal(f.Payload, &resp); err != nil {
				c.lastErr.Store("bad answer " + wsraw.Truncate(string(f.Payload), 200))
				continue
			}
			mu.Lock()
			known := pending[resp.ID]
			delete(pending, resp.ID)
			mu.Unlock()
			if !known {
				c.lastErr.Store("answer to no pending request: " + wsraw.Truncate(string(f.Payload), 200))
				c.otherErrors.Add(1)
				continue
			}
			switch {
			case resp.Error == nil:
				c.results.Add(1)
			case resp.Error.Code == -31000:
				c.reconnects.Add(1)
				if resp.Error.Data.RetryAfterMS == nil {
					c.retryAfterMissing.Add(1)
				}
				stop.Store(true) // do not send here again
				told.Store(true)
			default:
				c.otherErrors.Add(1)
				c.lastErr.Store("error answer " + wsraw.Truncate(string(f.Payload), 200))
			}
		case wsraw.OpPing:
			_ = r.Write(wsraw.Frame(true, 0, wsraw.OpPong, f.Payload))
		case wsraw.OpClose:
			closeAt = time.Now()
			code, reason := wsraw.ParseClose(f.Payload)
			if code == 1001 {
				c.closes.Add(1)
				c.closedAt.Store(time.Now().UnixNano())
			} else {
				c.badCloses.Add(1)
				c.lastErr.Store(fmt.Sprintf("close %d %q", code, reason))
			}
			_ = r.Write(wsraw.CloseFrame(code, nil))
			return true
		}
	}
}

// run serves connections until ctx ends (dialling again after a server
// close when reconnect is set), then waits for the answers still due.
func (c *obeyClient) run(ctx context.Context, first *wsraw.Conn) {
	r := first
	for {
		if !c.runConn(ctx, r) || !c.reconnect || ctx.Err() != nil {
			return
		}
		for {
			var err error
			if r, err = c.dial(); err == nil {
				break
			}
			c.lastErr.Store("dial: " + err.Error())
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Duration(50+rand.IntN(100)) * time.Millisecond):
			}
		}
	}
}

// obeyTotals sums the clients' counts.
type obeyTotals struct {
	sent, results, reconnects, otherErrors, lost, closes, badCloses, retryAfterMissing, conns int64
	firstClose, lastClose                                                                     time.Time
	errs                                                                                      []string
}

func sumObey(cs []*obeyClient) obeyTotals {
	var o obeyTotals
	var closes []int64
	seen := map[string]bool{}
	for _, c := range cs {
		o.sent += c.sent.Load()
		o.results += c.results.Load()
		o.reconnects += c.reconnects.Load()
		o.otherErrors += c.otherErrors.Load()
		o.lost += c.lost.Load()
		o.closes += c.closes.Load()
		o.badCloses += c.badCloses.Load()
		o.retryAfterMissing += c.retryAfterMissing.Load()
		o.conns += c.conns.Load()
		if at := c.closedAt.Load(); at != 0 {
			closes = append(closes, at)
		}
		if e, ok := c.lastErr.Load().(string); ok && !seen[e] && len(o.errs) < 5 {
			seen[e] = true
			o.errs = append(o.errs, e)
		}
		if e, ok := c.lostWhy.Load().(string); ok && len(o.errs) < 10 {
			o.errs = append(o.errs, e)
		}
	}
	if len(closes) > 0 {
		sort.Slice(closes, func(i, j int) bool { return closes[i] < closes[j] })
		o.firstClose, o.lastClose = time.Unix(0, closes[0]), time.Unix(0, closes[len(closes)-1])
	}
	return o
}

func (o obeyTotals) String() string {
	return fmt.Sprintf("sent %d: %d results, %d -31000, %d other errors, %d lost; %d connections, %d closed 1001, %d otherwise; closes over %v; errors %q",
		o.sent, o.results, o.reconnects, o.otherErrors, o.lost, o.conns, o.closes, o.badCloses,
		o.lastClose.Sub(o.firstClose).Round(time.Millisecond), o.errs)
}

// drainConfig lifts the per-IP and per-connection limits for many clients
// from one address.
func drainConfig() []option {
	return []option{
		with("ratelimit", `
  per_connection: {messages: 100000, window: 10s}
  frames_per_connection: {count: 100000, window: 10s}
  per_subject: {messages: 10000000, window: 10s}
  handshakes_per_ip: {count: 100000, window: 10s}`),
		with("limits", `
  handshake_timeout: 10s
  idle_timeout: 60s
  ping_interval: 20s
  max_connections_per_ip: 100000
  max_pending_auth: 100000`),
		with("log", `
  format: json
  level: warn`),
	}
}

// startFastGatewayOn is startGatewayOn with the binary built without -race
// (these rows are about load).
func startFastGatewayOn(t testing.TB, tr wsraw.Transport, opts ...option) *gateway {
	t.Helper()
	return &gateway{wsraw.LaunchOnFreePorts(t, gatewayBinFast, func(addr, admin string) wsraw.Spec {
		return nodeSpec(addr, admin, tr, opts...)
	})}
}

// nodeSpec is the spec startGatewayFull makes, for a gateway on addr and
// admin.
func nodeSpec(addr, admin string, tr wsraw.Transport, opts ...option) wsraw.Spec {
	cfg := baseConfig(addr, admin)
	for _, o := range opts {
		o(cfg)
	}
	return wsraw.Spec{
		Addr: addr, Admin: admin, Config: cfg,
		Files: map[string]string{
			"tokens.txt":  "# sha256 subject\n" + sha(aliceToken) + " alice\n" + sha(bobToken) + " bob\n",
			"jwt.key":     jwtSecret + "\n",
			"admin.token": adminToken + "\n",
		},
		LogLimit:  1 << 20,
		Transport: tr,
	}
}

// dialMany opens n authenticated connections with dial, 32 at a time.
func dialMany(t *testing.T, n int, dial func() (*wsraw.Conn, error)) []*wsraw.Conn {
	t.Helper()
	out := make([]*wsraw.Conn, n)
	errs := make(chan error, n)
	sem := make(chan struct{}, 32)
	var wg sync.WaitGroup
	for i := range out {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			var err error
			for attempt := 0; attempt < 5; attempt++ {
				if out[i], err = dial(); err == nil {
					return
				}
				time.Sleep(100 * time.Millisecond)
			}
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		for _, r := range out {
			if r != nil {
				r.Close()
			}
		}
		t.Fatalf("connecting %d clients: %v", n, err)
	}
	return out
}

// TestDrainLosesNothing: 1,000 connections, each sending a request every
// 500 ms (one in four past the builtin's inline size, so answered from a
// worker: in flight), and SIGTERM. Every request is answered (a result, or
// -31000 with retry_after_ms for those that arrive during the drain), every
// client is closed 1001 with nothing unanswered, the closes are spread
// over the quiet grace (not one sweep), and the process exits 0. Over each
// transport, one after the other (a thousand clients each).
func TestDrainLosesNothing(t *testing.T) {
	n := 1000
	if v := os.Getenv("DRAIN_CLIENTS"); v != "" {
		fmt.Sscan(v, &n)
	}
	wsraw.ForTransports(t, wsraw.Transports(), false, func(t *testing.T, tr wsraw.Transport) {
		g := startFastGatewayOn(t, tr, append(drainConfig(), with("drain_timeout", "20s"))...)
		conns := dialMany(t, n, func() (*wsraw.Conn, error) { return g.DialAuthed(aliceToken) })
		pad := strings.Repeat("p", 17<<10)
		clients := make([]*obeyClient, n)
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		var wg sync.WaitGroup
		for i := range clients {
			clients[i] = &obeyClient{interval: 500 * time.Millisecond, pad: pad}
			wg.Add(1)
			go func() { defer wg.Done(); clients[i].run(ctx, conns[i]) }()
		}
		time.Sleep(2 * time.Second) // every client has sent a few
		term := time.Now()
		must(t, g.Signal(syscall.SIGTERM))
		wg.Wait()
		took := time.Since(term)
		tot := sumObey(clients)
		t.Logf("%s: %d clients: %v; all closed %v after SIGTERM", tr, n, tot, took.Round(time.Millisecond))
		if ctx.Err() != nil {
			t.Fatalf("clients still open 60 s after SIGTERM: %v", tot)
		}
		if tot.lost != 0 || tot.otherErrors != 0 || tot.badCloses != 0 || tot.closes != int64(n) ||
			tot.retryAfterMissing != 0 || tot.reconnects == 0 {
			t.Fatalf("drain lost or misanswered requests: %v", tot)
		}
		// Spread: the closes take more than one sweep (100 ms); by design
		// they cover DrainSpread (1 s) after each connection's quiet grace.
		if spread := tot.lastClose.Sub(tot.firstClose); spread < 300*time.Millisecond {
			t.Fatalf("closes within %v: one burst, not spread over the grace", spread)
		}
		select {
		case <-g.Exited():
		case <-time.After(25 * time.Second):
			t.Fatal("gateway did not exit after drain")
		}
		if err := g.ExitErr(); err != nil {
			t.Fatalf("exit after drain: %v", err)
		}
	})
}

// clusterNode is a gateway on fixed ports that a test can stop and start
// again on the same ports (a rolling restart behind a balancer).
type clusterNode struct {
	addr, admin, dir string
	opts             []option
	g                *gateway
}

func (n *clusterNode) start(t *testing.T) {
	t.Helper()
	n.g = &gateway{wsraw.Launch(t, gatewayBinFast, n.dir, nodeSpec(n.addr, n.admin, wsraw.WS, n.opts...))}
}

// restart drains the node (SIGTERM), waits for it to exit, and starts it
// again on the same ports; it returns the drain's duration.
func (n *clusterNode) restart(t *testing.T) time.Duration {
	t.Helper()
	start := time.Now()
	must(t, n.g.Signal(syscall.SIGTERM))
	select {
	case <-n.g.Exited():
	case <-time.After(30 * time.Second):
		t.Fatal("node did not exit after its drain")
	}
	if err := n.g.ExitErr(); err != nil {
		t.Fatalf("exit after drain: %v", err)
	}
	took := time.Since(start)
	n.start(t)
	return took
}

func (n *clusterNode) open(t *testing.T) int {
	return int(n.g.Metric(t, "gateway_connections_open"))
}

// TestRollingRestartRebalance: two nodes behind HAProxy (TCP mode,
// send-proxy-v2, health checks on /readyz), 400 clients that each send a
// request every 500 ms, obey -31000 and reconnect through HAProxy after
// their 1001. Node 1 is restarted (drained, started again on its ports),
// then node 2: no request is lost, and with rebalancing on (margin 5 %,
// 50 reconnects/s) the nodes hold within 20 % of each other's connections
// within 60 s of the second restart (without it every client would stay on
// node 1).
func TestRollingRestartRebalance(t *testing.T) {
	rd := startRedis(t)
	const clients = 400
	opts := append(drainConfig(),
		with("drain_timeout", "15s"),
		with("proxy", `
  trusted_cidrs: ["127.0.0.0/8"]
  proxy_protocol: true`),
		with("redis", fmt.Sprintf(`
  url: %q
  on_failure: local`, rd.URL())),
		with("rebalance", `
  enabled: true
  margin: 0.05
  rate: 50`))
	nodes := make([]*clusterNode, 2)
	for i := range nodes {
		nodes[i] = &clusterNode{addr: fmt.Sprintf("127.0.0.1:%d", wsraw.FreePort(t)),
			admin: fmt.Sprintf("127.0.0.1:%d", wsraw.FreePort(t)), dir: t.TempDir(), opts: opts}
		nodes[i].start(t)
	}
	hp := wsraw.HAProxy{Defaults: "  retries 3\n  option redispatch\n", Backend: `  balance roundrobin
  option httpchk GET /readyz
  default-server inter 100ms fall 1 rise 2
`}
	for _, n := range nodes {
		_, adminPort, _ := strings.Cut(n.admin, ":")
		hp.Servers = append(hp.Servers, wsraw.HAServer{Addr: n.addr, Options: "send-proxy-v2 check port " + adminPort})
	}
	front := wsraw.StartHAProxy(t, hp)
	time.Sleep(500 * time.Millisecond) // first health checks
	dial := func() (*wsraw.Conn, error) { return wsraw.DialAuthed(front, aliceToken) }

	conns := dialMany(t, clients, dial)
	cs := make([]*obeyClient, clients)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	for i := range cs {
		cs[i] = &obeyClient{dial: dial, interval: 500 * time.Millisecond, reconnect: true}
		wg.Add(1)
		go func() { defer wg.Done(); cs[i].run(ctx, conns[i]) }()
	}
	stopped := false
	stop := func() obeyTotals {
		if !stopped {
			stopped = true
			cancel()
			wg.Wait()
		}
		return sumObey(cs)
	}
	defer stop()
	counts := func() (int, int) { return nodes[0].open(t), nodes[1].open(t) }
	time.Sleep(3 * time.Second)
	a, b := counts()
	t.Logf("before the restarts: node 1 %d, node 2 %d", a, b)
	for i, n := range nodes {
		took := n.restart(t)
		a, b := counts()
		t.Logf("node %d drained in %v and started again: node 1 %d, node 2 %d", i+1, took.Round(time.Millisecond), a, b)
		time.Sleep(3 * time.Second) // health checks see it up (rise 2 x 100 ms)
	}
	second := time.Now()
	var evenAt time.Duration
	for {
		a, b := counts()
		hi, lo := max(a, b), min(a, b)
		if hi > 0 && float64(hi-lo) <= 0.2*float64(hi) && a+b >= clients*9/10 {
			if evenAt == 0 {
				evenAt = time.Since(second)
				t.Logf("within 20 %% after %v: node 1 %d, node 2 %d", evenAt.Round(100*time.Millisecond), a, b)
			}
			if time.Since(second) > evenAt+5*time.Second {
				break // and it stays so
			}
		} else if evenAt != 0 {
			t.Logf("apart again after %v: node 1 %d, node 2 %d", time.Since(second).Round(100*time.Millisecond), a, b)
			evenAt = 0
		}
		if time.Since(second) > 60*time.Second {
			t.Errorf("60 s after the second restart: node 1 %d, node 2 %d connections (not within 20 %%)", a, b)
			break
		}
		time.Sleep(time.Second)
	}
	asked := nodes[0].g.Metric(t, "gateway_rebalance_reconnects_total") + nodes[1].g.Metric(t, "gateway_rebalance_reconnects_total")
	tot := stop()
	t.Logf("%d clients: %v; asked to move by rebalancing: %v", clients, tot, asked)
	if tot.lost != 0 || tot.otherErrors != 0 || tot.retryAfterMissing != 0 {
		t.Fatalf("rolling restart lost or misanswered requests: %v", tot)
	}
	if tot.badCloses != 0 {
		t.Fatalf("closes other than 1001: %v", tot)
	}
}

// TestDrainQuiet: what holds a draining connection open. A client that
// only pings (and answers none) is closed 1001 after the quiet grace and
// the wait for a pong (3-4 s) as if idle; a
// client that keeps sending requests after its -31000 gets -31000 for
// each and is closed 1001 at drain_timeout (8 s here), not before.
func TestDrainQuiet(t *testing.T) {
	eachTransport(t, func(t *testing.T, tr wsraw.Transport) {
		g := startGatewayOn(t, tr, with("drain_timeout", "8s"))
		pinger := g.authed(t, aliceToken)
		sender := g.authed(t, bobToken)
		term := time.Now()
		must(t, g.Signal(syscall.SIGTERM))
		stop := make(chan struct{})
		defer close(stop)
		go func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				case <-time.After(100 * time.Millisecond):
				}
				_ = pinger.c.SetWriteDeadline(time.Now().Add(time.Second))
				_, _ = pinger.c.Write(buildFrame(true, 0, 9, true, []byte("p"))) // fails once it is closed
				_ = sender.c.SetWriteDeadline(time.Now().Add(time.Second))
				if _, err := sender.c.Write(buildFrame(true, 0, 1, true, []byte(fmt.Sprintf(`{"jsonrpc":"2.0","id":%d,"method":"ping"}`, i)))); err != nil {
					return
				}
			}
		}()
		at := pinger.expectClose(1001, "Going away", 10*time.Second)
		// The grace is 1-2 s, then 2 s for a pong this client never
		// sends; drain_timeout is 8 s away.
		if d := at.Sub(term); d > 6*time.Second {
			t.Errorf("a pinging client closed %v after SIGTERM, want after the grace (3-4 s without a pong), not at drain_timeout", d)
		}
		refused := 0
		for {
			f, err := sender.readFrame(10 * time.Second)
			if err != nil {
				t.Fatalf("sender: %v after %d -31000", err, refused)
			}
			if f.op == 1 {
				if !strings.Contains(string(f.payload), `"code":-31000`) {
					t.Fatalf("sender during drain: %s", f.payload)
				}
				refused++
				continue
			}
			if f.op == 8 {
				code, _ := wsraw.ParseClose(f.payload)
				d := time.Since(term)
				if code != 1001 || d < 7500*time.Millisecond {
					t.Fatalf("a client that keeps sending: close %d after %v, want 1001 at drain_timeout (8 s)", code, d)
				}
				t.Logf("%s: %d requests answered -31000, close 1001 after %v", tr, refused, d.Round(time.Millisecond))
				return
			}
		}
	})
}
