package abuse

import (
	"bytes"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mcpgate/gateway/conformance/wsraw"
)

// A message flood on one connection is closed 1008 "Rate limit exceeded"
// once per_connection (100 messages in 10 s, the default) is exceeded; at
// most the allowed messages are answered, and other clients are served.
func TestMessageFlood(t *testing.T) {
	eachTransport(t, func(t *testing.T, tr wsraw.Transport) {
		const allowed = 100
		g := startOn(t, tr, nil)
		by := authed(t, g)
		c := authed(t, g)
		var flood []byte
		for i := range 1000 {
			flood = append(flood, wsraw.Frame(true, 0, wsraw.OpText, pingReq(i+1))...)
		}
		began := time.Now()
		go func() { _ = c.Write(flood) }() // the gateway may close before it is all in
		answered := expectClose(t, c, 1008, "Rate limit exceeded", 5*time.Second)
		t.Logf("1000 requests in one write: %d answered, then close 1008 \"Rate limit exceeded\" after %v",
			answered, time.Since(began).Round(time.Millisecond))
		if answered > allowed {
			t.Errorf("%d requests answered, the limit is %d", answered, allowed)
		}
		if _, err := c.WaitEOF(3 * time.Second); err != nil {
			t.Errorf("after the close: %v", err)
		}
		checkServes(t, by, 1)

		// Paced: one request at a time, each answered, exactly the allowed
		// number; the next one is cut.
		p := authed(t, g)
		for i := 1; i <= allowed; i++ {
			checkServes(t, p, i)
		}
		if err := p.Write(wsraw.Frame(true, 0, wsraw.OpText, pingReq(allowed+1))); err != nil {
			t.Fatal(err)
		}
		if n := expectClose(t, p, 1008, "Rate limit exceeded", 5*time.Second); n != 0 {
			t.Errorf("request %d answered", allowed+1)
		}
		t.Logf("paced: %d requests answered, request %d closed 1008", allowed, allowed+1)
		checkServes(t, authed(t, g), 1)
	})
}

// Endless 1-byte continuation frames: exactly max_message_bytes (64 KiB
// here) of them are taken, a ping in between is still answered, and the
// first byte over closes the connection 1009, however long the client goes
// on sending.
func TestEndlessContinuation(t *testing.T) {
	eachTransport(t, func(t *testing.T, tr wsraw.Transport) {
		const max = 64 << 10
		// The frame budget would end this first (1,000 frames): lifted,
		// since the case is the byte limit (TestFrameBudget has frames).
		g := startOn(t, tr, wsraw.Config{"limits": `
  max_message_bytes: 64KiB
  idle_timeout: 600s
  ping_interval: 300s`, "ratelimit": `
  frames_per_connection: {count: 10000000, window: 10s}`})
		by := authed(t, g)
		c := authed(t, g)
		one := []byte(" ")
		cont := wsraw.Frame(false, 0, wsraw.OpContinuation, one)
		stream := wsraw.Frame(false, 0, wsraw.OpText, one)
		for range max - 1 {
			stream = append(stream, cont...)
		}
		began := time.Now()
		if err := c.Write(stream); err != nil {
			t.Fatal(err)
		}
		// Still open at exactly max_message_bytes: a ping gets its pong, which
		// also proves every frame before it was parsed.
		if err := c.Write(wsraw.Frame(true, 0, wsraw.OpPing, []byte("at max"))); err != nil {
			t.Fatal(err)
		}
		f, err := c.ReadFrame(10 * time.Second)
		if err != nil || f.Op != wsraw.OpPong || string(f.Payload) != "at max" {
			t.Fatalf("at exactly max_message_bytes in %d fragments: %s %v, want the pong", max, f, err)
		}
		t.Logf("%d one-byte fragments (%d bytes on the wire) taken in %v", max, len(stream), time.Since(began).Round(time.Millisecond))

		// Then an endless stream: the first fragment over the limit ends it.
		var sent atomic.Int64
		stop := make(chan struct{})
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			batch := bytes.Repeat(cont, 1024)
			for {
				select {
				case <-stop:
					return
				default:
				}
				if err := c.Write(batch); err != nil {
					return
				}
				sent.Add(1024)
			}
		}()
		at := time.Now()
		expectClose(t, c, 1009, "", 5*time.Second)
		t.Logf("close 1009 %v after the endless fragments began (%d fragments written by then)",
			time.Since(at).Round(time.Millisecond), sent.Load())
		close(stop)
		c.Close()
		wg.Wait()
		checkServes(t, by, 1)
		if v := g.Metric(t, `gateway_messages_rejected_total{reason="too_big"}`); v != 1 {
			t.Errorf(`gateway_messages_rejected_total{reason="too_big"} = %v, want 1`, v)
		}
	})
}

