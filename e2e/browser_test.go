package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// The page opens a WebSocket to the gateway and reports what happened in
// window.result: "open:<first reply>" or "error:<close code>".
const pageHTML = `<!doctype html><title>probe</title><script>
window.result = "";
const ws = new WebSocket(%q, "mcp");
ws.onopen = () => ws.send('{"jsonrpc":"2.0","id":"b1","method":"ping"}');
ws.onmessage = (e) => { window.result = "open:" + e.data; ws.close(1000); };
ws.onerror = () => { if (!window.result) window.result = "error"; };
ws.onclose = (e) => { if (!window.result || window.result === "error") window.result = "error:" + e.code; };
</script>`

func servePage(t *testing.T, host string, html func(http.ResponseWriter, *http.Request) string) string {
	ln, err := net.Listen("tcp", host+":0")
	must(t, err)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		body := html(w, r)
		fmt.Fprint(w, body)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

func browser(t *testing.T) context.Context {
	ctx := chromium(t)
	// The first call starts the browser; it must not carry a timeout.
	must(t, chromedp.Do(ctx, chromedp.Navigate("about:blank")))
	return ctx
}

// chromium is a context for a fresh headless Chromium (not started yet),
// with the project's flags, a new profile and any extra options.
func chromium(t *testing.T, extra ...chromedp.ExecAllocatorOption) context.Context {
	bin := requireBinary(t, "chromium")
	opts := append([]chromedp.ExecAllocatorOption{
		chromedp.ExecPath(bin),
		chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-quic", true),
		chromedp.UserDataDir(t.TempDir()),
	}, extra...)
	actx, cancel := chromedp.NewExecAllocator(context.Background(), opts...)
	t.Cleanup(cancel)
	ctx, cancel2 := chromedp.NewContext(actx)
	t.Cleanup(cancel2)
	return ctx
}

func pageResult(t *testing.T, ctx context.Context, url string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, chromedp.Navigate(url)); err != nil {
		t.Fatalf("page %s: %v", url, err)
	}
	// Evaluate until the page reports; errors while the page is still
	// committing its navigation are expected and retried.
	var lastErr error
	for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		result, err := chromedp.Run(ctx, chromedp.Evaluate[string](`String(window.result || "")`))
		lastErr = err
		if err == nil && result != "" && result != "error" {
			return result
		}
	}
	t.Fatalf("page %s never reported: %v", url, lastErr)
	return ""
}

// Cross-site WebSocket hijacking in a real browser: a page from an origin
// that is not allowed, with a cookie for the gateway's host, is refused with
// 403 before the upgrade and sees the failure; the same flow from an allowed
// origin with a ticket works.
func TestBrowserCrossSiteHijack(t *testing.T) {
	if os.Getenv("CI") != "true" && testing.Short() {
		t.Skip("browser test skipped in -short")
	}
	// The evil page is served from "localhost", the gateway and the good page
	// from 127.0.0.1: different sites, as an attacker's page would be.
	var gw *gateway
	good := servePage(t, "127.0.0.1", func(w http.ResponseWriter, r *http.Request) string {
		if r.URL.Path == "/login" {
			// The victim's session cookie for the gateway's host (cookies are
			// per host, not per port).
			http.SetCookie(w, &http.Cookie{Name: "session", Value: aliceToken, Path: "/"})
			return "logged in"
		}
		_, body := postTicket(t, gw, aliceToken, "")
		var tk struct{ Ticket string }
		_ = json.Unmarshal([]byte(body), &tk)
		return fmt.Sprintf(pageHTML, gw.URL("/mcp?ticket="+tk.Ticket))
	})
	evilLn, err := net.Listen("tcp", "127.0.0.1:0")
	must(t, err)
	evilPort := evilLn.Addr().(*net.TCPAddr).Port
	evilLn.Close()
	gw = startGateway(t, with("origins", fmt.Sprintf(`
  allowed: ["http://%s"]
  allow_absent: true`, good)))
	evilSrv := &http.Server{Addr: fmt.Sprintf("127.0.0.1:%d", evilPort), Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		fmt.Fprintf(w, pageHTML, gw.URL("/mcp"))
	})}
	go evilSrv.ListenAndServe()
	t.Cleanup(func() { evilSrv.Close() })

	ctx := browser(t)
	// The victim holds a cookie for the gateway's host (as if it had logged in).
	must(t, chromedp.Do(ctx, chromedp.Navigate("http://"+good+"/login")))

	before := gw.Metric(t, `gateway_handshakes_total{result="403"}`)
	got := pageResult(t, ctx, fmt.Sprintf("http://localhost:%d/", evilPort))
	if got != "error:1006" {
		t.Fatalf("evil page: %q, want the upgrade refused (error:1006)", got)
	}
	if after := gw.Metric(t, `gateway_handshakes_total{result="403"}`); after != before+1 {
		t.Fatalf("403 handshakes %v -> %v", before, after)
	}
	got = pageResult(t, ctx, "http://"+good+"/")
	if got != `open:{"jsonrpc":"2.0","id":"b1","result":{}}` {
		t.Fatalf("allowed page with ticket: %q", got)
	}
}
