package bench

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"syscall"
	"testing"

	"github.com/gobwas/ws"
)

func TestAppendFrameRoundTrip(t *testing.T) {
	for _, n := range []int{0, 1, 125, 126, 65535, 65536, 200_000} {
		payload := bytes.Repeat([]byte{'a'}, n)
		b := appendFrame(nil, ws.OpText, payload)
		f, err := ws.ReadFrame(bytes.NewReader(b))
		if err != nil {
			t.Fatalf("n=%d: %v", n, err)
		}
		if !f.Header.Masked || !f.Header.Fin || f.Header.OpCode != ws.OpText {
			t.Fatalf("n=%d: header %+v", n, f.Header)
		}
		f = ws.UnmaskFrameInPlace(f)
		if !bytes.Equal(f.Payload, payload) {
			t.Fatalf("n=%d: payload differs", n)
		}
	}
}

// readMessage must assemble fragments, answer pings with a masked pong and
// report a close frame's code and reason.
func TestReadMessage(t *testing.T) {
	client, server := net.Pipe()
	defer client.Close()
	c := &wsConn{nc: client, br: bufio.NewReader(client)}
	go func() {
		ws.WriteFrame(server, ws.NewFrame(ws.OpText, false, []byte(`{"id":`)))
		ws.WriteFrame(server, ws.NewPingFrame([]byte("hi")))
		ws.WriteFrame(server, ws.NewFrame(ws.OpContinuation, true, []byte(`1}`)))
	}()
	pong := make(chan ws.Frame, 1)
	go func() {
		f, _ := ws.ReadFrame(server)
		pong <- ws.UnmaskFrameInPlace(f)
		ws.WriteFrame(server, ws.NewCloseFrame(ws.NewCloseFrameBody(1008, "Rate limit exceeded")))
	}()
	op, p, err := c.readMessage()
	if err != nil || op != ws.OpText || string(p) != `{"id":1}` {
		t.Fatalf("got %v %q %v", op, p, err)
	}
	if f := <-pong; f.Header.OpCode != ws.OpPong || string(f.Payload) != "hi" {
		t.Fatalf("pong %+v %q", f.Header, f.Payload)
	}
	_, _, err = c.readMessage()
	if got := errKind("hold", err); got != "hold/close 1008 Rate limit exceeded" {
		t.Fatalf("kind %q", got)
	}
}

func TestErrKind(t *testing.T) {
	cases := map[string]error{
		"connect/http 429":                              ws.StatusError(429),
		"connect/refused":                               &net.OpError{Op: "dial", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)},
		"connect/no source port":                        fmt.Errorf("dial: %w", syscall.EADDRNOTAVAIL),
		"connect/too many open files":                   fmt.Errorf("socket: %w", syscall.EMFILE),
		"connect/timeout":                               os.ErrDeadlineExceeded,
		"connect/eof":                                   io.ErrUnexpectedEOF,
		"connect/rejected":                              errRejected,
		"connect/mismatched id":                         errMismatchedID,
		"connect/rpc error -32603 internal error":       &rpcError{-32603},
		"connect/rpc error -31503 upstream unavailable": &rpcError{-31503},
		"connect/rpc error -31504 upstream timeout":     &rpcError{-31504},
		"connect/rpc error -31029 rate limited":         &rpcError{-31029},
		"connect/rpc error -42":                         &rpcError{-42},
		"connect/close 1001":                            &closeError{code: 1001},
		"connect/error":                                 errors.New("something else"),
	}
	for want, err := range cases {
		if got := errKind("connect", err); got != want {
			t.Errorf("%v: %q, want %q", err, got, want)
		}
	}
}
