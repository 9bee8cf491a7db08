package e2e

import (
	"bufio"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/mcpgate/gateway/conformance/wsraw"
)

// raw is a deliberately low-level WebSocket client: it writes any bytes,
// including frames a correct client never would, and reads frames as sent.
type raw struct {
	t    testing.TB
	c    net.Conn
	br   *bufio.Reader
	resp *http.Response
}

// dialRaw connects and sends an upgrade request; it returns the client with
// the HTTP response read (101 or a refusal).
func dialRaw(t testing.TB, addr, path string, extra ...string) *raw {
	t.Helper()
	return dialRawRequest(t, addr, wsraw.UpgradeRequest(addr, path, extra...))
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
	return requestOver(t, c, wsraw.UpgradeRequest(addr, "/mcp"))
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
	return authOver(t, dialRaw(t, addr, "/mcp"), token)
}

// authOver checks r was upgraded and authenticates it with a first-message
// token.
func authOver(t testing.TB, r *raw, token string) *raw {
	t.Helper()
	if r.resp.StatusCode != 101 {
		t.Fatalf("upgrade: %s", r.resp.Status)
	}
	r.sendText(`{"type":"auth","token":"` + token + `"}`)
	if got := r.readText(); !strings.HasPrefix(got, `{"type":"auth_ok","session":"`) {
		t.Fatalf("auth answer %q", got)
	}
	return r
}

// buildFrame builds one client frame (wsraw's); masked=false makes an
// illegal unmasked frame.
func buildFrame(fin bool, rsv, op byte, masked bool, payload []byte) []byte {
	if masked {
		return wsraw.Frame(fin, rsv, op, payload)
	}
	f := wsraw.Unmasked(fin, op, payload)
	f[0] |= (rsv & 7) << 4
	return f
}

func (r *raw) write(b []byte) {
	r.t.Helper()
	_ = r.c.SetWriteDeadline(time.Now().Add(10 * time.Second))
	if _, err := r.c.Write(b); err != nil {
		r.t.Fatalf("write: %v", err)
	}
}

// writeRefused writes b, which the gateway may refuse before it has read
// it all (a size decided from the frame header): a write error is not the
// row's failure, the close frame that follows tells.
func (r *raw) writeRefused(b []byte) {
	_ = r.c.SetWriteDeadline(time.Now().Add(10 * time.Second))
	_, _ = r.c.Write(b)
}

func (r *raw) sendText(s string) { r.t.Helper(); r.write(buildFrame(true, 0, 1, true, []byte(s))) }

type serverFrame struct {
	fin     bool
	op      byte
	payload []byte
}

func (r *raw) readFrame(timeout time.Duration) (serverFrame, error) {
	f, err := (&wsraw.Conn{C: r.c, BR: r.br}).ReadFrame(timeout)
	return serverFrame{fin: f.Fin, op: f.Op, payload: f.Payload}, err
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
			code, reason := wsraw.ParseClose(f.payload)
			r.t.Fatalf("expected text, got close %d %q", code, reason)
		case 9, 10:
			continue
		default:
			r.t.Fatalf("expected text, got opcode %d", f.op)
		}
	}
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
			gotCode, gotReason := wsraw.ParseClose(f.payload)
			if gotCode != code || (reason != "" && gotReason != reason) {
				r.t.Fatalf("close %d %q, want %d %q", gotCode, gotReason, code, reason)
			}
			return at
		case 1:
			r.t.Fatalf("waiting for close %d, got text %q", code, wsraw.Truncate(string(f.payload), 200))
		}
	}
}

// expectEOF checks the server closed the connection within timeout without
// sending any frame; over TLS, with a close_notify first.
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
	if _, isTLS := r.c.(*tls.Conn); isTLS && errors.Is(err, io.ErrUnexpectedEOF) {
		r.t.Fatalf("TCP closed without a TLS close_notify")
	}
}
