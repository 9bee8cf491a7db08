package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/mcpgate/gateway/conformance/wsraw"
)

// requireBinary finds a system program the tests need; with CI=true a
// missing one fails the test instead of skipping it.
func requireBinary(t *testing.T, name string) string {
	t.Helper()
	return wsraw.RequireBinary(t, name)
}

type redisServer struct {
	t    *testing.T
	port int
	cmd  *exec.Cmd
}

// startRedis runs an isolated redis-server on a free port, with no
// persistence, that the test can kill and restart.
func startRedis(t *testing.T) *redisServer {
	r := &redisServer{t: t, port: wsraw.FreePort(t)}
	r.start()
	t.Cleanup(r.kill)
	return r
}

func (r *redisServer) URL() string { return fmt.Sprintf("redis://127.0.0.1:%d/0", r.port) }

func (r *redisServer) start() {
	bin := requireBinary(r.t, "redis-server")
	r.cmd = exec.Command(bin, "--port", fmt.Sprint(r.port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no")
	must(r.t, r.cmd.Start())
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", r.port)); err == nil {
			fmt.Fprint(c, "PING\r\n")
			line, _ := bufio.NewReader(c).ReadString('\n')
			c.Close()
			if strings.HasPrefix(line, "+PONG") {
				return
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	r.t.Fatal("redis-server did not start")
}

func (r *redisServer) kill() {
	if r.cmd != nil && r.cmd.Process != nil {
		_ = r.cmd.Process.Kill()
		_, _ = r.cmd.Process.Wait()
		r.cmd = nil
	}
}

// startHAProxy puts HAProxy (TCP mode, round robin, health checks on each
// node's /readyz) in front of the gateways and returns the frontend address.
func startHAProxy(t *testing.T, nodes []*gateway) string {
	hp := wsraw.HAProxy{Defaults: "  retries 3\n  option redispatch\n", Backend: `  balance roundrobin
  option httpchk GET /readyz
  default-server inter 100ms fall 1 rise 2
`}
	for _, g := range nodes {
		_, adminPort, _ := net.SplitHostPort(g.Admin)
		hp.Servers = append(hp.Servers, wsraw.HAServer{Addr: g.Addr, Options: "check port " + adminPort})
	}
	front := wsraw.StartHAProxy(t, hp)
	time.Sleep(300 * time.Millisecond) // first health checks
	return front
}

func clusterNodes(t *testing.T, redisURL string, n int, extra ...option) []*gateway {
	opts := append([]option{
		with("redis", fmt.Sprintf(`
  url: %q
  on_failure: local`, redisURL)),
		with("ratelimit", `
  per_connection: {messages: 100000, window: 10s}
  frames_per_connection: {count: 100000, window: 10s}
  per_subject: {messages: 100, window: 10s}
  handshakes_per_ip: {count: 100000, window: 10s}`),
		with("limits", `
  handshake_timeout: 5s
  max_connections_per_ip: 100000`),
		with("drain_timeout", "10s"),
	}, extra...)
	nodes := make([]*gateway, n)
	for i := range nodes {
		nodes[i] = startGateway(t, opts...)
	}
	return nodes
}

// pingResult sends one ping and says whether it was admitted (a result) or
// limited (-31029).
func pingResult(t *testing.T, r *raw, id int) bool {
	r.sendText(fmt.Sprintf(`{"jsonrpc":"2.0","id":%d,"method":"ping"}`, id))
	got := r.readText()
	var resp struct {
		ID     int
		Result json.RawMessage
		Error  *struct{ Code int }
	}
	must(t, json.Unmarshal([]byte(got), &resp))
	if resp.ID != id {
		t.Fatalf("reply for id %d: %s", id, got)
	}
	if resp.Error != nil {
		if resp.Error.Code != -31029 {
			t.Fatalf("unexpected error %s", got)
		}
		return false
	}
	return true
}

// Three nodes behind HAProxy share one subject's limit through Redis.
func TestClusterSubjectLimit(t *testing.T) {
	rd := startRedis(t)
	nodes := clusterNodes(t, rd.URL(), 3)
	front := startHAProxy(t, nodes)
	var admitted, limited atomic.Int64
	var wg sync.WaitGroup
	for i := 0; i < 6; i++ {
		r := dialAuthed(t, front, aliceToken)
		wg.Add(1)
		go func() {
			defer wg.Done()
			end := time.Now().Add(3 * time.Second)
			for id := 1; time.Now().Before(end); id++ {
				if pingResult(t, r, id) {
					admitted.Add(1)
				} else {
					limited.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	t.Logf("admitted %d, limited %d across 3 nodes (limit 100 per 10s)", admitted.Load(), limited.Load())
	if a := admitted.Load(); a < 95 || a > 105 {
		t.Fatalf("admitted %d, want 95..105", a)
	}
	for i, g := range nodes {
		if g.Metric(t, "gateway_messages_in_total") == 0 {
			t.Fatalf("node %d relayed nothing: the load balancer did not spread the clients", i+1)
		}
	}
}

func TestClusterTicketsAndRevocation(t *testing.T) {
	rd := startRedis(t)
	nodes := clusterNodes(t, rd.URL(), 3)
	// A ticket from node 1 works once, on node 2, and never again on node 3.
	_, body := postTicket(t, nodes[0], bobToken, "")
	var tk struct{ Ticket string }
	must(t, json.Unmarshal([]byte(body), &tk))
	if r := dialRaw(t, nodes[1].Addr, "/mcp?ticket="+tk.Ticket); r.resp.StatusCode != 101 {
		t.Fatalf("ticket on node 2: %s", r.resp.Status)
	}
	if r := dialRaw(t, nodes[2].Addr, "/mcp?ticket="+tk.Ticket); r.resp.StatusCode != 401 {
		t.Fatalf("reused ticket on node 3: %s", r.resp.Status)
	}
	// A revocation on node 1 closes the subject on nodes 2 and 3 within 1 s.
	c2 := dialAuthed(t, nodes[1].Addr, aliceToken)
	c3 := dialAuthed(t, nodes[2].Addr, aliceToken)
	other := dialAuthed(t, nodes[2].Addr, bobToken)
	start := time.Now()
	if code := revoke(t, nodes[0].Admin, adminToken, "alice"); code != 200 {
		t.Fatalf("revoke: %d", code)
	}
	c2.expectClose(1008, "Revoked", 2*time.Second)
	c3.expectClose(1008, "Revoked", 2*time.Second)
	if el := time.Since(start); el > time.Second {
		t.Fatalf("revocation reached the other nodes after %v", el)
	}
	// The token is refused on every node, including one started afterwards.
	late := startGateway(t, with("redis", fmt.Sprintf("\n  url: %q", rd.URL())))
	for _, g := range []*gateway{nodes[1], late} {
		r := dialRaw(t, g.Addr, "/mcp")
		r.sendText(`{"type":"auth","token":"` + aliceToken + `"}`)
		r.expectClose(1008, "Invalid credentials", 3*time.Second)
	}
	other.sendText(`{"jsonrpc":"2.0","id":1,"method":"ping"}`)
	other.readText()
}

// Redis dies under load and comes back: no crash, the local fallback takes
// over, and the shared limit resumes by itself.
func TestClusterRedisFailure(t *testing.T) {
	rd := startRedis(t)
	// A limit the load never reaches, so every node keeps leasing quota.
	nodes := clusterNodes(t, rd.URL(), 2, with("ratelimit", `
  per_connection: {messages: 100000, window: 10s}
  frames_per_connection: {count: 100000, window: 10s}
  per_subject: {messages: 50000, window: 10s}
  handshakes_per_ip: {count: 100000, window: 10s}`))
	var stop atomic.Bool
	var served atomic.Int64
	var wg sync.WaitGroup
	defer func() { stop.Store(true); wg.Wait() }()
	for _, g := range nodes {
		r := dialAuthed(t, g.Addr, bobToken)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for id := 1; !stop.Load(); id++ {
				r.sendText(fmt.Sprintf(`{"jsonrpc":"2.0","id":%d,"method":"ping"}`, id))
				if f, err := r.readFrame(5 * time.Second); err != nil || f.op != 1 {
					return
				}
				served.Add(1)
				time.Sleep(2 * time.Millisecond)
			}
		}()
	}
	time.Sleep(500 * time.Millisecond)
	rd.kill()
	before := served.Load()
	time.Sleep(2 * time.Second)
	if served.Load()-before < 50 {
		t.Fatalf("only %d answers while Redis was down", served.Load()-before)
	}
	for i, g := range nodes {
		if g.Metric(t, "gateway_redis_errors_total") == 0 {
			t.Fatalf("node %d counted no Redis errors", i+1)
		}
		if !g.waitLog("redis unreachable", 3*time.Second) {
			t.Fatalf("node %d logged no fallback", i+1)
		}
	}
	rd.start()
	deadline := time.Now().Add(10 * time.Second)
	for _, g := range nodes {
		for !strings.Contains(g.Logs(), "redis reachable") {
			if time.Now().After(deadline) {
				t.Fatalf("no recovery after Redis came back:\n%s", wsraw.Truncate(g.Logs(), 4000))
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	stop.Store(true)
	wg.Wait()
	for _, g := range nodes {
		select {
		case <-g.Exited():
			t.Fatal("a gateway exited")
		default:
		}
	}
}

// One node drains while clients send: every request is answered (a result,
// or -31000 "Reconnect" once the drain began, after which the client sends
// nothing more there) before its close 1001, and HAProxy sends new
// connections to the other nodes.
func TestClusterDrain(t *testing.T) {
	rd := startRedis(t)
	nodes := clusterNodes(t, rd.URL(), 3, with("ratelimit", `
  per_connection: {messages: 100000, window: 10s}
  frames_per_connection: {count: 100000, window: 10s}
  per_subject: {messages: 1000000, window: 10s}
  handshakes_per_ip: {count: 100000, window: 10s}`))
	front := startHAProxy(t, nodes)
	type client struct {
		r                 *raw
		sent, answered    int
		closedWith        int
		unansweredAtClose int
	}
	clients := make([]*client, 9)
	var wg sync.WaitGroup
	for i := range clients {
		c := &client{r: dialAuthed(t, front, aliceToken)}
		clients[i] = c
		wg.Add(1)
		go func() {
			defer wg.Done()
			// One request at a time with 20 ms between an answer and the next
			// request, for 4 s or until the connection closes. A request that
			// is never answered before the close is one the gateway read and
			// dropped.
			end := time.Now().Add(4 * time.Second)
			for time.Now().Before(end) {
				_ = c.r.c.SetWriteDeadline(time.Now().Add(time.Second))
				if _, err := c.r.c.Write(buildFrame(true, 0, 1, true, []byte(fmt.Sprintf(`{"jsonrpc":"2.0","id":%d,"method":"ping"}`, c.sent)))); err != nil {
					return
				}
				c.sent++
				f, err := c.r.readFrame(5 * time.Second)
				if err != nil {
					return
				}
				switch f.op {
				case 1:
					c.answered++
				case 8:
					c.closedWith, _ = wsraw.ParseClose(f.payload)
					c.unansweredAtClose = c.sent - c.answered
					return
				}
				if strings.Contains(string(f.payload), `"code":-31000`) {
					// Reconnect: send nothing more here; the 1001
					// follows once the connection has been quiet and
					// has answered the drain's ping.
					for {
						f2, err := c.r.readFrame(10 * time.Second)
						if err != nil {
							return
						}
						if f2.op == 9 {
							_, _ = c.r.c.Write(buildFrame(true, 0, 10, true, f2.payload))
							continue
						}
						if f2.op == 8 {
							c.closedWith, _ = wsraw.ParseClose(f2.payload)
							c.unansweredAtClose = c.sent - c.answered
						}
						return
					}
				}
				time.Sleep(20 * time.Millisecond)
			}
		}()
	}
	time.Sleep(500 * time.Millisecond)
	must(t, nodes[0].Signal(syscall.SIGTERM))
	wg.Wait()
	drained := 0
	for _, c := range clients {
		if c.closedWith == 1001 {
			drained++
			if c.unansweredAtClose != 0 {
				t.Fatalf("client closed 1001 with %d requests unanswered", c.unansweredAtClose)
			}
		}
	}
	if drained == 0 {
		t.Fatal("no client of the drained node saw close 1001")
	}
	select {
	case <-nodes[0].Exited():
		if nodes[0].ExitErr() != nil {
			t.Fatalf("drained node exit: %v", nodes[0].ExitErr())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("drained node did not exit")
	}
	// New connections land on the two nodes left.
	for i := 0; i < 6; i++ {
		r := dialAuthed(t, front, aliceToken)
		r.sendText(`{"jsonrpc":"2.0","id":1,"method":"ping"}`)
		r.readText()
	}
	t.Logf("%d clients drained with every request answered", drained)
}
