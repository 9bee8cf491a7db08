package wsraw

import (
	"bufio"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"
)

// Opcodes of RFC 6455 section 5.2.
const (
	OpContinuation byte = 0x0
	OpText         byte = 0x1
	OpBinary       byte = 0x2
	OpClose        byte = 0x8
	OpPing         byte = 0x9
	OpPong         byte = 0xA
)

// Conn is a deliberately low-level WebSocket client over one connection:
// TCP, or TLS over TCP (any net.Conn).
type Conn struct {
	C    net.Conn
	BR   *bufio.Reader
	Resp *http.Response // the answer to the upgrade request
}

// UpgradeRequest builds a valid upgrade request; extra header lines are
// appended verbatim ("Origin: x").
func UpgradeRequest(host, path string, extra ...string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n", path, host)
	for _, h := range extra {
		b.WriteString(h + "\r\n")
	}
	b.WriteString("\r\n")
	return b.String()
}

// Dial connects and sends a valid upgrade request for path; the response
// (101 or a refusal) is in Resp.
func Dial(addr, path string, extra ...string) (*Conn, error) {
	return DialRequest(addr, UpgradeRequest(addr, path, extra...))
}

// DialRequest connects, writes req verbatim and reads the HTTP response.
func DialRequest(addr, req string) (*Conn, error) {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return nil, err
	}
	return RequestOver(c, req)
}

// RequestOver writes req verbatim on c (TCP, TLS or anything else) and
// reads the HTTP response. On an error c is closed.
func RequestOver(c net.Conn, req string) (*Conn, error) {
	r := &Conn{C: c, BR: bufio.NewReaderSize(c, 64<<10)}
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, req); err != nil {
		c.Close()
		return nil, err
	}
	resp, err := http.ReadResponse(r.BR, nil)
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("reading upgrade response: %w", err)
	}
	_ = c.SetDeadline(time.Time{})
	r.Resp = resp
	return r, nil
}

// DialAuthed upgrades on /mcp and authenticates with a first-message token.
func DialAuthed(addr, token string) (*Conn, error) {
	r, err := Dial(addr, "/mcp")
	if err != nil {
		return nil, err
	}
	if err := r.auth(token); err != nil {
		return nil, err
	}
	return r, nil
}

// auth checks the upgrade succeeded and authenticates with a first-message
// token; on an error the connection is closed.
func (r *Conn) auth(token string) error {
	if r.Resp.StatusCode != 101 {
		r.Close()
		return fmt.Errorf("upgrade answered %s", r.Resp.Status)
	}
	if err := r.Write(Frame(true, 0, OpText, []byte(`{"type":"auth","token":"`+token+`"}`))); err != nil {
		r.Close()
		return err
	}
	f, err := r.ReadFrame(5 * time.Second)
	if err != nil {
		r.Close()
		return fmt.Errorf("reading auth answer: %w", err)
	}
	if f.Op != OpText || !strings.HasPrefix(string(f.Payload), `{"type":"auth_ok","session":"`) {
		r.Close()
		return fmt.Errorf("auth answered %s", f)
	}
	return nil
}

// Close closes the connection.
func (r *Conn) Close() error { return r.C.Close() }

// Write writes b within 10 s.
func (r *Conn) Write(b []byte) error {
	_ = r.C.SetWriteDeadline(time.Now().Add(10 * time.Second))
	_, err := r.C.Write(b)
	return err
}

// WriteChunked writes b in pieces of at most chunk bytes, pausing between.
func (r *Conn) WriteChunked(b []byte, chunk int, pause time.Duration) error {
	for len(b) > 0 {
		n := min(chunk, len(b))
		if err := r.Write(b[:n]); err != nil {
			return err
		}
		b = b[n:]
		if pause > 0 && len(b) > 0 {
			time.Sleep(pause)
		}
	}
	return nil
}

// Mask is the masking key of every client frame built here.
var Mask = [4]byte{0x37, 0xfa, 0x21, 0x3d}

// Header builds a masked client frame header announcing n payload bytes;
// rsv holds RSV1..RSV3 as bits 2..0 (4 = RSV1, 2 = RSV2, 1 = RSV3).
func Header(fin bool, rsv, op byte, n uint64) []byte {
	b0 := op & 0x0f
	if fin {
		b0 |= 0x80
	}
	b0 |= (rsv & 7) << 4
	out := []byte{b0}
	switch {
	case n < 126:
		out = append(out, 0x80|byte(n))
	case n <= 0xffff:
		out = append(out, 0x80|126, byte(n>>8), byte(n))
	default:
		out = append(out, 0x80|127)
		out = binary.BigEndian.AppendUint64(out, n)
	}
	return append(out, Mask[:]...)
}

