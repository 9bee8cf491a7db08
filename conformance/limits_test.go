package conformance

import (
	"bytes"

	"github.com/mcpgate/gateway/conformance/wsraw"
)

// Section 9: limits. Autobahn's section 9 measures throughput; here it is
// max_message_bytes (1 MiB), which is decided from frame headers and the
// running total of fragments before any payload is buffered.
func limitCases() []testCase {
	fragmented := func(total, fragSize int, want int) func(x *cx) {
		return func(x *cx) {
			id := x.id()
			req, msg := echoOfLen(id, total)
			frames := bytes.Join(fragments(req, everyN(req, fragSize)...), nil)
			if want == 0 {
				x.send(frames)
				x.expectEcho(id, msg)
				x.alive()
				return
			}
			x.sendAsync(frames)
			x.expectClose(want)
		}
	}
	single := func(total int, want int) func(x *cx) {
		return func(x *cx) {
			id := x.id()
			req, msg := echoOfLen(id, total)
			f := wsraw.Frame(true, 0, wsraw.OpText, req)
			if want == 0 {
				x.send(f)
				x.expectEcho(id, msg)
				x.alive()
				return
			}
			x.sendAsync(f)
			x.expectClose(want)
		}
	}
	headerOnly := func(n uint64, want ...int) func(x *cx) {
		return func(x *cx) {
			x.send(wsraw.Header(true, 0, wsraw.OpText, n), []byte(`{"jsonrpc"`))
			x.expectClose(want...)
		}
	}
	return []testCase{
		{ID: "9.1.1", Desc: "one frame of max_message_bytes - 1", Expect: "echoed", Run: single(maxMsg-1, 0)},
		{ID: "9.1.2", Desc: "one frame of exactly max_message_bytes (1 MiB)", Expect: "echoed", Run: single(maxMsg, 0)},
		{ID: "9.1.3", Desc: "one frame of max_message_bytes + 1", Expect: "close 1009", Run: single(maxMsg+1, 1009)},
		{ID: "9.1.4", Desc: "frame header announcing max_message_bytes + 1, only 10 payload bytes sent", Expect: "close 1009 (decided from the header)",
			Run: headerOnly(maxMsg+1, 1009)},
		{ID: "9.1.5", Desc: "frame header announcing 2^62 bytes", Expect: "close 1009", Run: headerOnly(1<<62, 1009)},
		{ID: "9.1.6", Desc: "frame header announcing 2^63 bytes (most significant bit set, RFC 6455 5.2)", Expect: "close 1002 or 1009",
			Run: headerOnly(1<<63, 1002, 1009)},
		{ID: "9.2.1", Desc: "max_message_bytes - 1 in 64 KiB fragments", Expect: "echoed", Run: fragmented(maxMsg-1, 64<<10, 0)},
		{ID: "9.2.2", Desc: "exactly max_message_bytes in 64 KiB fragments", Expect: "echoed", Run: fragmented(maxMsg, 64<<10, 0)},
		{ID: "9.2.3", Desc: "max_message_bytes + 1 in 64 KiB fragments", Expect: "close 1009", Run: fragmented(maxMsg+1, 64<<10, 1009)},
		{ID: "9.2.4", Desc: "max_message_bytes + 1 in 4 KiB fragments", Expect: "close 1009", Run: fragmented(maxMsg+1, 4<<10, 1009)},
		{ID: "9.2.5", Desc: "fragments of exactly max_message_bytes, then a final fragment header announcing 1 more byte (no payload)",
			Expect: "close 1009 (decided from the running total and the header)",
			Run: func(x *cx) {
				req := bytes.Repeat([]byte(" "), maxMsg) // JSON whitespace, never completed
				frames := fragments(req, everyN(req, 64<<10)...)
				last := frames[len(frames)-1]
				last[0] &^= 0x80 // not final: the message goes on
				x.send(frames...)
				x.send(wsraw.Header(true, 0, wsraw.OpContinuation, 1))
				x.expectClose(1009)
			}},
		{ID: "9.2.6", Desc: "2 fragment headers each announcing max_message_bytes / 2 + 1; the second sent without payload",
			Expect: "close 1009",
			Run: func(x *cx) {
				half := maxMsg/2 + 1
				x.send(wsraw.Frame(false, 0, wsraw.OpText, bytes.Repeat([]byte(" "), half)),
					wsraw.Header(true, 0, wsraw.OpContinuation, uint64(half)))
				x.expectClose(1009)
			}},
		{ID: "9.3.1", Desc: "100 ping requests in one write", Expect: "100 answers",
			Run: func(x *cx) { pipelined(x, 100, 0) }},
		{ID: "9.3.2", Desc: "1000 ping requests in one write", Expect: "1000 answers",
			Run: func(x *cx) { pipelined(x, 1000, 0) }},
		{ID: "9.3.3", Desc: "16 echo requests of 64 KiB in one write", Expect: "16 exact echoes",
			Run: func(x *cx) { pipelined(x, 16, 64<<10) }},
		{ID: "9.4.1", Desc: "before authentication: a message of max_preauth_message_bytes (16 KiB) + 1", Expect: "close 1009",
			PreAuth: true,
			Run: func(x *cx) {
				msg := cat([]byte(`{"type":"auth","token":"`), bytes.Repeat([]byte("t"), maxPreAuth), []byte(`"}`))
				x.sendAsync(wsraw.Frame(true, 0, wsraw.OpText, msg[:maxPreAuth+1]))
				x.expectClose(1009)
			}},
		{ID: "9.4.2", Desc: "before authentication: frame header announcing max_message_bytes (no payload)", Expect: "close 1009",
			PreAuth: true, Run: headerOnly(maxMsg, 1009)},
	}
}

// pipelined sends n requests in one write (pings when size is 0, else echo
// requests of size bytes) and checks every one is answered exactly once.
func pipelined(x *cx, n, size int) {
	var buf []byte
	msgs := map[int][]byte{}
	for range n {
		id := x.id()
		if size == 0 {
			buf = append(buf, wsraw.Frame(true, 0, wsraw.OpText, pingReq(id))...)
			msgs[id] = nil
			continue
		}
		req, msg := echoOfLen(id, size)
		msgs[id] = msg
		buf = append(buf, wsraw.Frame(true, 0, wsraw.OpText, req)...)
	}
	x.sendAsync(buf)
	x.expectEchoes(msgs)
	x.alive()
}
