package conformance

import "github.com/mcpgate/gateway/conformance/wsraw"

// Section 5: fragmentation.
func fragmentCases() []testCase {
	protoErr := func(frames func(x *cx) [][]byte) func(x *cx) {
		return func(x *cx) {
			x.send(frames(x)...)
			x.expectClose(1002)
		}
	}
	return []testCase{
		{ID: "5.1", Desc: "ping in 2 fragments", Expect: "close 1002 (fragmented control frame)",
			Run: protoErr(func(*cx) [][]byte {
				return [][]byte{wsraw.Frame(false, 0, wsraw.OpPing, []byte("frag")), wsraw.Frame(true, 0, wsraw.OpContinuation, []byte("ment"))}
			})},
		{ID: "5.2", Desc: "pong in 2 fragments", Expect: "close 1002 (fragmented control frame)",
			Run: protoErr(func(*cx) [][]byte {
				return [][]byte{wsraw.Frame(false, 0, wsraw.OpPong, []byte("frag")), wsraw.Frame(true, 0, wsraw.OpContinuation, []byte("ment"))}
			})},
		{ID: "5.3", Desc: "text message in 2 fragments", Expect: "echoed",
			Run: func(x *cx) { fragEcho(x, 0, nil, 2) }},
		{ID: "5.4", Desc: "text message in 2 fragments, written byte by byte", Expect: "echoed",
			Run: func(x *cx) { fragEcho(x, 1, nil, 2) }},
		{ID: "5.5", Desc: "text message in 2 fragments with a ping in between", Expect: "pong, then echoed",
			Run: func(x *cx) { fragEcho(x, 0, wsraw.Frame(true, 0, wsraw.OpPing, []byte("between")), 2) }},
		{ID: "5.6", Desc: "text message in 2 fragments with a ping in between, written byte by byte", Expect: "pong, then echoed",
			Run: func(x *cx) { fragEcho(x, 1, wsraw.Frame(true, 0, wsraw.OpPing, []byte("between")), 2) }},
		{ID: "5.7", Desc: "text message in 2 fragments with an unsolicited pong in between", Expect: "echoed, pong ignored",
			Run: func(x *cx) { fragEcho(x, 0, wsraw.Frame(true, 0, wsraw.OpPong, []byte("between")), 2) }},
		{ID: "5.8", Desc: "final continuation frame without a started message", Expect: "close 1002",
			Run: protoErr(func(x *cx) [][]byte {
				return [][]byte{wsraw.Frame(true, 0, wsraw.OpContinuation, pingReq(x.id()))}
			})},
		{ID: "5.9", Desc: "non-final continuation frame without a started message", Expect: "close 1002",
			Run: protoErr(func(x *cx) [][]byte {
				return [][]byte{wsraw.Frame(false, 0, wsraw.OpContinuation, pingReq(x.id()))}
			})},
		{ID: "5.10", Desc: "3 continuation frames (non-final, non-final, final) without a start, after a valid message",
			Expect: "answer, then close 1002",
			Run: func(x *cx) {
				x.alive()
				req := pingReq(x.id())
				x.send(wsraw.Frame(false, 0, wsraw.OpContinuation, req[:4]), wsraw.Frame(false, 0, wsraw.OpContinuation, req[4:8]),
					wsraw.Frame(true, 0, wsraw.OpContinuation, req[8:]))
				x.expectClose(1002)
			}},
		{ID: "5.11", Desc: "final text frame inside a fragmented text message", Expect: "close 1002",
			Run: protoErr(func(x *cx) [][]byte {
				req := pingReq(x.id())
				return [][]byte{wsraw.Frame(false, 0, wsraw.OpText, req[:5]), wsraw.Frame(true, 0, wsraw.OpText, req[5:])}
			})},
		{ID: "5.12", Desc: "non-final text frame inside a fragmented text message", Expect: "close 1002",
			Run: protoErr(func(x *cx) [][]byte {
				req := pingReq(x.id())
				return [][]byte{wsraw.Frame(false, 0, wsraw.OpText, req[:5]), wsraw.Frame(false, 0, wsraw.OpText, req[5:10]),
					wsraw.Frame(true, 0, wsraw.OpContinuation, req[10:])}
			})},
		{ID: "5.13", Desc: "binary frame inside a fragmented text message", Expect: "close 1002",
			Run: protoErr(func(x *cx) [][]byte {
				req := pingReq(x.id())
				return [][]byte{wsraw.Frame(false, 0, wsraw.OpText, req[:5]), wsraw.Frame(true, 0, wsraw.OpBinary, req[5:])}
			})},
		{ID: "5.14", Desc: "close frame with FIN clear (fragmented close)", Expect: "close 1002",
			Run: protoErr(func(*cx) [][]byte {
				return [][]byte{wsraw.Frame(false, 0, wsraw.OpClose, []byte{0x03, 0xe8}), wsraw.Frame(true, 0, wsraw.OpContinuation, nil)}
			})},
		{ID: "5.15", Desc: "text message in 1-byte fragments (one per byte of a 110-byte echo request)", Expect: "echoed",
			Run: func(x *cx) {
				id := x.id()
				req, msg := echoOfLen(id, 110)
				x.send(fragments(req, everyN(req, 1)...)...)
				x.expectEcho(id, msg)
				x.alive()
			}},
		{ID: "5.16", Desc: "text message of 64 KiB in 4096 fragments of 16 bytes", Expect: "echoed",
			Run: func(x *cx) {
				id := x.id()
				req, msg := echoOfLen(id, 64<<10)
				x.send(fragments(req, everyN(req, 16)...)...)
				x.expectEcho(id, msg)
				x.alive()
			}},
		{ID: "5.17", Desc: "text message with empty fragments at its start, middle and end", Expect: "echoed",
			Run: func(x *cx) {
				id := x.id()
				req, msg := echoOfLen(id, 200)
				x.send(wsraw.Frame(false, 0, wsraw.OpText, nil), wsraw.Frame(false, 0, wsraw.OpContinuation, req[:100]),
					wsraw.Frame(false, 0, wsraw.OpContinuation, nil), wsraw.Frame(false, 0, wsraw.OpContinuation, req[100:]),
					wsraw.Frame(true, 0, wsraw.OpContinuation, nil))
				x.expectEcho(id, msg)
				x.alive()
			}},
		{ID: "5.18", Desc: "close 1000 between the fragments of a text message", Expect: "close 1000, the partial message unanswered",
			Run: func(x *cx) {
				req := pingReq(x.id())
				x.send(wsraw.Frame(false, 0, wsraw.OpText, req[:5]), wsraw.CloseFrame(1000, nil),
					wsraw.Frame(true, 0, wsraw.OpContinuation, req[5:]))
				x.expectClose(1000)
			}},
		{ID: "5.19", Desc: "two fragmented messages back to back in one write", Expect: "both echoed (in any order)",
			Run: func(x *cx) {
				id1, id2 := x.id(), x.id()
				r1, m1 := echoOfLen(id1, 300)
				r2, m2 := echoOfLen(id2, 301)
				x.send(append(fragments(r1, 100, 200), fragments(r2, 150)...)...)
				x.expectEchoes(map[int][]byte{id1: m1, id2: m2})
			}},
	}
}

// fragEcho sends an echo request in n fragments, with the control frame
// between (when not nil) after the first, written in chunks of chunk bytes
// (0: one write).
func fragEcho(x *cx, chunk int, between []byte, n int) {
	id := x.id()
	req, msg := echoOfLen(id, 160)
	cuts := everyN(req, (len(req)+n-1)/n)
	frames := fragments(req, cuts...)
	if between != nil {
		frames = append([][]byte{frames[0], between}, frames[1:]...)
	}
	if chunk > 0 {
		x.sendChunked(chunk, frames...)
	} else {
		x.send(frames...)
	}
	if between != nil && between[0]&0x0f == wsraw.OpPing {
		x.expectPong([]byte("between"))
	}
	x.expectEcho(id, msg)
	x.alive()
}
