package bench

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/gobwas/ws"
)

// maxReadMessage bounds what the client buffers from one server message, so
// that a misbehaving server cannot make the generator allocate without end.
const maxReadMessage = 2*maxMessageHard + 1<<20

// wsConn is one client connection. The frame code is written here on top of
// gobwas/ws primitives rather than a full client library because the load
// client must cost as little CPU and memory per message as it can: it shares
// the machine with the server it measures.
type wsConn struct {
	idx int // global index
	nc  net.Conn
	br  *bufio.Reader

	wmu  sync.Mutex
	wbuf []byte // frame being written
	pbuf []byte // payload being built (under wmu)

	hbuf [ws.MaxHeaderSize]byte
	msg  []byte // message being read (reader goroutine only)

	pmu     sync.Mutex
	pending map[int64]int64 // call id -> intended send time (mono ns)
	nextID  int64           // under pmu
}

// closeError is a close frame received from the server.
type closeError struct {
	code   ws.StatusCode
	reason string
}

func (e *closeError) Error() string {
	if e.reason == "" {
		return fmt.Sprintf("close %d", e.code)
	}
	return fmt.Sprintf("close %d %s", e.code, e.reason)
}

// dialWS opens TCP from the index's source address and upgrades it.
func dialWS(ctx context.Context, o *Options, t *target, idx int) (*wsConn, error) {
	h := http.Header{}
	if o.Origin != "" {
		h.Set("Origin", o.Origin)
	}
	if o.Auth == "header" {
		h.Set("Authorization", "Bearer "+o.Token)
	}
	nd := net.Dialer{}
	if src, ok := t.source(idx); ok {
		nd.LocalAddr = &net.TCPAddr{IP: src.AsSlice()}
		nd.Control = bindNoPort
	}
	d := ws.Dialer{
		Timeout: o.Timeout,
		Header:  ws.HandshakeHeaderHTTP(h),
		NetDial: func(ctx context.Context, _, _ string) (net.Conn, error) {
			// Dial the address resolved once at start, not the URL's name.
			return nd.DialContext(ctx, "tcp", t.addr.String())
		},
		TLSConfig: &tls.Config{ServerName: t.host, InsecureSkipVerify: o.TLSInsecure},
	}
	if o.Subprotocol != "" {
		d.Protocols = []string{o.Subprotocol}
	}
	nc, br, _, err := d.Dial(ctx, t.url.String())
	if err != nil {
		return nil, err
	}
	if br == nil {
		br = bufio.NewReaderSize(nc, 2048)
	}
	return &wsConn{idx: idx, nc: nc, br: br}, nil
}

// appendFrame appends one masked, final client frame (RFC 6455 5.3: every
// client frame is masked).
func appendFrame(dst []byte, op ws.OpCode, payload []byte) []byte {
	dst = append(dst, 0x80|byte(op))
	n := len(payload)
	switch {
	case n < 126:
		dst = append(dst, 0x80|byte(n))
	case n <= 0xffff:
		dst = append(dst, 0x80|126, byte(n>>8), byte(n))
	default:
		dst = append(dst, 0x80|127)
		dst = binary.BigEndian.AppendUint64(dst, uint64(n))
	}
	var mask [4]byte
	binary.LittleEndian.PutUint32(mask[:], rand.Uint32())
	dst = append(dst, mask[:]...)
	start := len(dst)
	dst = append(dst, payload...)
	ws.Cipher(dst[start:], mask, 0)
	return dst
}

func (c *wsConn) writeFrame(op ws.OpCode, payload []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.wbuf = appendFrame(c.wbuf[:0], op, payload)
	_, err := c.nc.Write(c.wbuf)
	return err
}

