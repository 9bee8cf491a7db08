package audit

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
)

func TestGradeRubric(t *testing.T) {
	ck := func(id string, st Status, sev Severity) Check {
		return Check{ID: id, Status: st, Severity: sev}
	}
	allPass := func() []Check {
		return []Check{
			ck("tls", Warn, Info), ck("origin", Pass, Critical), ck("auth-before-service", Pass, Critical),
			ck("auth-deadline", Pass, Major), ck("message-size", Pass, Major), ck("rate-limit", Pass, Major),
			ck("token-in-url", Pass, Minor), ck("cookie-auth", Pass, Critical), ck("availability", Pass, Major),
		}
	}
	set := func(cs []Check, id string, st Status) []Check {
		for i := range cs {
			if cs[i].ID == id {
				cs[i].Status = st
			}
		}
		return cs
	}
	tokenSkip := func(cs []Check, ids ...string) []Check {
		for i := range cs {
			for _, id := range ids {
				if cs[i].ID == id {
					cs[i].Status, cs[i].tokenSkip = Skip, true
				}
			}
		}
		return cs
	}
	cases := []struct {
		name   string
		checks []Check
		want   string
	}{
		{"all pass, loopback plaintext", allPass(), "A"},
		{"token in URL", set(allPass(), "token-in-url", Warn), "B"},
		{"no token", tokenSkip(allPass(), "message-size", "rate-limit", "token-in-url", "cookie-auth"), "B"},
		{"origin skipped, no answer", set(allPass(), "origin", Skip), "C"},
		{"one major", set(allPass(), "rate-limit", Fail), "C"},
		{"two major", set(set(allPass(), "rate-limit", Fail), "message-size", Fail), "D"},
		{"three major", set(set(set(allPass(), "rate-limit", Fail), "message-size", Fail), "auth-deadline", Fail), "F"},
		{"one major and a warning", set(set(allPass(), "rate-limit", Fail), "token-in-url", Warn), "C"},
		{"no origin validation", set(allPass(), "origin", Fail), "F"},
		{"cookies", set(allPass(), "cookie-auth", Fail), "F"},
		{"served without auth", set(allPass(), "auth-before-service", Fail), "F"},
	}
	plain := allPass()
	plain[0] = ck("tls", Fail, Critical)
	cases = append(cases, struct {
		name   string
		checks []Check
		want   string
	}{"plaintext off loopback", plain, "F"})
	for _, c := range cases {
		if got, why := grade(c.checks); got != c.want {
			t.Errorf("%s: grade %s, want %s (%v)", c.name, got, c.want, why)
		}
	}
}

func TestUsage(t *testing.T) {
	for _, args := range [][]string{
		{},
		{"http://127.0.0.1/mcp"},
		{"ws://a/mcp", "ws://b/mcp"},
		{"ws://127.0.0.1/mcp", "--timeout", "0s"},
		{"ws://127.0.0.1/mcp", "--bogus"},
		{"ws://user:pw@127.0.0.1/mcp"},
	} {
		var out, errb bytes.Buffer
		if code := Main(args, &out, &errb); code != 2 {
			t.Errorf("%q: exit %d, want 2 (%s)", args, code, errb.String())
		}
	}
}

// miniServer is an in-process WebSocket endpoint over TLS whose defences
// are switched by the test. It answers every JSON-RPC request with {}.
type miniServer struct {
	origin  string // allowed Origin; empty: no Origin check
	bearer  string // required bearer token; empty: no auth at all
	urlAuth bool   // also accept ?token=<bearer>
	mu      sync.Mutex
	conns   []net.Conn
}

func (m *miniServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if o := r.Header.Get("Origin"); m.origin != "" && o != "" && o != m.origin {
		http.Error(w, "origin", http.StatusForbidden)
		return
	}
	if m.bearer != "" && r.Header.Get("Authorization") != "Bearer "+m.bearer &&
		!(m.urlAuth && r.URL.Query().Get("token") == m.bearer) {
		http.Error(w, "auth", http.StatusUnauthorized)
		return
	}
	conn, _, _, err := ws.UpgradeHTTP(r, w)
	if err != nil {
		return
	}
	m.mu.Lock()
	m.conns = append(m.conns, conn)
	m.mu.Unlock()
	go func() {
		defer conn.Close()
		for {
			data, op, err := wsutil.ReadClientData(conn)
			if err != nil {
				return
			}
			if op != ws.OpText {
				continue
			}
			var req struct {
				ID json.RawMessage `json:"id"`
			}
			if json.Unmarshal(data, &req) != nil || req.ID == nil {
				continue
			}
			resp := `{"jsonrpc":"2.0","id":` + string(req.ID) + `,"result":{}}`
			if wsutil.WriteServerText(conn, []byte(resp)) != nil {
				return
			}
		}
	}()
}

