package conformance

import (
	"bytes"
	"fmt"
	"time"

	"github.com/mcpgate/gateway/conformance/wsraw"
)

// framingLengths are Autobahn 1.1's payload lengths: each boundary of the
// 7-bit, 16-bit and 64-bit length encodings.
var framingLengths = []int{0, 125, 126, 127, 128, 65535, 65536}

// Section 1: framing.
func framingCases() []testCase {
	var cs []testCase
	for i, n := range framingLengths {
		for _, chunked := range []bool{false, true} {
			id := fmt.Sprintf("1.1.%d", i+1)
			desc := fmt.Sprintf("text message of %d bytes in one frame", n)
			if chunked {
				id = fmt.Sprintf("1.2.%d", i+1)
				desc = fmt.Sprintf("text message of %d bytes in one frame, written in chunks (header byte by byte, then 997 bytes)", n)
			}
			cs = append(cs, testCase{ID: id, Desc: desc, Expect: expectFor(n), Run: lengthCase(n, chunked)})
		}
	}
	cs = append(cs,
		testCase{ID: "1.3.1", Desc: "binary message of 125 bytes", Expect: "close 1003 (binary unsupported)",
			Run: func(x *cx) {
				x.send(wsraw.Frame(true, 0, wsraw.OpBinary, bytes.Repeat([]byte{0xfe}, 125)))
				x.expectClose(1003)
			}},
		testCase{ID: "1.3.2", Desc: "empty binary message after a valid text message", Expect: "answer, then close 1003",
			Run: func(x *cx) {
				x.alive()
				x.send(wsraw.Frame(true, 0, wsraw.OpBinary, nil))
				x.expectClose(1003)
			}},
		testCase{ID: "1.4.1", Desc: "unmasked text frame", Expect: "close 1002",
			Run: func(x *cx) {
				x.send(wsraw.Unmasked(true, wsraw.OpText, pingReq(1)))
				x.expectClose(1002)
			}},
		testCase{ID: "1.4.2", Desc: "unmasked ping after a valid text message", Expect: "answer, then close 1002",
			Run: func(x *cx) {
				x.alive()
				x.send(wsraw.Unmasked(true, wsraw.OpPing, []byte("hi")))
				x.expectClose(1002)
			}},
	)
	return cs
}

func expectFor(n int) string {
	if n == 0 {
		return "JSON-RPC -32700 (empty text is not JSON), connection stays"
	}
	return "echoed"
}

func lengthCase(n int, chunked bool) func(x *cx) {
	return func(x *cx) {
		var f []byte
		var msg []byte
		id := x.id()
		if n == 0 {
			f = wsraw.Frame(true, 0, wsraw.OpText, nil)
		} else {
			var req []byte
			req, msg = echoOfLen(id, n)
			f = wsraw.Frame(true, 0, wsraw.OpText, req)
		}
		if chunked {
			hdr := len(f) - n
			x.sendChunked(1, f[:hdr])
			x.sendChunked(997, f[hdr:])
		} else {
			x.send(f)
		}
		if n == 0 {
			x.expectParseError()
			x.alive()
			return
		}
		x.expectEcho(id, msg)
		x.alive()
	}
}

// Section 2: pings and pongs.
func pingCases() []testCase {
	bin := make([]byte, 125)
	for i := range bin {
		bin[i] = byte(255 - i)
	}
	ping := func(payload []byte, chunk int) func(x *cx) {
		return func(x *cx) {
			f := wsraw.Frame(true, 0, wsraw.OpPing, payload)
			if chunk > 0 {
				x.sendChunked(chunk, f)
			} else {
				x.send(f)
			}
			x.expectPong(payload)
			x.alive()
		}
	}
	return []testCase{
		{ID: "2.1", Desc: "ping without payload", Expect: "pong without payload", Run: ping(nil, 0)},
		{ID: "2.2", Desc: "ping with text payload", Expect: "pong with the same payload", Run: ping([]byte("Hello, world!"), 0)},
		{ID: "2.3", Desc: "ping with an 8-byte binary payload (0xFF..0xF8)", Expect: "pong with the same payload", Run: ping(bin[:8], 0)},
		{ID: "2.4", Desc: "ping with 125-byte payload", Expect: "pong with the same payload", Run: ping(bin, 0)},
		{ID: "2.5", Desc: "ping with 126-byte payload", Expect: "close 1002 (control frame over 125 bytes)",
			Run: func(x *cx) {
				x.send(wsraw.Frame(true, 0, wsraw.OpPing, bytes.Repeat([]byte("x"), 126)))
				x.expectClose(1002)
			}},
		{ID: "2.6", Desc: "ping with 125-byte payload, written byte by byte", Expect: "pong with the same payload", Run: ping(bin, 1)},
		{ID: "2.7", Desc: "unsolicited pong without payload", Expect: "ignored, connection stays",
			Run: func(x *cx) {
				x.send(wsraw.Frame(true, 0, wsraw.OpPong, nil))
				x.alive()
			}},
		{ID: "2.8", Desc: "unsolicited pong with payload", Expect: "ignored, connection stays",
			Run: func(x *cx) {
				x.send(wsraw.Frame(true, 0, wsraw.OpPong, []byte("unsolicited pong payload")))
				x.alive()
			}},
		{ID: "2.9", Desc: "unsolicited pong, then ping", Expect: "pong for the ping only",
			Run: func(x *cx) {
				x.send(wsraw.Frame(true, 0, wsraw.OpPong, []byte("unsolicited")),
					wsraw.Frame(true, 0, wsraw.OpPing, []byte("solicited")))
				x.expectPong([]byte("solicited"))
				x.alive()
			}},
		{ID: "2.12", Desc: "unsolicited pong with 126-byte payload", Expect: "close 1002 (control frame over 125 bytes)",
			Run: func(x *cx) {
				x.send(wsraw.Frame(true, 0, wsraw.OpPong, bytes.Repeat([]byte("x"), 126)))
				x.expectClose(1002)
			}},
		{ID: "2.10", Desc: "10 pings with distinct payloads in one write", Expect: "10 pongs, in order",
			Run: func(x *cx) { pingFlood(x, 10, 0) }},
		{ID: "2.11", Desc: "10 pings with distinct payloads, written byte by byte", Expect: "10 pongs, in order",
			Run: func(x *cx) { pingFlood(x, 10, 1) }},
	}
}

func pingFlood(x *cx, n, chunk int) {
	var all [][]byte
	for i := range n {
		all = append(all, wsraw.Frame(true, 0, wsraw.OpPing, fmt.Appendf(nil, "payload-%d", i)))
	}
	if chunk > 0 {
		x.sendChunked(chunk, all...)
	} else {
		x.send(all...)
	}
	for i := range n {
		f := x.next(5 * time.Second)
		if f.Op != wsraw.OpPong || string(f.Payload) != fmt.Sprintf("payload-%d", i) {
			x.fail("pong %d: got %s", i, f)
		}
	}
	x.note("%d pongs in order", n)
	x.alive()
}
