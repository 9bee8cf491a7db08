package e2e

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// raw is a deliberately low-level WebSocket client: it writes any bytes,
// including frames a correct client never would, and reads frames as sent.
type raw struct {
	t    testing.TB
	c    net.Conn
	br   *bufio.Reader
	resp *http.Response
}

// upgradeRequest builds a valid upgrade request; extra header lines are
// appended verbatim ("Origin: x").
func upgradeRequest(host, path string, extra ...string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n", path, host)
	for _, h := range extra {
		b.WriteString(h + "\r\n")
	}
	b.WriteString("\r\n")
	return b.String()
}

// dialRaw connects and sends an upgrade request; it returns the client with
// the HTTP response read (101 or a refusal).
func dialRaw(t testing.TB, addr, path string, extra ...string) *raw {
	t.Helper()
	return dialRawRequest(t, addr, upgradeRequest(addr, path, extra...))
}

func dialRawRequest(t testing.TB, addr, req string) *raw {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	must(t, err)
	t.Cleanup(func() { c.Close() })
	return requestOver(t, c, req)
}

// dialOver upgrades over an existing connection.
func dialOver(t testing.TB, c net.Conn, addr string) *raw {
	return requestOver(t, c, upgradeRequest(addr, "/mcp"))
}

func requestOver(t testing.TB, c net.Conn, req string) *raw {
	t.Helper()
	r := &raw{t: t, c: c, br: bufio.NewReader(c)}
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	_, err := io.WriteString(c, req)
	must(t, err)
	resp, err := http.ReadResponse(r.br, nil)
	if err != nil {
		t.Fatalf("reading upgrade response: %v", err)
	}
	r.resp = resp
	return r
}

// dialAuthed upgrades and authenticates with a first-message token.
func dialAuthed(t testing.TB, addr, token string) *raw {
	t.Helper()
	r := dialRaw(t, addr, "/mcp")
	if r.resp.StatusCode != 101 {
		t.Fatalf("upgrade: %s", r.resp.Status)
	}
	r.sendText(`{"type":"auth","token":"` + token + `"}`)
	if got := r.readText(); !strings.HasPrefix(got, `{"type":"auth_ok","session":"`) {
		t.Fatalf("auth answer %q", got)
	}
	return r
}

var testMask = [4]byte{0x11, 0x22, 0x33, 0x44}

// frame builds one client frame. masked=false makes an illegal unmasked frame.
func buildFrame(fin bool, rsv, op byte, masked bool, payload []byte) []byte {
	b0 := op & 0x0f
	if fin {
		b0 |= 0x80
	}
	b0 |= (rsv & 7) << 4
	out := []byte{b0}
	var mbit byte
	if masked {
		mbit = 0x80
	}
	n := len(payload)
	switch {
	case n < 126:
		out = append(out, mbit|byte(n))
	case n <= 0xffff:
		out = append(out, mbit|126, byte(n>>8), byte(n))
	default:
		out = append(out, mbit|127)
		out = binary.BigEndian.AppendUint64(out, uint64(n))
	}
	if masked {
		out = append(out, testMask[:]...)
		for i, c := range payload {
			out = append(out, c^testMask[i%4])
		}
	} else {
		out = append(out, payload...)
	}
	return out
}

func (r *raw) write(b []byte) {
	r.t.Helper()
	_ = r.c.SetWriteDeadline(time.Now().Add(10 * time.Second))
	if _, err := r.c.Write(b); err != nil {
		r.t.Fatalf("write: %v", err)
	}
}

func (r *raw) sendText(s string) { r.t.Helper(); r.write(buildFrame(true, 0, 1, true, []byte(s))) }

type serverFrame struct {
	fin     bool
	op      byte
	payload []byte
}

func (r *raw) readFrame(timeout time.Duration) (serverFrame, error) {
	_ = r.c.SetReadDeadline(time.Now().Add(timeout))
	var h [2]byte
	if _, err := io.ReadFull(r.br, h[:]); err != nil {
		return serverFrame{}, err
	}
	if h[1]&0x80 != 0 {
		return serverFrame{}, errors.New("server sent a masked frame")
	}
	n := uint64(h[1] & 0x7f)
	switch n {
	case 126:
		var l [2]byte
		if _, err := io.ReadFull(r.br, l[:]); err != nil {
			return serverFrame{}, err
		}
		n = uint64(binary.BigEndian.Uint16(l[:]))
	case 127:
		var l [8]byte
		if _, err := io.ReadFull(r.br, l[:]); err != nil {
			return serverFrame{}, err
		}
		n = binary.BigEndian.Uint64(l[:])
	}
	if n > 64<<20 {
		return serverFrame{}, fmt.Errorf("server frame of %d bytes", n)
	}
	p := make([]byte, n)
	if _, err := io.ReadFull(r.br, p); err != nil {
		return serverFrame{}, err
	}
	return serverFrame{fin: h[0]&0x80 != 0, op: h[0] & 0x0f, payload: p}, nil
}

// readText returns the next text message, answering nothing and skipping pings.
func (r *raw) readText() string {
	r.t.Helper()
	for {
		f, err := r.readFrame(5 * time.Second)
		if err != nil {
			r.t.Fatalf("reading text: %v", err)
		}
		switch f.op {
		case 1:
			return string(f.payload)
		case 8:
			code, reason := parseClose(f.payload)
			r.t.Fatalf("expected text, got close %d %q", code, reason)
		case 9, 10:
			continue
		default:
			r.t.Fatalf("expected text, got opcode %d", f.op)
		}
	}
}

func parseClose(p []byte) (int, string) {
	if len(p) < 2 {
		return 1005, ""
	}
	return int(binary.BigEndian.Uint16(p)), string(p[2:])
}

// expectClose reads until a close frame and checks its code and reason
// (reason "" matches any); it returns when the frame arrived.
func (r *raw) expectClose(code int, reason string, timeout time.Duration) time.Time {
	r.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		f, err := r.readFrame(time.Until(deadline))
		if err != nil {
			r.t.Fatalf("waiting for close %d %q: %v", code, reason, err)
		}
		switch f.op {
		case 8:
			at := time.Now()
			gotCode, gotReason := parseClose(f.payload)
			if gotCode != code || (reason != "" && gotReason != reason) {
				r.t.Fatalf("close %d %q, want %d %q", gotCode, gotReason, code, reason)
			}
			return at
		case 1:
			r.t.Fatalf("waiting for close %d, got text %q", code, truncate(string(f.payload), 200))
		}
	}
}

// expectEOF checks the server closed the TCP connection within timeout
// without sending any frame.
func (r *raw) expectEOF(timeout time.Duration) {
	r.t.Helper()
	_ = r.c.SetReadDeadline(time.Now().Add(timeout))
	var b [1]byte
	n, err := r.br.Read(b[:])
	if n != 0 || err == nil {
		r.t.Fatalf("expected the connection closed, read %d bytes", n)
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		r.t.Fatalf("connection still open after %v", timeout)
	}
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}