// writeCall sends one tools/call request built from head + id + tail.
func (c *wsConn) writeCall(id int64, head, tail []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	p := append(c.pbuf[:0], head...)
	p = strconv.AppendInt(p, id, 10)
	p = append(p, tail...)
	c.pbuf = p
	c.wbuf = appendFrame(c.wbuf[:0], ws.OpText, p)
	_, err := c.nc.Write(c.wbuf)
	return err
}

// readMessage returns the next data message, answering pings on the way. The
// slice is valid until the next call.
func (c *wsConn) readMessage() (ws.OpCode, []byte, error) {
	var op ws.OpCode
	c.msg = c.msg[:0]
	for {
		h, err := ws.ReadHeaderBuffer(c.br, c.hbuf[:])
		if err != nil {
			return 0, nil, err
		}
		if h.Length > maxReadMessage || int64(len(c.msg))+h.Length > maxReadMessage {
			return 0, nil, errors.New("message too large")
		}
		if h.OpCode.IsControl() {
			var ctl [125]byte
			if h.Length > 125 {
				return 0, nil, errors.New("control frame too long")
			}
			p := ctl[:h.Length]
			if _, err := io.ReadFull(c.br, p); err != nil {
				return 0, nil, err
			}
			if h.Masked {
				ws.Cipher(p, h.Mask, 0)
			}
			switch h.OpCode {
			case ws.OpPing:
				if err := c.writeFrame(ws.OpPong, p); err != nil {
					return 0, nil, err
				}
			case ws.OpClose:
				code, reason := ws.ParseCloseFrameData(p)
				if code == 0 {
					code = ws.StatusNoStatusRcvd
				}
				return 0, nil, &closeError{code: code, reason: reason}
			}
			continue
		}
		if h.OpCode != ws.OpContinuation {
			op = h.OpCode
		}
		start := len(c.msg)
		c.msg = growTo(c.msg, start+int(h.Length))
		if _, err := io.ReadFull(c.br, c.msg[start:]); err != nil {
			return 0, nil, err
		}
		if h.Masked {
			ws.Cipher(c.msg[start:], h.Mask, 0)
		}
		if h.Fin {
			return op, c.msg, nil
		}
	}
}

func growTo(b []byte, n int) []byte {
	if cap(b) >= n {
		return b[:n]
	}
	nb := make([]byte, n, max(n, 2*cap(b)))
	copy(nb, b)
	return nb
}

// authenticate sends the first-message auth and waits for auth_ok.
func (c *wsConn) authenticate(token string, timeout time.Duration) error {
	msg, _ := json.Marshal(struct {
		Type  string `json:"type"`
		Token string `json:"token"`
	}{"auth", token})
	if err := c.writeFrame(ws.OpText, msg); err != nil {
		return err
	}
	c.nc.SetReadDeadline(time.Now().Add(timeout))
	defer c.nc.SetReadDeadline(time.Time{})
	_, p, err := c.readMessage()
	if err != nil {
		return err
	}
	var r struct {
		Type string `json:"type"`
	}
	if json.Unmarshal(p, &r) != nil || r.Type != "auth_ok" {
		return errRejected
	}
	return nil
}

var (
	errRejected    = errors.New("rejected")
	errBadResponse = errors.New("bad response")
)

// rpcError is a JSON-RPC error answer.
type rpcError struct{ code int64 }

func (e *rpcError) Error() string { return rpcKind(e.code) }

// rpcKind names a JSON-RPC error answer for the report: its code, and for
// JSON-RPC's codes and the gateway's own (SPEC 4.6) what it means, so that
// a run tells a rate limit (-31029) from a pool with no worker free
// (-31503), an upstream timeout (-31504) or a worker that died (-32603).
func rpcKind(code int64) string {
	name := ""
	switch code {
	case -32700:
		name = " parse error"
	case -32600:
		name = " invalid request"
	case -32601:
		name = " method not found"
	case -32602:
		name = " invalid params"
	case -32603:
		name = " internal error"
	case -31000:
		name = " reconnect"
	case -31003:
		name = " forbidden"
	case -31029:
		name = " rate limited"
	case -31503:
		name = " upstream unavailable"
	case -31504:
		name = " upstream timeout"
	}
	return "rpc error " + strconv.FormatInt(code, 10) + name
}

