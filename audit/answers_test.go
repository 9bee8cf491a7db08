package audit

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha1"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gobwas/ws"
)

// Refusals and close codes over wss://: the audit dials every probe over TLS
// and judges the answer that reaches it, so a server that decides right and
// then loses the answer (closes the TLS connection without writing the 403
// or the close frame) does not get an A, while our gateway over wss:// is
// graded as over ws://.

// testPKI is a CA and a server certificate for 127.0.0.1, written to files.
type testPKI struct {
	certFile, keyFile, caFile string
	pool                      *x509.CertPool
	cert                      tls.Certificate
}

func newTestPKI(t *testing.T) *testPKI {
	t.Helper()
	dir := t.TempDir()
	now := time.Now()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "audit test CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(30 * 24 * time.Hour),
		IsCA: true, KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "audit test server"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(30 * 24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, DNSNames: []string{"localhost"}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	p := &testPKI{certFile: filepath.Join(dir, "server.crt"), keyFile: filepath.Join(dir, "server.key"), caFile: filepath.Join(dir, "ca.pem"), pool: x509.NewCertPool()}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb})
	for f, b := range map[string][]byte{p.certFile: certPEM, p.keyFile: keyPEM, p.caFile: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})} {
		if err := os.WriteFile(f, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	p.pool.AddCert(caCert)
	if p.cert, err = tls.X509KeyPair(certPEM, keyPEM); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestAuditGatewayWSS: our gateway over wss:// gets the grade and the check
// outcomes it gets over ws:// (only the tls check differs: a verified
// certificate instead of plaintext on loopback), with the same close codes
// and refusals in the evidence.
func TestAuditGatewayWSS(t *testing.T) {
	t.Parallel()
	const token = "alice-audit-token-0123456789abcdef"
	pki := newTestPKI(t)
	var wg sync.WaitGroup
	var plainRep, tlsRep *Report
	var plainCode, tlsCode int
	plainURL := startGateway(t, token)
	tlsURL := "wss://" + startGatewayConfig(t, token, `tls:
  cert_file: `+pki.certFile+`
  key_file: `+pki.keyFile+`
  min_version: "1.2"
`) + "/mcp"
	wg.Add(2)
	go func() {
		defer wg.Done()
		plainRep, plainCode = audit(t, plainURL, "--token", token, "--timeout", "10s", "--auth-deadline", "10s")
	}()
	go func() {
		defer wg.Done()
		tlsRep, tlsCode = audit(t, tlsURL, "--token", token, "--cacert", pki.caFile, "--timeout", "10s", "--auth-deadline", "10s")
	}()
	wg.Wait()
	if tlsRep.Grade != "A" || tlsCode != 0 || tlsRep.Grade != plainRep.Grade || tlsCode != plainCode {
		t.Errorf("wss:// grade %s exit %d, ws:// grade %s exit %d; want A and 0 on both: %v", tlsRep.Grade, tlsCode, plainRep.Grade, plainCode, tlsRep.GradeReasons)
	}
	if tlsRep.AuthMode != modeMessage {
		t.Errorf("auth mode %q, want message", tlsRep.AuthMode)
	}
	for _, c := range plainRep.Checks {
		if c.ID == "tls" {
			continue
		}
		if tc := tlsRep.Check(c.ID); tc == nil || tc.Status != c.Status {
			t.Errorf("%s: %v over wss://, %s over ws:// (%s)", c.ID, tc, c.Status, c.Summary)
		}
	}
	expect(t, tlsRep, "tls", Pass, "with a valid certificate for 127.0.0.1")
	expect(t, tlsRep, "origin", Pass, "403")
	expect(t, tlsRep, "auth-before-service", Pass, `close 1008 "Invalid credentials"`)
	expect(t, tlsRep, "auth-deadline", Pass, `close 1008 "Authentication timeout"`)
	expect(t, tlsRep, "message-size", Pass, "close 1009")
	expect(t, tlsRep, "rate-limit", Pass, `close 1008 "Rate limit exceeded"`)
	expect(t, tlsRep, "token-in-url", Pass, `close 1008 "Invalid credentials"`)
	expect(t, tlsRep, "cookie-auth", Pass, `close 1008 "Invalid credentials"`)
	expect(t, tlsRep, "availability", Pass, "101")
}

// answerServer is a small WebSocket server over TLS with the seed's
// defences: an Origin allowlist (403), first-message auth within a second
// (1008 "Authentication timeout", 1008 "Invalid credentials", 1007 for a
// first message that is not JSON), a 64 KiB message cap (1009, from the
// frame header), binary refused (1003), 10 messages per connection (1008
// "Rate limit exceeded"). It answers every JSON-RPC request with {}.
//
// With loseHTTP it decides the same way and loses its HTTP refusals: it
// closes the TLS connection without writing the 403; with loseClose it loses
// its close frames: it closes without them (both: what the gateway did over
// wss:// before the fix of issue 12).
type answerServer struct {
	token     string
	origin    string
	loseHTTP  bool
	loseClose bool
	ln        net.Listener
	wg        sync.WaitGroup
	mu        sync.Mutex
	conns     map[net.Conn]bool
}

func startAnswerServer(t *testing.T, pki *testPKI, loseHTTP, loseClose bool) string {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{pki.cert}, MinVersion: tls.VersionTLS12})
	if err != nil {
		t.Fatal(err)
	}
	s := &answerServer{token: "answer-token-0123456789", origin: "https://app.example.com", loseHTTP: loseHTTP, loseClose: loseClose, ln: ln, conns: map[net.Conn]bool{}}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.mu.Lock()
			s.conns[c] = true
			s.mu.Unlock()
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				s.serve(c)
				s.mu.Lock()
				delete(s.conns, c)
				s.mu.Unlock()
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		s.mu.Lock()
		for c := range s.conns {
			c.Close()
		}
		s.mu.Unlock()
		s.wg.Wait()
	})
	return "wss://" + ln.Addr().String() + "/mcp"
}

