package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mcpgate/gateway/conformance/wsraw"
)

// SPEC 10, Descriptors: the gateway counts every descriptor it opens against
// the open-file limit and refuses new clients with 503 + Retry-After before
// the limit; it never exits or stops accepting because a descriptor could
// not be had.

// slowMCP is a stateless MCP server over Streamable HTTP (JSON answers): it
// answers every request with an empty result after delay, so that
// concurrent requests need concurrent connections.
func slowMCP(t *testing.T, delay time.Duration) (string, *atomic.Int64) {
	var conns atomic.Int64
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			http.Error(w, "POST only", http.StatusMethodNotAllowed)
			return
		}
		var msg struct {
			ID json.RawMessage `json:"id"`
		}
		body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		if json.Unmarshal(body, &msg) != nil || msg.ID == nil {
			w.WriteHeader(http.StatusAccepted)
			return
		}
		time.Sleep(delay)
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"jsonrpc":"2.0","id":%s,"result":{}}`, msg.ID)
	}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		switch s {
		case http.StateNew:
			conns.Add(1)
		case http.StateClosed, http.StateHijacked:
			conns.Add(-1)
		}
	}
	srv.Start()
	t.Cleanup(srv.Close)
	return srv.URL + "/mcp", &conns
}

// budgetUpstreams routes /sh to a pool of shWorkers (max), /http to url,
// /mcp to the builtin demo.
func budgetUpstreams(t *testing.T, max int, url string) option {
	script := filepath.Join(t.TempDir(), "worker.sh")
	must(t, os.WriteFile(script, []byte(shWorker), 0o700))
	return func(c map[string]string) {
		c["upstreams"] = fmt.Sprintf(`
  - {name: demo, type: builtin}
  - name: sh
    type: stdio
    command: [%q]
    min_idle: 2
    max: %d
    max_per_subject: %d
  - name: remote
    type: http
    urls: [%q]`, script, max, max, url)
		c["routes"] = `
  - {path: /mcp, upstream: demo}
  - {path: /sh, upstream: sh}
  - {path: /http, upstream: remote}`
	}
}

// scrape reads one gauge from the admin /metrics (-1 when absent).
func scrape(body, name string) float64 {
	m := regexp.MustCompile(`(?m)^` + name + ` (\S+)$`).FindStringSubmatch(body)
	if m == nil {
		return -1
	}
	v, _ := strconv.ParseFloat(m[1], 64)
	return v
}

// fdFlood opens n connections that each ask for an upgrade on /mcp, and
// sorts the answers: 101, 503 with Retry-After, 503 without it, a reset or
// EOF before any answer (a refused socket closed before its request was
// read), and a hang (no answer within 5 s).
type floodResult struct {
	upgraded, refused503, no503RetryAfter, reset, hung, dialFailed int
	conns                                                          []net.Conn
}

func fdFlood(t *testing.T, addr string, n int) floodResult {
	var r floodResult
	for i := 0; i < n; i++ {
		c, err := net.DialTimeout("tcp", addr, 2*time.Second)
		if err != nil {
			r.dialFailed++
			continue
		}
		r.conns = append(r.conns, c)
		_ = c.SetWriteDeadline(time.Now().Add(2 * time.Second))
		_, _ = c.Write([]byte(wsraw.UpgradeRequest(addr, "/mcp")))
	}
	for _, c := range r.conns {
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		switch {
		case err == nil && resp.StatusCode == 101:
			r.upgraded++
		case err == nil && resp.StatusCode == 503 && resp.Header.Get("Retry-After") != "":
			r.refused503++
		case err == nil:
			r.no503RetryAfter++
		case isTimeout(err):
			r.hung++
		default:
			r.reset++
		}
	}
	return r
}

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}

// Every kind of descriptor user at once under a 256-file limit: session-mode
// clients each holding a stdio child, an HTTP upstream under load, admin
// /metrics scraped throughout, Redis (the per-subject limiter and a
// revocation), and a flood of clients past the limit. The gateway stays up,
// refuses the excess with 503 + Retry-After (none hangs), keeps serving the
// clients it has, and serves fresh ones once the flood is gone.
func TestDescriptorBudgetEveryKind(t *testing.T) {
	rd := startRedis(t)
	httpURL, httpConns := slowMCP(t, 30*time.Millisecond)
	wrap := func(bin string, args []string) (string, []string) {
		return "/bin/bash", append([]string{"-c", `ulimit -n 256 && exec "$0" "$@"`, bin}, args...)
	}
	g := startGatewayCmd(t, wrap, budgetUpstreams(t, 64, httpURL), with("limits", `
  handshake_timeout: 5s
  max_connections_per_ip: 100000
  max_pending_auth: 100000`), with("ratelimit", `
  handshakes_per_ip: {count: 100000, window: 10s}
  per_connection: {messages: 100000, window: 10s}
  frames_per_connection: {count: 100000, window: 10s}
  per_subject: {messages: 1000000, window: 10s}`), with("redis", fmt.Sprintf(`
  url: %q
  on_failure: local`, rd.URL())))
	adminURL := "http://" + g.Admin + "/metrics"
	getMetrics := func() (string, error) {
		cl := &http.Client{Timeout: 5 * time.Second}
		resp, err := cl.Get(adminURL)
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return string(b), err
	}

	// Admin /metrics, scraped all along.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var scrapes, scrapeErrs atomic.Int64
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			case <-time.After(50 * time.Millisecond):
			}
			if _, err := getMetrics(); err != nil {
				scrapeErrs.Add(1)
			} else {
				scrapes.Add(1)
			}
		}
	}()

	// The HTTP upstream under load: 8 clients, each with 4 requests in
	// flight at all times (from before the sessions on).
	httpOK, httpErr, httpClients := httpLoad(t, g, 8, 4, stop, &wg)
	// Session-mode clients, each holding a child (4 descriptors in the
	// gateway, plus its socket).
	sessions, noWorker, refusedAt503 := openSessions(t, g, 35)
	mt, err := getMetrics()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d sessions hold a child, %d got 1013 No worker available, %d were refused 503; descriptors %v of %v",
		len(sessions), noWorker, refusedAt503, scrape(mt, "gateway_descriptors_open"), scrape(mt, "gateway_descriptors_limit"))
	if len(sessions) < 25 {
		t.Fatalf("only %d of 35 sessions got a child under a 256-file limit", len(sessions))
	}

	time.Sleep(500 * time.Millisecond)
	okBefore := httpOK.Load()
	if okBefore == 0 {
		t.Fatalf("no HTTP upstream answer under load (%d errors)", httpErr.Load())
	}

	// The flood: more connections than the whole limit.
	fl := fdFlood(t, g.Addr, 400)
	// Redis in use meanwhile: a revocation goes through it.
	req, _ := http.NewRequest("POST", "http://"+g.Admin+"/admin/revoke", strings.NewReader(`{"subject":"mallory","ttl":"1m"}`))
	req.Header.Set("Authorization", "Bearer "+adminToken)
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Do(req)
	if err != nil {
		t.Fatalf("revoke during the flood: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("revoke during the flood: %s", resp.Status)
	}
	t.Logf("flood of 400: %d upgraded, %d refused 503 with Retry-After, %d other answers, %d reset before an answer, %d hung, %d dials failed",
		fl.upgraded, fl.refused503, fl.no503RetryAfter, fl.reset, fl.hung, fl.dialFailed)
	if fl.hung > 0 || fl.no503RetryAfter > 0 || fl.dialFailed > 0 {
		t.Errorf("flood: %d hung, %d answers other than 101 or 503 + Retry-After, %d dials failed", fl.hung, fl.no503RetryAfter, fl.dialFailed)
	}
	if fl.refused503 < 100 {
		t.Errorf("flood: only %d refused with 503 + Retry-After", fl.refused503)
	}
	mt, err = getMetrics()
	if err != nil {
		t.Fatalf("metrics while the flood holds its connections: %v", err)
	}
	open, limit := scrape(mt, "gateway_descriptors_open"), scrape(mt, "gateway_descriptors_limit")
	t.Logf("during the flood: descriptors %v of %v; upstream connections at the server %d", open, limit, httpConns.Load())
	if limit != 256 || open <= 0 || open >= 256 {
		t.Errorf("descriptor gauges: open %v, limit %v", open, limit)
	}

	// The sessions held through it are served.
	for i, r := range sessions {
		r.sendText(fmt.Sprintf(`{"jsonrpc":"2.0","id":%d,"method":"ping"}`, 100+i))
		if f, err := r.readFrame(10 * time.Second); err != nil || !strings.Contains(string(f.payload), fmt.Sprintf(`"id":%d,"result"`, 100+i)) {
			t.Fatalf("session %d after the flood: %v %q", i, err, f.payload)
		}
	}
	for _, c := range fl.conns {
		c.Close()
	}
	okMid := httpOK.Load()
	time.Sleep(1500 * time.Millisecond) // a reconciliation
	if httpOK.Load() == okMid {
		t.Errorf("the HTTP upstream stopped answering (%d errors)", httpErr.Load())
	}
	close(stop)
	wg.Wait()
	t.Logf("HTTP upstream: %d answers, %d errors; metrics: %d scrapes, %d failed", httpOK.Load(), httpErr.Load(), scrapes.Load(), scrapeErrs.Load())
	// Clients are refused a margin before the upstream's connections are.
	if httpErr.Load()*100 > httpOK.Load() {
		t.Errorf("%d HTTP upstream errors for %d answers", httpErr.Load(), httpOK.Load())
	}
	if scrapes.Load() == 0 {
		t.Error("no /metrics scrape succeeded")
	}

	// Once some clients leave (their children and the upstream's idle
	// connections give their descriptors back), fresh clients are served:
	// the engine still accepts.
	for _, r := range httpClients {
		r.c.Close()
	}
	for _, r := range sessions[len(sessions)/2:] {
		r.c.Close()
	}
	sessions = sessions[:len(sessions)/2]
	time.Sleep(2 * time.Second)
	fresh := dialAuthed(t, g.Addr, bobToken)
	fresh.sendText(`{"jsonrpc":"2.0","id":1,"method":"ping"}`)
	if got := fresh.readText(); got != `{"jsonrpc":"2.0","id":1,"result":{}}` {
		t.Fatalf("fresh client: %s", got)
	}
	sessions[0].c.Close()
	s := authOver(t, g.raw(t, "/sh"), bobToken)
	s.sendText(shInitialize)
	if got := s.readText(); !strings.Contains(got, `"serverInfo"`) {
		t.Fatalf("fresh session: %s", got)
	}
	select {
	case <-g.Exited():
		t.Fatalf("gateway exited: %v\n%s", g.ExitErr(), wsraw.Truncate(g.Logs(), 4000))
	default:
	}
	if logs := g.Logs(); strings.Contains(strings.ToLower(logs), "too many open files") || strings.Contains(logs, "Accept() failed") {
		t.Fatalf("the gateway met the open-file limit:\n%s", wsraw.Truncate(logs, 4000))
	}
}

// httpLoad runs n clients on /http, each keeping inflight requests in
// flight until stop closes; it counts answers and errors.
func httpLoad(t *testing.T, g *gateway, n, inflight int, stop chan struct{}, wg *sync.WaitGroup) (ok, errs *atomic.Int64, clients []*raw) {
	ok, errs = new(atomic.Int64), new(atomic.Int64)
	for i := 0; i < n; i++ {
		r := authOver(t, g.raw(t, "/http"), bobToken)
		clients = append(clients, r)
		_ = r.c.SetDeadline(time.Time{})
		wg.Add(1)
		go func() {
			defer wg.Done()
			wr := &wsraw.Conn{C: r.c, BR: r.br}
			id := 0
			send := func() bool {
				id++
				_ = r.c.SetWriteDeadline(time.Now().Add(5 * time.Second))
				_, err := r.c.Write(buildFrame(true, 0, 1, true, []byte(fmt.Sprintf(`{"jsonrpc":"2.0","id":%d,"method":"tools/list"}`, id))))
				return err == nil
			}
			for range inflight {
				if !send() {
					errs.Add(1)
					return
				}
			}
			for {
				f, err := wr.ReadFrame(10 * time.Second)
				if err != nil || f.Op != 1 {
					errs.Add(1)
					return
				}
				if strings.Contains(string(f.Payload), `"result"`) {
					ok.Add(1)
				} else if errs.Add(1) == 1 {
					t.Logf("first HTTP upstream error: %s", wsraw.Truncate(string(f.Payload), 300))
				}
				select {
				case <-stop:
					return
				default:
				}
				if !send() {
					errs.Add(1)
					return
				}
			}
		}()
	}
	return ok, errs, clients
}

// openSessions opens up to n session-mode clients on /sh, each holding a
// stdio child; it counts those refused a child (1013) or refused at the
// upgrade (503).
func openSessions(t *testing.T, g *gateway, n int) (sessions []*raw, noWorker, refused503 int) {
	t.Helper()
	for i := 0; i < n; i++ {
		r := g.raw(t, "/sh")
		if r.resp.StatusCode == 503 {
			refused503++ // the budget: no room for one more client
			continue
		}
		r = authOver(t, r, aliceToken)
		_ = r.c.SetDeadline(time.Time{})
		r.sendText(shInitialize)
		f, err := r.readFrame(10 * time.Second)
		switch {
		case err != nil:
			t.Fatalf("session %d: %v", i, err)
		case f.op == 8:
			code, reason := wsraw.ParseClose(f.payload)
			if code != 1013 {
				t.Fatalf("session %d: close %d %q", i, code, reason)
			}
			noWorker++
		case !strings.Contains(string(f.payload), `"serverInfo"`):
			t.Fatalf("session %d: %s", i, f.payload)
		default:
			sessions = append(sessions, r)
		}
	}
	return sessions, noWorker, refused503
}
