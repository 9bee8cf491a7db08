package e2e

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"

	"github.com/mcpgate/gateway/conformance/wsraw"
)

// Headless Chromium over https:// and wss:// with the test CA: the browser
// trusts the gateway's certificate by its public key
// (--ignore-certificate-errors-spki-list, honoured with --user-data-dir), so
// its TLS stack, fetch with CORS and WebSocket run as on a real site.

// tlsPageJS is shared by the pages: connect opens a WebSocket, pings, and
// records in window.out what the page saw; window.done is set at the end.
const tlsPageJS = `
window.out = {opened: false, error: false};
window.done = false;
function connect(url) {
  const o = window.out;
  const ws = new WebSocket(url, "mcp");
  ws.onopen = () => { o.opened = true; o.protocol = ws.protocol; ws.send('{"jsonrpc":"2.0","id":"b1","method":"ping"}'); };
  ws.onmessage = (e) => { o.message = e.data; ws.close(1000); };
  ws.onerror = () => { o.error = true; };
  ws.onclose = (e) => { o.closeCode = e.code; o.closeReason = e.reason; window.done = true; };
}
`

// tlsPageServer serves html at / over https with the gateway's certificate
// (valid for 127.0.0.1 and localhost) on hostport ("localhost:0" for any
// port) and returns its origin.
func tlsPageServer(t *testing.T, hostport, certFile, keyFile string, html func() string) string {
	t.Helper()
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	must(t, err)
	ln, err := tls.Listen("tcp", hostport, &tls.Config{Certificates: []tls.Certificate{cert}})
	must(t, err)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "text/html")
		fmt.Fprint(w, html())
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	host, _, _ := net.SplitHostPort(hostport)
	return fmt.Sprintf("https://%s:%d", host, ln.Addr().(*net.TCPAddr).Port)
}

// spkiHash is the base64 SHA-256 of a certificate file's public key, as
// --ignore-certificate-errors-spki-list takes it.
func spkiHash(t *testing.T, certFile string) string {
	t.Helper()
	b, err := os.ReadFile(certFile)
	must(t, err)
	blk, _ := pem.Decode(b)
	if blk == nil {
		t.Fatalf("%s: no PEM", certFile)
	}
	cert, err := x509.ParseCertificate(blk.Bytes)
	must(t, err)
	sum := sha256.Sum256(cert.RawSubjectPublicKeyInfo)
	return base64.StdEncoding.EncodeToString(sum[:])
}

// devtoolsLog collects what DevTools reports about WebSocket handshakes and
// the browser's own log lines ("WebSocket connection to ... failed: ...").
type devtoolsLog struct {
	mu       sync.Mutex
	statuses []int64  // HTTP status of each WebSocket handshake that succeeded
	lines    []string // Log.entryAdded texts
}

func (d *devtoolsLog) reset() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.statuses, d.lines = nil, nil
}

func (d *devtoolsLog) String() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return fmt.Sprintf("handshake statuses %v; browser log %q", d.statuses, d.lines)
}

// browserTLS starts headless Chromium trusting the key with hash spki.
func browserTLS(t *testing.T, spki string) (context.Context, *devtoolsLog) {
	ctx := chromium(t, chromedp.Flag("ignore-certificate-errors-spki-list", spki))
	dl := &devtoolsLog{}
	// chromedp enables the Network and Log domains on every tab. The first
	// call starts the browser; it must not carry a timeout.
	must(t, chromedp.Listen(ctx, func(ev any) {
		dl.mu.Lock()
		defer dl.mu.Unlock()
		switch e := ev.(type) {
		case *network.EventWebSocketHandshakeResponseReceived:
			if e.Response != nil {
				dl.statuses = append(dl.statuses, e.Response.Status)
			}
		case *log.EventEntryAdded:
			if e.Entry != nil {
				dl.lines = append(dl.lines, e.Entry.Text)
			}
		}
	}))
	must(t, chromedp.Do(ctx, chromedp.Navigate("about:blank")))
	return ctx, dl
}

// pageOut is what a page recorded.
type pageOut struct {
	TicketStatus int    `json:"ticketStatus"`
	ExpiresIn    int    `json:"expiresIn"`
	FetchError   string `json:"fetchError"`
	Opened       bool   `json:"opened"`
	Protocol     string `json:"protocol"`
	Message      string `json:"message"`
	Error        bool   `json:"error"`
	CloseCode    int    `json:"closeCode"`
	CloseReason  string `json:"closeReason"`
}

// visit loads url and waits until its script is done.
func visit(t *testing.T, ctx context.Context, url string) pageOut {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, chromedp.Navigate(url)); err != nil {
		t.Fatalf("page %s: %v", url, err)
	}
	var lastErr error
	for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		var s string
		s, lastErr = chromedp.Run(ctx, chromedp.Evaluate[string](`window.done ? JSON.stringify(window.out) : ""`))
		if lastErr == nil && s != "" {
			var o pageOut
			must(t, json.Unmarshal([]byte(s), &o))
			return o
		}
	}
	t.Fatalf("page %s never finished: %v", url, lastErr)
	return pageOut{}
}