// finish ends a connection after an answer: the answer is written, then the
// server reads on (discarding) until the client closes or two seconds
// pass, so that what the client still sends does not turn the close into a
// reset that destroys the answer. lose skips the answer and closes at once.
func (s *answerServer) finish(c net.Conn, answer []byte, lose bool) {
	if lose {
		c.Close()
		return
	}
	_ = c.SetWriteDeadline(time.Now().Add(5 * time.Second))
	_, _ = c.Write(answer)
	if tc, ok := c.(*tls.Conn); ok {
		_ = tc.CloseWrite()
	}
	_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
	_, _ = io.Copy(io.Discard, c)
	c.Close()
}

func (s *answerServer) refuse(c net.Conn, status int, why string) {
	s.finish(c, fmt.Appendf(nil, "HTTP/1.1 %d %s\r\nContent-Type: text/plain\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s",
		status, http.StatusText(status), len(why), why), s.loseHTTP)
}

func (s *answerServer) closeWith(c net.Conn, code ws.StatusCode, reason string) {
	f := ws.NewCloseFrame(ws.NewCloseFrameBody(code, reason))
	var b strings.Builder
	_ = ws.WriteFrame(&b, f)
	s.finish(c, []byte(b.String()), s.loseClose)
}

func (s *answerServer) serve(c net.Conn) {
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	br := bufio.NewReader(c)
	req, err := http.ReadRequest(br)
	if err != nil {
		return
	}
	switch {
	case req.URL.Path != "/mcp":
		s.refuse(c, 404, "not found")
		return
	case req.Header.Get("Origin") != "" && req.Header.Get("Origin") != s.origin:
		s.refuse(c, 403, "origin not allowed")
		return
	case !strings.EqualFold(req.Header.Get("Upgrade"), "websocket") || req.Header.Get("Sec-WebSocket-Key") == "":
		s.refuse(c, 400, "not a websocket upgrade")
		return
	}
	h := sha1.Sum([]byte(req.Header.Get("Sec-WebSocket-Key") + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
	resp := "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: " +
		base64.StdEncoding.EncodeToString(h[:]) + "\r\n"
	if strings.Contains(req.Header.Get("Sec-WebSocket-Protocol"), "mcp") {
		resp += "Sec-WebSocket-Protocol: mcp\r\n"
	}
	if _, err := io.WriteString(c, resp+"\r\n"); err != nil {
		return
	}
	authed := false
	count := 0
	_ = c.SetDeadline(time.Now().Add(time.Second)) // the auth deadline
	for {
		hdr, err := ws.ReadHeader(br)
		if err != nil {
			var ne net.Error
			if !authed && errors.As(err, &ne) && ne.Timeout() {
				_ = c.SetDeadline(time.Time{})
				s.closeWith(c, ws.StatusPolicyViolation, "Authentication timeout")
			}
			return
		}
		if hdr.Length > 64<<10 {
			s.closeWith(c, ws.StatusMessageTooBig, "Message too big")
			return
		}
		p := make([]byte, hdr.Length)
		if _, err := io.ReadFull(br, p); err != nil {
			return
		}
		if hdr.Masked {
			ws.Cipher(p, hdr.Mask, 0)
		}
		switch hdr.OpCode {
		case ws.OpClose:
			s.closeWith(c, ws.StatusNormalClosure, "")
			return
		case ws.OpPing:
			_ = ws.WriteFrame(c, ws.NewPongFrame(p))
			continue
		case ws.OpBinary:
			s.closeWith(c, ws.StatusUnsupportedData, "")
			return
		case ws.OpText:
		default:
			continue
		}
		if !authed {
			var m map[string]any
			switch {
			case json.Unmarshal(p, &m) != nil:
				s.closeWith(c, ws.StatusInvalidFramePayloadData, "Invalid message format")
			case len(m) != 2 || m["type"] != "auth" || m["token"] != s.token:
				s.closeWith(c, ws.StatusPolicyViolation, "Invalid credentials")
			default:
				authed = true
				_ = c.SetDeadline(time.Time{})
				_ = ws.WriteFrame(c, ws.NewTextFrame([]byte(`{"type":"auth_ok","session":"1"}`)))
				continue
			}
			return
		}
		if count++; count > 10 {
			s.closeWith(c, ws.StatusPolicyViolation, "Rate limit exceeded")
			return
		}
		var r struct {
			ID json.RawMessage `json:"id"`
		}
		if json.Unmarshal(p, &r) == nil && r.ID != nil {
			_ = ws.WriteFrame(c, ws.NewTextFrame([]byte(`{"jsonrpc":"2.0","id":`+string(r.ID)+`,"result":{}}`)))
		}
	}
}

// TestAuditLostAnswersTLS: the same server over wss://, answering, losing
// its close frames, and losing its HTTP refusals too. The one that answers
// gets A. Lost close frames are warnings on the checks that saw them (B);
// a lost 403 leaves Origin validation unverified (at most C). None is an A.
func TestAuditLostAnswersTLS(t *testing.T) {
	t.Parallel()
	pki := newTestPKI(t)
	const token = "answer-token-0123456789"
	urls := []string{startAnswerServer(t, pki, false, false), startAnswerServer(t, pki, false, true), startAnswerServer(t, pki, true, true)}
	reps := make([]*Report, len(urls))
	codes := make([]int, len(urls))
	var wg sync.WaitGroup
	for i, u := range urls {
		wg.Add(1)
		go func() {
			defer wg.Done()
			reps[i], codes[i] = audit(t, u, "--token", token, "--cacert", pki.caFile, "--timeout", "10s", "--auth-deadline", "5s")
		}()
	}
	wg.Wait()
	good, lostClose, lostAll := reps[0], reps[1], reps[2]

	// The control: the same decisions, answered, are an A.
	if good.Grade != "A" || codes[0] != 0 {
		t.Errorf("answering server: grade %s exit %d, want A 0: %v", good.Grade, codes[0], good.GradeReasons)
	}
	expect(t, good, "tls", Pass)
	expect(t, good, "origin", Pass, "403")
	expect(t, good, "auth-before-service", Pass, `close 1008 "Invalid credentials"`)
	expect(t, good, "auth-deadline", Pass, `close 1008 "Authentication timeout"`)
	expect(t, good, "message-size", Pass, "close 1009")
	expect(t, good, "rate-limit", Pass, `close 1008 "Rate limit exceeded"`)

	// Close frames lost: each check that saw a close says so.
	if lostClose.Grade != "B" {
		t.Errorf("server losing its close frames: grade %s, want B: %v", lostClose.Grade, lostClose.GradeReasons)
	}
	expect(t, lostClose, "origin", Pass, "403")
	for _, l := range []*Report{lostClose, lostAll} {
		expect(t, l, "tls", Pass)
		expect(t, l, "auth-before-service", Warn, "2 of 2 connections ended without a close frame")
		expect(t, l, "auth-deadline", Warn, "without a close frame")
		expect(t, l, "message-size", Warn, "without a close frame", "not 1009")
		expect(t, l, "rate-limit", Warn, "not with close 1008")
		expect(t, l, "availability", Pass)
	}

	// The 403 lost as well: Origin validation is not verified.
	if lostAll.Grade != "C" || codes[2] != 1 {
		t.Errorf("server losing every answer: grade %s exit %d, want C 1: %v", lostAll.Grade, codes[2], lostAll.GradeReasons)
	}
	expect(t, lostAll, "origin", Skip, "without an HTTP answer", "not verified")
}

// TestRateErrorCodes: the SPEC's -31029 and the retired -32029 both say
// "rate limited", whatever the message.
func TestRateErrorCodes(t *testing.T) {
	for _, tc := range []struct {
		data string
		want bool
	}{
		{`{"jsonrpc":"2.0","id":1,"error":{"code":-31029,"message":"x"}}`, true},
		{`{"jsonrpc":"2.0","id":1,"error":{"code":-32029,"message":"x"}}`, true},
		{`{"jsonrpc":"2.0","id":1,"error":{"code":-32000,"message":"Too many requests"}}`, true},
		{`{"jsonrpc":"2.0","id":1,"error":{"code":-32603,"message":"Internal error"}}`, false},
	} {
		rs := responses([]byte(tc.data))
		if len(rs) != 1 || rs[0].isRateError() != tc.want {
			t.Errorf("%s: rate error %v, want %v", tc.data, len(rs) == 1 && rs[0].isRateError(), tc.want)
		}
	}
}

// TestCodeNames: the gateway's own codes (SPEC 4.6) are named in the
// evidence, the retired ones as retired, and -31003 is an auth refusal.
func TestCodeNames(t *testing.T) {
	for code, want := range map[int]string{
		-31000: "-31000 (Reconnect (draining))",
		-31003: "-31003 (Forbidden)",
		-31029: "-31029 (Rate limit exceeded)",
		-31503: "-31503 (Upstream unavailable)",
		-31504: "-31504 (Upstream timeout)",
		-32603: "-32603 (Internal error)",
		-32029: "-32029 (rate limit (retired code; SPEC 4.6: -31029))",
		-32042: "-32042",
	} {
		if got := describeCode(code); got != want {
			t.Errorf("describeCode(%d) = %q, want %q", code, got, want)
		}
	}
	rs := responses([]byte(`{"jsonrpc":"2.0","id":1,"error":{"code":-31003,"message":"x"}}`))
	if len(rs) != 1 || !rs[0].isAuthError() {
		t.Error("-31003 is not taken for an auth refusal")
	}
	for _, code := range []int{-31503, -31504} {
		rs := responses(fmt.Appendf(nil, `{"jsonrpc":"2.0","id":1,"error":{"code":%d,"message":"Upstream x"}}`, code))
		if len(rs) != 1 || rs[0].isRateError() {
			t.Errorf("%d taken for a rate limit", code)
		}
	}
}