// Frame builds one masked client frame.
func Frame(fin bool, rsv, op byte, payload []byte) []byte {
	out := Header(fin, rsv, op, uint64(len(payload)))
	for i, c := range payload {
		out = append(out, c^Mask[i%4])
	}
	return out
}

// Unmasked builds an (illegal) unmasked client frame.
func Unmasked(fin bool, op byte, payload []byte) []byte {
	h := Header(fin, 0, op, uint64(len(payload)))
	h = h[:len(h)-4]
	h[1] &^= 0x80
	return append(h, payload...)
}

// CloseFrame builds a masked close frame with a code and reason.
func CloseFrame(code int, reason []byte) []byte {
	p := binary.BigEndian.AppendUint16(nil, uint16(code))
	return Frame(true, 0, OpClose, append(p, reason...))
}

// ServerFrame is one frame as the server sent it.
type ServerFrame struct {
	Fin     bool
	RSV     byte
	Op      byte
	Masked  bool
	Payload []byte
}

func (f ServerFrame) String() string {
	switch f.Op {
	case OpClose:
		code, reason := ParseClose(f.Payload)
		return fmt.Sprintf("close %d %q", code, reason)
	case OpText:
		return fmt.Sprintf("text %q", Truncate(string(f.Payload), 120))
	case OpPing:
		return fmt.Sprintf("ping %dB", len(f.Payload))
	case OpPong:
		return fmt.Sprintf("pong %dB", len(f.Payload))
	}
	return fmt.Sprintf("opcode %d (%dB)", f.Op, len(f.Payload))
}

// ReadFrame reads one server frame within timeout.
func (r *Conn) ReadFrame(timeout time.Duration) (ServerFrame, error) {
	_ = r.C.SetReadDeadline(time.Now().Add(timeout))
	var h [2]byte
	if _, err := io.ReadFull(r.BR, h[:]); err != nil {
		return ServerFrame{}, err
	}
	f := ServerFrame{Fin: h[0]&0x80 != 0, RSV: h[0] >> 4 & 7, Op: h[0] & 0x0f, Masked: h[1]&0x80 != 0}
	n := uint64(h[1] & 0x7f)
	switch n {
	case 126:
		var l [2]byte
		if _, err := io.ReadFull(r.BR, l[:]); err != nil {
			return f, err
		}
		n = uint64(binary.BigEndian.Uint16(l[:]))
	case 127:
		var l [8]byte
		if _, err := io.ReadFull(r.BR, l[:]); err != nil {
			return f, err
		}
		n = binary.BigEndian.Uint64(l[:])
	}
	if f.Masked {
		return f, errors.New("server sent a masked frame")
	}
	if n > 64<<20 {
		return f, fmt.Errorf("server frame of %d bytes", n)
	}
	f.Payload = make([]byte, n)
	if _, err := io.ReadFull(r.BR, f.Payload); err != nil {
		return f, err
	}
	return f, nil
}

// ParseClose splits a close payload; no payload is 1005.
func ParseClose(p []byte) (int, string) {
	if len(p) < 2 {
		return 1005, ""
	}
	return int(binary.BigEndian.Uint16(p)), string(p[2:])
}

// WaitEOF waits for the server to close TCP, discarding anything it still
// sends; it returns the bytes discarded, or an error on timeout.
func (r *Conn) WaitEOF(timeout time.Duration) (int, error) {
	_ = r.C.SetReadDeadline(time.Now().Add(timeout))
	n, err := io.Copy(io.Discard, r.BR)
	if err == nil || isReset(err) {
		return int(n), nil
	}
	if errors.Is(err, io.ErrUnexpectedEOF) {
		if _, isTLS := r.C.(*tls.Conn); isTLS {
			return int(n), errors.New("TCP closed without a TLS close_notify")
		}
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return int(n), fmt.Errorf("connection still open after %v", timeout)
	}
	return int(n), err
}

func isReset(err error) bool {
	return err != nil && (strings.Contains(err.Error(), "connection reset") ||
		strings.Contains(err.Error(), "broken pipe"))
}

// IsTimeout reports whether err is a read or write deadline.
func IsTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// Truncate shortens s to n bytes plus an ellipsis.
func Truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}