func TestBrowserOverTLS(t *testing.T) {
	if os.Getenv("CI") != "true" && testing.Short() {
		t.Skip("browser test skipped in -short")
	}
	requireBinary(t, "chromium")
	// The good page's origin is the one the gateway allows; its port is
	// picked first (the page server serves the gateway's certificate, which
	// exists once the gateway is configured).
	goodOrigin := fmt.Sprintf("https://127.0.0.1:%d", wsraw.FreePort(t))
	g, _, dir := startTLSGateway(t, with("origins", fmt.Sprintf(`
  allowed: [%q]
  allow_absent: true`, goodOrigin)))
	certFile, keyFile := filepath.Join(dir, "server.crt"), filepath.Join(dir, "server.key")
	gwHTTPS, gwWSS := "https://"+g.Addr, "wss://"+g.Addr

	page := func(body string) func() string {
		return func() string {
			return "<!doctype html><title>probe</title><script>" + tlsPageJS + body + "</script>"
		}
	}
	ticketPage := page(fmt.Sprintf(`
(async () => {
  try {
    const r = await fetch(%q, {method: "POST", headers: {Authorization: "Bearer %s"}});
    window.out.ticketStatus = r.status;
    const tk = await r.json();
    window.out.expiresIn = tk.expires_in;
    connect(%q + "/mcp?ticket=" + encodeURIComponent(tk.ticket));
  } catch (e) { window.out.fetchError = String(e); window.done = true; }
})();`, gwHTTPS+"/tickets", aliceToken, gwWSS))
	wrongTicketPage := page(fmt.Sprintf(`connect(%q);`, gwWSS+"/mcp?ticket=not-a-ticket"))
	crossSitePage := page(fmt.Sprintf(`connect(%q);`, gwWSS+"/mcp"))

	var mu sync.Mutex
	current := ticketPage
	serve := func() string { mu.Lock(); defer mu.Unlock(); return current() }
	good := tlsPageServer(t, strings.TrimPrefix(goodOrigin, "https://"), certFile, keyFile, serve)
	if good != goodOrigin {
		t.Fatalf("page server on %s, want %s", good, goodOrigin)
	}
	// The cross-site page: another site (localhost, not 127.0.0.1), same key.
	evil := tlsPageServer(t, "localhost:0", certFile, keyFile, crossSitePage)
	ctx, dl := browserTLS(t, spkiHash(t, certFile))

	t.Run("a page fetches a ticket by POST /tickets and connects with it", func(t *testing.T) {
		dl.reset()
		before := g.Metric(t, `gateway_handshakes_total{result="ok"}`)
		o := visit(t, ctx, good+"/")
		if o.FetchError != "" || o.TicketStatus != 200 || o.ExpiresIn != 30 {
			t.Fatalf("ticket: %+v; %s", o, dl)
		}
		if !o.Opened || o.Protocol != "mcp" || o.Message != `{"jsonrpc":"2.0","id":"b1","result":{}}` || o.CloseCode != 1000 {
			t.Fatalf("served with the ticket: %+v; %s", o, dl)
		}
		dl.mu.Lock()
		statuses := append([]int64(nil), dl.statuses...)
		dl.mu.Unlock()
		if len(statuses) != 1 || statuses[0] != 101 {
			t.Fatalf("DevTools saw handshake statuses %v, want [101]", statuses)
		}
		if after := g.Metric(t, `gateway_handshakes_total{result="ok"}`); after != before+1 {
			t.Fatalf("ok handshakes %v -> %v", before, after)
		}
	})
	t.Run("a wrong ticket is refused with 401", func(t *testing.T) {
		mu.Lock()
		current = wrongTicketPage
		mu.Unlock()
		dl.reset()
		before := g.Metric(t, `gateway_handshakes_total{result="401"}`)
		o := visit(t, ctx, good+"/")
		// Chromium's words for a 401 to a WebSocket handshake.
		expectBrowserRefused(t, o, dl, "HTTP Authentication failed")
		if after := g.Metric(t, `gateway_handshakes_total{result="401"}`); after != before+1 {
			t.Fatalf("401 handshakes %v -> %v", before, after)
		}
	})
	t.Run("a cross-site page gets 403", func(t *testing.T) {
		dl.reset()
		before := g.Metric(t, `gateway_handshakes_total{result="403"}`)
		o := visit(t, ctx, evil+"/")
		expectBrowserRefused(t, o, dl, "Unexpected response code: 403")
		if after := g.Metric(t, `gateway_handshakes_total{result="403"}`); after != before+1 {
			t.Fatalf("403 handshakes %v -> %v", before, after)
		}
	})
}

// expectBrowserRefused: the page saw the failed upgrade (error, then close
// 1006, never open), and the browser got the refusal: its log line says why
// the handshake failed (want), where a refusal lost on the way reads
// "Connection closed before receiving a handshake response" or the like.
func expectBrowserRefused(t *testing.T, o pageOut, dl *devtoolsLog, want string) {
	t.Helper()
	if o.Opened || !o.Error || o.CloseCode != 1006 {
		t.Fatalf("page saw %+v, want error and close 1006 without open; %s", o, dl)
	}
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		dl.mu.Lock()
		seen := false
		for _, l := range dl.lines {
			seen = seen || strings.Contains(l, want)
		}
		dl.mu.Unlock()
		if seen {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the browser never saw %q; %s", want, dl)
		}
	}
}
