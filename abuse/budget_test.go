package abuse

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mcpgate/gateway/conformance/wsraw"
)

// Every frame counts (SPEC 10): at most 32 before authentication, then
// ratelimit.frames_per_connection; pings and empty continuation frames
// included. The client reads close 1008 "Rate limit exceeded".
func TestFrameBudget(t *testing.T) {
	eachTransport(t, func(t *testing.T, tr wsraw.Transport) {
		g := startOn(t, tr, wsraw.Config{"ratelimit": `
  frames_per_connection: {count: 50, window: 10s}`})
		by := authed(t, g)

		// Before authentication: 40 pings, 32 pongs at most, then 1008.
		pre, err := g.Dial("/mcp")
		if err != nil {
			t.Fatal(err)
		}
		defer pre.Close()
		_ = pre.Write(bytes.Repeat(wsraw.Frame(true, 0, wsraw.OpPing, []byte("x")), 40))
		pongs := readPongsUntilClose(t, pre, 1008, "Rate limit exceeded")
		if pongs > 32 {
			t.Errorf("pre-auth: %d pongs, at most 32 frames may be read", pongs)
		}

		// Authenticated: pings count.
		c := authed(t, g)
		_ = c.Write(bytes.Repeat(wsraw.Frame(true, 0, wsraw.OpPing, []byte("x")), 60))
		if pongs := readPongsUntilClose(t, c, 1008, "Rate limit exceeded"); pongs > 50 {
			t.Errorf("authenticated: %d pongs, the budget is 50 frames", pongs)
		}

		// Empty continuation frames count too.
		e := authed(t, g)
		stream := wsraw.Frame(false, 0, wsraw.OpText, nil)
		stream = append(stream, bytes.Repeat(wsraw.Frame(false, 0, wsraw.OpContinuation, nil), 100)...)
		_ = e.Write(stream)
		readPongsUntilClose(t, e, 1008, "Rate limit exceeded")

		checkServes(t, by, 1)
		if v := g.Metric(t, `gateway_ratelimit_decisions_total{decision="deny",limiter="frames"}`); v < 3 {
			t.Errorf("frames denials = %v, want >= 3", v)
		}
		alive(t, g)
	})
}

// readPongsUntilClose counts pongs until the close frame, which must carry
// code and reason.
func readPongsUntilClose(t *testing.T, c *wsraw.Conn, code int, reason string) int {
	t.Helper()
	pongs := 0
	for {
		f, err := c.ReadFrame(5 * time.Second)
		if err != nil {
			t.Fatalf("after %d pongs, waiting for close %d: %v", pongs, code, err)
		}
		switch f.Op {
		case wsraw.OpPong:
			pongs++
		case wsraw.OpClose:
			got, why := wsraw.ParseClose(f.Payload)
			if got != code || why != reason {
				t.Fatalf("close %d %q, want %d %q", got, why, code, reason)
			}
			return pongs
		default:
			t.Fatalf("got %s, want pongs then close %d", f, code)
		}
	}
}

// A message trickled byte by byte, or fragment by fragment, is closed 1008
// "Message timeout" message_timeout after its first frame: trickling does
// not extend it. Whole messages sent slowly are not affected.
func TestMessageTimeout(t *testing.T) {
	eachTransport(t, func(t *testing.T, tr wsraw.Transport) {
		const timeout = time.Second
		g := startOn(t, tr, wsraw.Config{"limits": `
  message_timeout: 1s`})
		body := pingReq(7)
		whole := wsraw.Frame(true, 0, wsraw.OpText, body)

		trickle := func(name string, parts [][]byte) {
			c := authed(t, g)
			began := time.Now()
			stop := make(chan struct{})
			var wg sync.WaitGroup
			wg.Add(1)
			go func() {
				defer wg.Done()
				for _, p := range parts {
					select {
					case <-stop:
						return
					case <-time.After(150 * time.Millisecond):
					}
					if c.Write(p) != nil {
						return
					}
				}
			}()
			expectClose(t, c, 1008, "Message timeout", 5*time.Second)
			took := time.Since(began)
			close(stop)
			wg.Wait()
			// The sweeper looks every 100 ms; the first byte left at 150 ms.
			if took < timeout || took > timeout+time.Second {
				t.Errorf("%s: closed after %v, want message_timeout (%v) after the first byte", name, took, timeout)
			}
			t.Logf("%s: close 1008 \"Message timeout\" after %v", name, took.Round(time.Millisecond))
		}
		var bytesOne [][]byte
		for i := range whole[:len(whole)-1] {
			bytesOne = append(bytesOne, whole[i:i+1])
		}
		for range 40 {
			bytesOne = append(bytesOne, nil) // keep the goroutine pacing
		}
		trickle("byte by byte", bytesOne)
		frags := [][]byte{wsraw.Frame(false, 0, wsraw.OpText, body[:1])}
		for range 40 {
			frags = append(frags, wsraw.Frame(false, 0, wsraw.OpContinuation, []byte(" ")))
		}
		trickle("fragment by fragment", frags)

		// Whole messages, slowly, for longer than the timeout: all answered.
		c := authed(t, g)
		for i := 1; i <= 5; i++ {
			checkServes(t, c, i)
			time.Sleep(300 * time.Millisecond)
		}
		alive(t, g)
	})
}