// errSlowConsumer is the reading flooder's close 1008 "Slow consumer".
var errSlowConsumer = errors.New(`close 1008 "Slow consumer"`)

// errFrameBudget is a flooder's close 1008 "Rate limit exceeded" (SPEC 10:
// every frame counts against frames_per_connection).
var errFrameBudget = errors.New(`close 1008 "Rate limit exceeded"`)

// A ping flood is cut, never fatal: pings count against
// frames_per_connection (1,000 in 10 s by default), so a client that reads
// its pongs gets at most 1,000 of them and then close 1008 "Rate limit
// exceeded"; one that never reads is closed the same way (or, behind a
// proxy that resets on its unread writes, at the TCP level); the gateway
// keeps serving a bystander throughout, whose request latency is reported.
func TestPingFlood(t *testing.T) {
	eachTransport(t, func(t *testing.T, tr wsraw.Transport) {
		const floodFor = 2 * time.Second
		g := startOn(t, tr, nil)
		by := authed(t, g)

		payload := bytes.Repeat([]byte("p"), 125)
		batch := bytes.Repeat(wsraw.Frame(true, 0, wsraw.OpPing, payload), 256)

		// The reading flooder: every ping answered with its pong.
		reader := authed(t, g)
		var pongs atomic.Int64
		readDone := make(chan error, 1)
		go func() {
			for {
				f, err := reader.ReadFrame(5 * time.Second)
				if err != nil {
					readDone <- err
					return
				}
				if f.Op == wsraw.OpClose {
					if code, reason := wsraw.ParseClose(f.Payload); code == 1008 && reason == "Slow consumer" {
						readDone <- errSlowConsumer
						return
					} else if code == 1008 && reason == "Rate limit exceeded" {
						readDone <- errFrameBudget
						return
					}
				}
				if f.Op != wsraw.OpPong || !bytes.Equal(f.Payload, payload) {
					readDone <- fmt.Errorf("got %s", f)
					return
				}
				pongs.Add(1)
			}
		}()
		// The deaf flooder: never reads.
		deaf := authed(t, g)

		var pingsRead, pingsDeaf atomic.Int64
		var deafErr atomic.Value
		deadline := time.Now().Add(floodFor)
		var wg sync.WaitGroup
		for _, fl := range []struct {
			c *wsraw.Conn
			n *atomic.Int64
		}{{reader, &pingsRead}, {deaf, &pingsDeaf}} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for time.Now().Before(deadline) {
					if err := fl.c.Write(batch); err != nil {
						if fl.c == deaf {
							deafErr.Store(err.Error())
						}
						return
					}
					fl.n.Add(256)
				}
			}()
		}
		// The bystander during the flood.
		var worst time.Duration
		for id := 1; time.Now().Before(deadline); id++ {
			t0 := time.Now()
			checkServes(t, by, id)
			worst = max(worst, time.Since(t0))
			time.Sleep(50 * time.Millisecond)
		}
		wg.Wait()
		alive(t, g)

		// The reader gets a pong for every ping, unless it could not keep up
		// and was cut as a slow consumer.
		var readEnd error
		for end := time.Now().Add(10 * time.Second); pongs.Load() < pingsRead.Load() && readEnd == nil && time.Now().Before(end); {
			select {
			case readEnd = <-readDone:
			case <-time.After(20 * time.Millisecond):
			}
		}
		switch {
		case readEnd == errFrameBudget && pongs.Load() <= 1000:
			t.Logf("reading flooder: %d pings of 125 bytes sent, %d pongs, then close 1008 \"Rate limit exceeded\"",
				pingsRead.Load(), pongs.Load())
		default:
			t.Errorf("reading flooder: %d pongs for %d pings (%v), want at most 1000 then close 1008", pongs.Load(), pingsRead.Load(), readEnd)
		}
		// The deaf one: cut as a slow consumer, or still open with everything
		// queued within write_buffer_bytes and the socket buffers.
		var outcome string
		f, err := deaf.ReadFrame(time.Second)
		for err == nil && f.Op == wsraw.OpPong {
			f, err = deaf.ReadFrame(time.Second)
		}
		switch {
		case err == nil && f.Op == wsraw.OpClose:
			code, reason := wsraw.ParseClose(f.Payload)
			outcome = fmt.Sprintf("closed %d %q", code, reason)
			if code != 1008 || reason != "Rate limit exceeded" {
				t.Errorf("deaf flooder: %s, want close 1008 \"Rate limit exceeded\"", outcome)
			}
		case err != nil && wsraw.IsTimeout(err):
			t.Errorf("deaf flooder still open after %d pings", pingsDeaf.Load())
		case err != nil:
			outcome = fmt.Sprintf("cut at the TCP level (%v)", err)
		default:
			t.Errorf("deaf flooder got %s", f)
		}
		if e := deafErr.Load(); e != nil {
			outcome += fmt.Sprintf("; its writes failed: %v", e)
		}
		t.Logf("deaf flooder: %d pings sent, %s", pingsDeaf.Load(), outcome)
		t.Logf("bystander served throughout; slowest request during the flood: %v", worst.Round(time.Millisecond))
		checkServes(t, by, 10000)
		checkServes(t, authed(t, g), 1)
		alive(t, g)
	})
}

