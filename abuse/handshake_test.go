package abuse

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/mcpgate/gateway/conformance/wsraw"
)

// An upgrade request trickled 1 byte per second (slowloris) is dropped at
// handshake_timeout, counted from the accept: the trickle does not extend it.
func TestSlowUpgrade(t *testing.T) {
	eachTransport(t, func(t *testing.T, tr wsraw.Transport) {
		const timeout = 2 * time.Second
		g := startOn(t, tr, wsraw.Config{"limits": `
  handshake_timeout: 2s
  idle_timeout: 600s
  ping_interval: 300s`})
		by := authed(t, g)

		began := time.Now()
		c, err := g.DialNet("")
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		req := []byte(wsraw.UpgradeRequest(g.Addr, "/mcp"))
		sent := make(chan int, 1)
		go func() {
			n := 0
			for ; n < len(req); n++ {
				if _, err := c.Write(req[n : n+1]); err != nil {
					break
				}
				time.Sleep(time.Second)
			}
			sent <- n
		}()
		_ = c.SetReadDeadline(time.Now().Add(timeout + 5*time.Second))
		got, err := io.ReadAll(c)
		dropped := time.Since(began)
		if wsraw.IsTimeout(err) {
			t.Fatalf("still open %v after connecting, handshake_timeout is %v", dropped.Round(time.Millisecond), timeout)
		}
		if len(got) != 0 {
			t.Fatalf("the gateway answered %q to a trickled request", wsraw.Truncate(string(got), 80))
		}
		c.Close()
		n := <-sent
		t.Logf("dropped %v after connecting, %d bytes of the %d-byte request trickled in", dropped.Round(time.Millisecond), n, len(req))
		if dropped < timeout-50*time.Millisecond || dropped > timeout+time.Second {
			t.Errorf("dropped after %v, want handshake_timeout %v (+ 1 s)", dropped.Round(time.Millisecond), timeout)
		}
		checkServes(t, by, 1)
		if v := g.Metric(t, `gateway_handshakes_total{result="timeout"}`); v != 1 {
			t.Errorf(`gateway_handshakes_total{result="timeout"} = %v, want 1`, v)
		}
	})
}

// One header line of 1 MiB is answered 431 as soon as max_header_bytes are
// buffered without the end of the head, and the rest is never read.
func TestHugeHeaderLine(t *testing.T) {
	eachTransport(t, func(t *testing.T, tr wsraw.Transport) {
		const maxHeader = 8 << 10 // the default
		g := startOn(t, tr, nil)
		by := authed(t, g)
		head := "GET /mcp HTTP/1.1\r\nHost: " + g.Addr + "\r\nUpgrade: websocket\r\nX-Padding: "

		// The decision: one byte short of max_header_bytes the gateway waits;
		// at max_header_bytes it answers 431 and closes.
		c, err := g.DialNet("")
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		prefix := head + strings.Repeat("a", maxHeader-len(head))
		if _, err := io.WriteString(c, prefix[:maxHeader-1]); err != nil {
			t.Fatal(err)
		}
		_ = c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		if n, err := c.Read(make([]byte, 64)); !wsraw.IsTimeout(err) {
			t.Fatalf("answered (%d bytes, %v) at max_header_bytes - 1 buffered", n, err)
		}
		if _, err := io.WriteString(c, prefix[maxHeader-1:]); err != nil {
			t.Fatal(err)
		}
		expect431(t, c)
		t.Logf("431 once %d bytes (max_header_bytes) were in, not at %d", maxHeader, maxHeader-1)

		// The flood: a 1 MiB line sent at once. The gateway's read(2) count
		// (rchar) shows how much it took in before closing.
		before, err := g.ReadChars()
		if err != nil {
			t.Fatal(err)
		}
		c2, err := g.DialNet("")
		if err != nil {
			t.Fatal(err)
		}
		defer c2.Close()
		big := head + strings.Repeat("a", 1<<20) + "\r\n\r\n"
		wrote := make(chan int64, 1)
		go func() {
			n, _ := io.Copy(c2, strings.NewReader(big))
			wrote <- n
		}()
		expect431(t, c2)
		c2.Close()
		accepted := <-wrote
		time.Sleep(200 * time.Millisecond)
		after, err := g.ReadChars()
		if err != nil {
			t.Fatal(err)
		}
		read := after - before
		t.Logf("1 MiB header line: 431; the client's kernel took %d bytes before the reset; the gateway read %d bytes (read(2) total, all fds)",
			accepted, read)
		// gnet reads up to its 64 KiB buffer per wake-up; the gateway looks at
		// max_header_bytes of it and closes.
		if read > 128<<10 {
			t.Errorf("the gateway read %d bytes of a 1 MiB header line; it should stop near max_header_bytes (%d)", read, maxHeader)
		}
		checkServes(t, by, 1)
		alive(t, g)
	})
}

func expect431(t *testing.T, c net.Conn) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(3 * time.Second))
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("reading the answer: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != 431 {
		t.Fatalf("answer %s, want 431", resp.Status)
	}
	var b [1]byte
	if n, err := br.Read(b[:]); n != 0 || wsraw.IsTimeout(err) {
		t.Fatalf("connection not closed after the 431 (%d bytes, %v)", n, err)
	}
}

// permessage-deflate (and the older deflate-frame) offered by the client is
// never accepted: the 101 carries no Sec-WebSocket-Extensions, and a frame
// with RSV1 set, as a compressed one would be, is a protocol error.
func TestDeflateNeverAccepted(t *testing.T) {
	eachTransport(t, func(t *testing.T, tr wsraw.Transport) {
		g := startOn(t, tr, nil)
		offers := []string{
			"Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits",
			"Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; client_no_context_takeover",
			"Sec-WebSocket-Extensions: x-webkit-deflate-frame",
		}
		for _, offer := range offers {
			c, err := g.Dial("/mcp", offer)
			if err != nil {
				t.Fatal(err)
			}
			if c.Resp.StatusCode != 101 {
				t.Fatalf("%s: upgrade answered %s", offer, c.Resp.Status)
			}
			if ext, ok := c.Resp.Header["Sec-Websocket-Extensions"]; ok {
				t.Errorf("%s: the 101 accepts extensions %q", offer, ext)
			}
			c.Close()
		}
		c, err := g.Dial("/mcp", offers[0])
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if err := c.Write(wsraw.Frame(true, 0, wsraw.OpText, []byte(`{"type":"auth","token":"`+wsraw.Token+`"}`))); err != nil {
			t.Fatal(err)
		}
		if f, err := c.ReadFrame(5 * time.Second); err != nil || !bytes.HasPrefix(f.Payload, []byte(`{"type":"auth_ok"`)) {
			t.Fatalf("auth: %s %v", f, err)
		}
		checkServes(t, c, 1)
		// A "compressed" message: deflate of a ping request, RSV1 set.
		deflated := []byte{0xab, 0x56, 0xca, 0x2a, 0xce, 0xcf, 0x2b, 0x2a, 0x48, 0x56, 0xb2, 0x52, 0x32, 0xd2, 0x33, 0x50, 0x02, 0x00}
		if err := c.Write(wsraw.Frame(true, 4, wsraw.OpText, deflated)); err != nil {
			t.Fatal(err)
		}
		expectClose(t, c, 1002, "", 5*time.Second)
	})
}