// A pre-auth ping flood does not take the loops from other clients: four
// hostile connections that send pings without authenticating, reconnect as
// soon as they are cut and ignore every refusal (429, 503), while a fresh
// authenticated client's echo p99 stays within 3x its baseline (SPEC 10).
// The flooder is a separate process at nice 19: an attacker's CPU is not
// the gateway's machine, and the test measures what the gateway spends,
// not what the attacker does. Rate limits are the defaults, but for the
// bystander's own (it sends thousands of requests).
func TestPreAuthPingFloodBystander(t *testing.T) {
	g := start(t, wsraw.Config{"ratelimit": `
  per_connection: {messages: 1000000, window: 1s}
  per_subject: {messages: 1000000, window: 1s}
  frames_per_connection: {count: 1000000, window: 1s}`})
	by := authed(t, g)
	id := 0
	// p99 of at least n round trips over at least span.
	p99 := func(n int, span time.Duration) time.Duration {
		var d []time.Duration
		for end := time.Now().Add(span); len(d) < n || time.Now().Before(end); {
			id++
			i := id
			t0 := time.Now()
			checkServes(t, by, i)
			d = append(d, time.Since(t0))
		}
		sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
		return d[len(d)*99/100]
	}
	p99(200, 0) // warm
	// The flooder takes whatever CPU is idle and other test packages run
	// beside this one: a round is a baseline and a flood measured back to
	// back, and the gateway must hold 3x in one of three rounds.
	var rounds []string
	for round := 1; round <= 3; round++ {
		base := p99(2000, 0)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		fl := exec.CommandContext(ctx, "nice", "-n", "19", os.Args[0], "-test.run=^$")
		fl.Env = append(os.Environ(), floodAddrEnv+"="+g.Addr, floodForEnv+"=20s")
		var out bytes.Buffer
		fl.Stdout, fl.Stderr = &out, &out
		if err := fl.Start(); err != nil {
			cancel()
			t.Fatal(err)
		}
		// Longer than lingerTime (1 s): the flooders are cut and reconnect.
		time.Sleep(300 * time.Millisecond)
		during := p99(2000, 2500*time.Millisecond)
		_ = fl.Process.Signal(os.Interrupt)
		_ = fl.Wait()
		cancel()
		if !strings.Contains(out.String(), "connections") {
			t.Fatalf("the flooder did not run: %s", out.String())
		}
		rounds = append(rounds, fmt.Sprintf("round %d: %v alone, %v during (%s)",
			round, base, during, strings.TrimSpace(out.String())))
		t.Logf("bystander echo p99 %s", rounds[len(rounds)-1])
		if during <= 3*base {
			alive(t, g)
			return
		}
	}
	t.Errorf("bystander p99 during a pre-auth ping flood > 3x its baseline in every round:\n%s",
		strings.Join(rounds, "\n"))
	alive(t, g)
}

const (
	floodAddrEnv = "ABUSE_FLOOD_ADDR"
	floodForEnv  = "ABUSE_FLOOD_FOR"
)

// pingFlood is the flooder process of TestPreAuthPingFloodBystander: four
// connections to addr (ws:// on loopback) write an upgrade request and then
// 125-byte pings as fast as the socket takes them, never reading; each
// reconnects at once when its connection fails. It stops after ABUSE_FLOOD_FOR
// or at SIGINT and prints what it did.
func pingFlood(addr string) {
	d, err := time.ParseDuration(os.Getenv(floodForEnv))
	if err != nil || d <= 0 || d > time.Minute {
		d = 10 * time.Second
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	up := []byte(wsraw.UpgradeRequest(addr, "/mcp"))
	ping := bytes.Repeat(wsraw.Frame(true, 0, wsraw.OpPing, bytes.Repeat([]byte("p"), 125)), 256)
	var conns, bytesOut atomic.Int64
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				c, err := net.DialTimeout("tcp", addr, time.Second)
				if err != nil {
					continue
				}
				conns.Add(1)
				stopOnDone := context.AfterFunc(ctx, func() { c.Close() })
				_, err = c.Write(up)
				for err == nil {
					var n int
					n, err = c.Write(ping)
					bytesOut.Add(int64(n))
				}
				stopOnDone()
				c.Close()
			}
		}()
	}
	wg.Wait()
	fmt.Printf("%d connections, %s of pings written\n", conns.Load(), mib(bytesOut.Load()))
}