// Connections that fail before authenticating (bad token, or closed by the
// client) give their max_pending_auth slot back: after many of them, a new
// client is still admitted.
func TestPendingAuthSlotsReleased(t *testing.T) {
	eachTransport(t, func(t *testing.T, tr wsraw.Transport) {
		const slots = 5
		g := startOn(t, tr, wsraw.Config{"limits": `
  max_pending_auth: 5
  idle_timeout: 600s
  ping_interval: 300s`})
		for i := range 4 * slots {
			c, err := g.Dial("/mcp")
			if err != nil {
				t.Fatal(err)
			}
			if c.Resp.StatusCode != 101 {
				t.Fatalf("connection %d after %d failed authentications: upgrade answered %s "+
					"(pending-auth slots not released; gateway_connections_pending_auth = %v)",
					i+1, i, c.Resp.Status, g.Metric(t, "gateway_connections_pending_auth"))
			}
			if i%2 == 0 {
				_ = c.Write(wsraw.Frame(true, 0, wsraw.OpText, []byte(`{"type":"auth","token":"wrong-token-0123456789"}`)))
				expectClose(t, c, 1008, "Invalid credentials", 5*time.Second)
			} else {
				_ = c.Write(wsraw.CloseFrame(1000, nil))
				expectClose(t, c, 1000, "", 5*time.Second)
			}
			_, _ = c.WaitEOF(3 * time.Second)
			c.Close()
		}
		time.Sleep(100 * time.Millisecond)
		if v := g.Metric(t, "gateway_connections_pending_auth"); v != 0 {
			t.Errorf("gateway_connections_pending_auth = %v with no connection open", v)
		}
		checkServes(t, authed(t, g), 1)
	})
}
