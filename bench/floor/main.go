// Command floor is the floor of our own stack for benchmarks: a gnet v2 +
// gobwas/ws server that answers every frame on its event loop, with no
// checks, no limits, no worker goroutines and no JSON parsing. Whatever the
// gateway spends beyond the floor is the price of its checks, its session
// table and its relay; the floor itself is mostly read and write syscalls.
//
// It speaks just enough of the gateway's protocol for `gateway bench`: the
// upgrade (selecting subprotocol "mcp"), the first-message auth (any token),
// and one JSON-RPC result per message that carries an "id" (the id is
// copied byte for byte; the result is a fixed echo text).
//
//	go run ./bench/floor -listen 127.0.0.1:9100
package main

import (
	"bytes"
	"crypto/sha1"
	"encoding/base64"
	"flag"
	"fmt"
	"os"
	"sync"

	"github.com/gobwas/ws"
	"github.com/panjf2000/gnet/v2"
	"github.com/panjf2000/gnet/v2/pkg/logging"

	"github.com/mcpgate/gateway/frame"
)

type server struct {
	gnet.BuiltinEventEngine
}

// scratch holds reply bytes for one OnTraffic; loops run in parallel, and
// gnet copies whatever the socket does not take at once.
var scratch = sync.Pool{New: func() any { b := make([]byte, 0, 4096); return &b }}

type conn struct{ upgraded bool }

func (s *server) OnOpen(c gnet.Conn) ([]byte, gnet.Action) {
	c.SetContext(&conn{})
	return nil, gnet.None
}

var (
	crlf2    = []byte("\r\n\r\n")
	keyHdr   = []byte("Sec-WebSocket-Key: ")
	authPfx  = []byte(`{"type":"auth"`)
	idKey    = []byte(`"id":`)
	authOK   = []byte(`{"type":"auth_ok","session":"floor"}`)
	wsGUID   = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
	resHead  = []byte(`{"jsonrpc":"2.0","id":`)
	resTail  = []byte(`,"result":{"content":[{"type":"text","text":"Echo: floor"}]}}`)
	upgraded = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Protocol: mcp\r\nSec-WebSocket-Accept: "
)

func (s *server) OnTraffic(c gnet.Conn) gnet.Action {
	st := c.Context().(*conn)
	in, _ := c.Peek(-1)
	consumed := 0
	bp := scratch.Get().(*[]byte)
	out := (*bp)[:0]
	defer func() { *bp = out[:0]; scratch.Put(bp) }()
	if !st.upgraded {
		end := bytes.Index(in, crlf2)
		if end < 0 {
			return gnet.None
		}
		k := bytes.Index(in[:end], keyHdr)
		if k < 0 {
			return gnet.Close
		}
		key := in[k+len(keyHdr):]
		key = key[:bytes.IndexByte(key, '\r')]
		h := sha1.Sum(append(append([]byte(nil), key...), wsGUID...))
		out = append(out, upgraded...)
		out = base64.StdEncoding.AppendEncode(out, h[:])
		out = append(out, "\r\n\r\n"...)
		st.upgraded = true
		consumed = end + 4
		in = in[consumed:]
	}
	for {
		h, hn, err := frame.ParseHeader(in)
		if err != nil {
			return gnet.Close
		}
		if hn == 0 || int64(len(in)-hn) < h.Length {
			break
		}
		p := in[hn : hn+int(h.Length)]
		ws.Cipher(p, h.Mask, 0)
		switch h.OpCode {
		case ws.OpText:
			out = answer(out, p)
		case ws.OpPing:
			out = frame.AppendPong(out, p)
		case ws.OpClose:
			out = frame.AppendClose(out, ws.StatusNormalClosure, "")
			_, _ = c.Write(out)
			return gnet.Close
		}
		n := hn + int(h.Length)
		in = in[n:]
		consumed += n
	}
	if consumed > 0 {
		_, _ = c.Discard(consumed)
	}
	if len(out) > 0 {
		_, _ = c.Write(out)
	}
	return gnet.None
}

// answer replies without parsing JSON: auth frames get auth_ok, anything
// with an "id" gets a result with that id.
func answer(out, p []byte) []byte {
	if bytes.HasPrefix(p, authPfx) {
		return frame.AppendText(out, authOK)
	}
	i := bytes.Index(p, idKey)
	if i < 0 {
		return out // a notification
	}
	id := p[i+len(idKey):]
	end := bytes.IndexAny(id, ",}")
	if end < 0 {
		return out
	}
	return appendResult(out, id[:end])
}

func appendResult(dst, id []byte) []byte {
	n := len(resHead) + len(id) + len(resTail)
	// Server frame header: FIN+text, then the length.
	switch {
	case n < 126:
		dst = append(dst, 0x81, byte(n))
	case n < 1<<16:
		dst = append(dst, 0x81, 126, byte(n>>8), byte(n))
	default:
		dst = append(dst, 0x81, 127, 0, 0, 0, 0, byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
	}
	dst = append(dst, resHead...)
	dst = append(dst, id...)
	return append(dst, resTail...)
}

func main() {
	listen := flag.String("listen", "127.0.0.1:9100", "address")
	loops := flag.Int("loops", 0, "event loops (0: one per core)")
	flag.Parse()
	opts := []gnet.Option{gnet.WithTCPNoDelay(gnet.TCPNoDelay), gnet.WithLogLevel(logging.ErrorLevel)}
	if *loops > 0 {
		opts = append(opts, gnet.WithNumEventLoop(*loops))
	} else {
		opts = append(opts, gnet.WithMulticore(true))
	}
	fmt.Fprintf(os.Stderr, "floor listening on %s\n", *listen)
	if err := gnet.Run(&server{}, "tcp://"+*listen, opts...); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