func (m *miniServer) close() {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, c := range m.conns {
		c.Close()
	}
}

func startMini(t *testing.T, m *miniServer) (*httptest.Server, *x509.CertPool) {
	srv := httptest.NewUnstartedServer(m)
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the TLS 1.1 probe is refused, by design
	srv.StartTLS()
	t.Cleanup(func() { m.close(); srv.Close() })
	pool := x509.NewCertPool()
	pool.AddCert(srv.Certificate())
	return srv, pool
}

func wssURL(srv *httptest.Server) string {
	return "wss" + strings.TrimPrefix(srv.URL, "https") + "/mcp"
}

// TestTLSUntrusted: a certificate from an unknown CA fails the TLS check,
// and the token is then never sent.
func TestTLSUntrusted(t *testing.T) {
	srv, _ := startMini(t, &miniServer{origin: "https://ok.example", bearer: "s3cret-token"})
	rep, err := Run(context.Background(), Options{URL: wssURL(srv), Token: "s3cret-token", Timeout: 5 * time.Second, AuthDeadline: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	expect(t, rep, "tls", Fail, "certificate does not verify: signed by an unknown authority", "TLS 1.3")
	if !strings.Contains(rep.AuthMode, "token is not sent") {
		t.Errorf("auth mode %q: the token must not be sent over an unverified channel", rep.AuthMode)
	}
	expect(t, rep, "message-size", Skip, "token is not sent")
	// The other checks still run over the unverified channel, without the token.
	expect(t, rep, "auth-before-service", Pass, "401")
	expect(t, rep, "availability", Pass)
	if rep.Grade != "C" {
		t.Errorf("grade %s, want C (one major failure: TLS): %v", rep.Grade, rep.GradeReasons)
	}
}

// TestHeaderAuthServer: a server that authenticates with a bearer header
// at the upgrade, also takes ?token=, has an Origin check, and no limits.
func TestHeaderAuthServer(t *testing.T) {
	m := &miniServer{origin: "https://ok.example", bearer: "s3cret-token", urlAuth: true}
	srv, pool := startMini(t, m)
	rep, err := Run(context.Background(), Options{URL: wssURL(srv), Token: "s3cret-token", RootCAs: pool, Timeout: 5 * time.Second, AuthDeadline: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	expect(t, rep, "tls", Pass, "TLS 1.3 with a valid certificate for 127.0.0.1", "at most TLS 1.1", "refused")
	if rep.AuthMode != modeHeader {
		t.Errorf("auth mode %q, want header", rep.AuthMode)
	}
	expect(t, rep, "auth-before-service", Pass, "401 Unauthorized")
	expect(t, rep, "auth-deadline", Pass, "refused")
	expect(t, rep, "origin", Pass, "Authorization: Bearer <token>", "403")
	expect(t, rep, "message-size", Fail, "JSON-RPC result for id")
	expect(t, rep, "rate-limit", Fail, "500 answered")
	expect(t, rep, "token-in-url", Warn, "?token=")
	expect(t, rep, "cookie-auth", Pass, "401")
	if rep.Grade != "D" {
		t.Errorf("grade %s, want D (size and rate limits missing): %v", rep.Grade, rep.GradeReasons)
	}
	var out bytes.Buffer
	rep.WriteTable(&out)
	t.Log(out.String())
	if strings.Contains(out.String(), "s3cret-token") {
		t.Errorf("the token appears in the output:\n%s", out.String())
	}
	if rep.Stats.Connections > maxTotalConns || rep.Stats.MaxConcurrent > maxConcurrentConns {
		t.Errorf("budget exceeded: %+v", rep.Stats)
	}
}

// TestUnreachable: nothing listening gives no grade and exit 1.
func TestUnreachable(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	var out, errb bytes.Buffer
	code := Main([]string{"ws://" + addr + "/mcp", "--timeout", "2s", "--auth-deadline", "1s"}, &out, &errb)
	if code != 1 || !strings.Contains(out.String(), "Grade: -") {
		t.Errorf("exit %d, want 1 and no grade:\n%s%s", code, out.String(), errb.String())
	}
}
