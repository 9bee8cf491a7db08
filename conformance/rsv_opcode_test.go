package conformance

import (
	"fmt"

	"github.com/mcpgate/gateway/conformance/wsraw"
)

// rsvNames names the RSV bits as wsraw.Header takes them.
var rsvNames = map[byte]string{4: "RSV1", 2: "RSV2", 1: "RSV3", 7: "RSV1+RSV2+RSV3"}

// Section 3: reserved bits. No extension is ever negotiated, so any RSV
// bit fails the connection.
func rsvCases() []testCase {
	var cs []testCase
	n := 0
	for _, after := range []bool{false, true} {
		for _, rsv := range []byte{4, 2, 1} {
			n++
			rsv := rsv
			desc := fmt.Sprintf("text message with %s set", rsvNames[rsv])
			expect := "close 1002"
			if after {
				desc += ", after a valid message"
				expect = "answer, then close 1002"
			}
			cs = append(cs, testCase{ID: fmt.Sprintf("3.%d", n), Desc: desc, Expect: expect,
				Run: func(x *cx) {
					if after {
						x.alive()
					}
					x.send(wsraw.Frame(true, rsv, wsraw.OpText, pingReq(x.id())))
					x.expectClose(1002)
				}})
		}
	}
	return append(cs,
		testCase{ID: "3.7", Desc: "ping with RSV1+RSV2+RSV3 set", Expect: "close 1002, no pong",
			Run: func(x *cx) {
				x.send(wsraw.Frame(true, 7, wsraw.OpPing, []byte("ping")))
				x.expectClose(1002)
			}},
		testCase{ID: "3.8", Desc: "close 1000 with RSV1 set", Expect: "close 1002",
			Run: func(x *cx) {
				x.send(wsraw.Frame(true, 4, wsraw.OpClose, []byte{0x03, 0xe8}))
				x.expectClose(1002)
			}},
		testCase{ID: "3.9", Desc: "continuation frame with RSV2 set inside a fragmented message", Expect: "close 1002",
			Run: func(x *cx) {
				req := pingReq(x.id())
				x.send(wsraw.Frame(false, 0, wsraw.OpText, req[:5]), wsraw.Frame(true, 2, wsraw.OpContinuation, req[5:]))
				x.expectClose(1002)
			}},
		testCase{ID: "3.10", Desc: "text message with RSV1 set, written byte by byte, after a valid message", Expect: "answer, then close 1002",
			Run: func(x *cx) {
				x.alive()
				x.sendChunkedLenient(1, wsraw.Frame(true, 4, wsraw.OpText, pingReq(x.id())))
				x.expectClose(1002)
			}},
	)
}

// Section 4: opcodes. 3-7 are reserved data opcodes, 11-15 reserved
// control opcodes; both fail the connection.
func opcodeCases() []testCase {
	var cs []testCase
	for i, group := range [][]byte{{3, 4, 5, 6, 7}, {11, 12, 13, 14, 15}} {
		for j, op := range group {
			op := op
			variant := j % 3 // 0: empty, 1: with payload, 2: after a valid message
			desc := fmt.Sprintf("reserved opcode %d", op)
			expect := "close 1002"
			var payload []byte
			switch variant {
			case 0:
				desc += ", empty"
			case 1:
				desc += ", with payload"
				payload = []byte("reserved opcode payload")
			case 2:
				desc += ", with payload, after a valid message"
				payload = []byte("reserved")
				expect = "answer, then close 1002"
			}
			cs = append(cs, testCase{ID: fmt.Sprintf("4.%d.%d", i+1, j+1), Desc: desc, Expect: expect,
				Run: func(x *cx) {
					if variant == 2 {
						x.alive()
					}
					x.send(wsraw.Frame(true, 0, op, payload))
					x.expectClose(1002)
				}})
		}
	}
	return cs
}