// initialize runs the MCP initialize handshake (id 0), then sends
// notifications/initialized, which has no answer.
func (c *wsConn) initialize(version string, timeout time.Duration) (notices int64, err error) {
	req := `{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":` +
		strconv.Quote(version) + `,"capabilities":{},"clientInfo":{"name":"gateway-bench","version":"1"}}}`
	if err := c.writeFrame(ws.OpText, []byte(req)); err != nil {
		return 0, err
	}
	c.nc.SetReadDeadline(time.Now().Add(timeout))
	defer c.nc.SetReadDeadline(time.Time{})
	for {
		_, p, err := c.readMessage()
		if err != nil {
			return notices, err
		}
		r, err := scanResponse(p)
		if err != nil {
			return notices, errBadResponse
		}
		if r.hasMethod || !r.hasID {
			notices++ // a server notification or request before the answer
			continue
		}
		if !r.idNumeric || r.id != 0 {
			return notices, errMismatchedID
		}
		if r.isError {
			return notices, &rpcError{r.errCode}
		}
		if !r.hasResult {
			return notices, errBadResponse
		}
		break
	}
	return notices, c.writeFrame(ws.OpText, []byte(`{"jsonrpc":"2.0","method":"notifications/initialized"}`))
}

var errMismatchedID = errors.New("mismatched id")

// closeGracefully sends close 1000 and waits briefly for the server to
// close first, so that TIME_WAIT lands on the server side (connect mode
// opens many short connections from a limited port range).
func (c *wsConn) closeGracefully(wait time.Duration) {
	c.writeFrame(ws.OpClose, ws.NewCloseFrameBody(ws.StatusNormalClosure, ""))
	c.nc.SetReadDeadline(time.Now().Add(wait))
	for {
		if _, _, err := c.readMessage(); err != nil {
			break
		}
	}
	c.nc.Close()
}

// closeNow sends close 1000 without waiting and closes the socket.
func (c *wsConn) closeNow() {
	c.nc.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
	c.writeFrame(ws.OpClose, ws.NewCloseFrameBody(ws.StatusNormalClosure, ""))
	c.nc.Close()
}

// errKind names an error for the report: "<phase>/<what>".
func errKind(phase string, err error) string {
	var ce *closeError
	var se ws.StatusError
	var re *rpcError
	var ne net.Error
	switch {
	case errors.As(err, &ce):
		return phase + "/" + ce.Error()
	case errors.As(err, &se):
		return fmt.Sprintf("%s/http %d", phase, int(se))
	case errors.As(err, &re):
		return phase + "/" + re.Error()
	case errors.Is(err, errRejected):
		return phase + "/rejected"
	case errors.Is(err, errMismatchedID):
		return phase + "/mismatched id"
	case errors.Is(err, errBadResponse):
		return phase + "/bad response"
	case errors.Is(err, context.Canceled):
		return phase + "/interrupted"
	case errors.Is(err, os.ErrDeadlineExceeded), errors.Is(err, context.DeadlineExceeded),
		errors.As(err, &ne) && ne.Timeout():
		return phase + "/timeout"
	case errors.Is(err, syscall.ECONNREFUSED):
		return phase + "/refused"
	case errors.Is(err, syscall.EADDRNOTAVAIL), errors.Is(err, syscall.EADDRINUSE):
		return phase + "/no source port"
	case errors.Is(err, syscall.EMFILE), errors.Is(err, syscall.ENFILE):
		return phase + "/too many open files"
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		return phase + "/reset"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return phase + "/eof"
	case errors.Is(err, ws.ErrHandshakeBadSubProtocol):
		return phase + "/subprotocol refused"
	}
	return phase + "/error"
}
