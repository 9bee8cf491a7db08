package conformance

import (
	"bytes"
	"fmt"
	"time"

	"github.com/mcpgate/gateway/conformance/wsraw"
)

// Close codes a client may send (RFC 6455 7.4.1 and the IANA registry
// as Autobahn 7.7 checks them) and codes it must not (Autobahn 7.9).
var (
	validCloseCodes   = []int{1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 3999, 4000, 4999}
	invalidCloseCodes = []int{0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535}
)

// Section 7: close handling.
func closeCases() []testCase {
	cs := []testCase{
		{ID: "7.1.1", Desc: "close without payload", Expect: "close 1000 (or no code), TCP closed",
			Run: func(x *cx) {
				x.send(wsraw.Frame(true, 0, wsraw.OpClose, nil))
				x.expectClose(1000, 1005)
			}},
		{ID: "7.1.2", Desc: "close 1000 with reason \"Normal closing\"", Expect: "close 1000, TCP closed",
			Run: func(x *cx) {
				x.send(wsraw.CloseFrame(1000, []byte("Normal closing")))
				x.expectClose(1000)
			}},
		{ID: "7.1.3", Desc: "close 1000, then a text message in the same write", Expect: "close 1000, the text is not answered",
			Run: func(x *cx) {
				x.send(wsraw.CloseFrame(1000, nil), wsraw.Frame(true, 0, wsraw.OpText, pingReq(x.id())))
				x.expectClose(1000)
			}},
		{ID: "7.1.4", Desc: "close 1000, then a ping in the same write", Expect: "close 1000, no pong",
			Run: func(x *cx) {
				x.send(wsraw.CloseFrame(1000, nil), wsraw.Frame(true, 0, wsraw.OpPing, []byte("after close")))
				x.expectClose(1000)
			}},
		{ID: "7.1.5", Desc: "close 1000, then a text message in a later write", Expect: "close 1000, the text is not answered",
			Run: func(x *cx) {
				x.send(wsraw.CloseFrame(1000, nil))
				time.Sleep(20 * time.Millisecond)
				_ = x.c.Write(wsraw.Frame(true, 0, wsraw.OpText, pingReq(x.id()))) // may fail: the gateway closed
				x.expectClose(1000)
			}},
		{ID: "7.1.6", Desc: "text message answered, then close 1000", Expect: "answer, then close 1000",
			Run: func(x *cx) {
				x.alive()
				x.send(wsraw.CloseFrame(1000, nil))
				x.expectClose(1000)
			}},
		{ID: "7.1.7", Desc: "close 1000 written byte by byte", Expect: "close 1000",
			Run: func(x *cx) {
				x.sendChunked(1, wsraw.CloseFrame(1000, []byte("bye")))
				x.expectClose(1000)
			}},
		{ID: "7.1.8", Desc: "close in the middle of a fragmented message", Expect: "close 1000, the message is not answered",
			Run: func(x *cx) {
				req := pingReq(x.id())
				x.send(wsraw.Frame(false, 0, wsraw.OpText, req[:4]), wsraw.CloseFrame(1000, nil))
				x.expectClose(1000)
			}},
		{ID: "7.3.1", Desc: "close with a 1-byte payload", Expect: "close 1002",
			Run: func(x *cx) {
				x.send(wsraw.Frame(true, 0, wsraw.OpClose, []byte{0x03}))
				x.expectClose(1002)
			}},
		{ID: "7.3.2", Desc: "close 1000 with a 123-byte reason (125-byte payload)", Expect: "close 1000",
			Run: func(x *cx) {
				x.send(wsraw.CloseFrame(1000, bytes.Repeat([]byte("r"), 123)))
				x.expectClose(1000)
			}},
		{ID: "7.3.3", Desc: "close 1000 with a 124-byte reason (126-byte payload)", Expect: "close 1002",
			Run: func(x *cx) {
				x.send(wsraw.CloseFrame(1000, bytes.Repeat([]byte("r"), 124)))
				x.expectClose(1002)
			}},
		{ID: "7.3.4", Desc: "close 1000 with a valid UTF-8 reason (\"κόσμε\")", Expect: "close 1000",
			Run: func(x *cx) {
				x.send(wsraw.CloseFrame(1000, kosme))
				x.expectClose(1000)
			}},
		{ID: "7.3.5", Desc: "close 1000 with an invalid UTF-8 reason (\"κόσμε\" + ED A0 80 + \"edited\")", Expect: "close 1007",
			Run: func(x *cx) {
				x.send(wsraw.CloseFrame(1000, cat(kosme, hexb(0xed, 0xa0, 0x80), []byte("edited"))))
				x.expectClose(1007)
			}},
		{ID: "7.3.6", Desc: "close 1000 with a reason cut inside a 2-byte sequence (ends in CE)", Expect: "close 1007",
			Run: func(x *cx) {
				x.send(wsraw.CloseFrame(1000, kosme[:len(kosme)-1]))
				x.expectClose(1007)
			}},
	}
	for i, code := range validCloseCodes {
		code := code
		cs = append(cs, testCase{ID: fmt.Sprintf("7.7.%d", i+1), Desc: fmt.Sprintf("close with valid code %d", code),
			Expect: closeEcho(code),
			Run: func(x *cx) {
				x.send(wsraw.CloseFrame(code, []byte("client says bye")))
				x.expectClose(code, 1000)
			}})
	}
	for i, code := range invalidCloseCodes {
		code := code
		cs = append(cs, testCase{ID: fmt.Sprintf("7.9.%d", i+1), Desc: fmt.Sprintf("close with invalid code %d", code),
			Expect: "close 1002",
			Run: func(x *cx) {
				x.send(wsraw.CloseFrame(code, nil))
				x.expectClose(1002)
			}})
	}
	return cs
}

func closeEcho(code int) string {
	if code == 1000 {
		return "close 1000, TCP closed"
	}
	return fmt.Sprintf("close %d (echoed) or 1000, TCP closed", code)
}
