package e2e

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/mcpgate/gateway/conformance/wsraw"
)

// postTicket asks for a ticket over the gateway's transport.
func postTicket(t *testing.T, g *gateway, token, origin string) (*http.Response, string) {
	t.Helper()
	h := map[string]string{}
	if token != "" {
		h["Authorization"] = "Bearer " + token
	}
	if origin != "" {
		h["Origin"] = origin
	}
	resp := g.http(t, "POST", "/tickets", h)
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp, string(body)
}

// SPEC 4.3 over every transport: single-use tickets for browsers (single
// node: in memory); the ticket reply comes over the same transport.
func TestTickets(t *testing.T) {
	eachTransport(t, func(t *testing.T, tr wsraw.Transport) {
		g := startGatewayOn(t, tr)
		resp, body := postTicket(t, g, aliceToken, "")
		var tk struct {
			Ticket    string `json:"ticket"`
			ExpiresIn int    `json:"expires_in"`
		}
		must(t, json.Unmarshal([]byte(body), &tk))
		if resp.StatusCode != 200 || tk.Ticket == "" || tk.ExpiresIn != 30 || resp.Header.Get("Cache-Control") != "no-store" {
			t.Fatalf("%s %s", resp.Status, body)
		}
		// A browser page on an allowed origin upgrades with the ticket: no auth frame.
		r := g.raw(t, "/mcp?ticket="+tk.Ticket, "Origin: https://app.example.com")
		if r.resp.StatusCode != 101 {
			t.Fatalf("ticket upgrade: %s", r.resp.Status)
		}
		r.sendText(`{"jsonrpc":"2.0","id":"t","method":"ping"}`)
		if got := r.readText(); got != `{"jsonrpc":"2.0","id":"t","result":{}}` {
			t.Fatalf("got %s", got)
		}
		// Single use.
		if r2 := g.raw(t, "/mcp?ticket="+tk.Ticket, "Origin: https://app.example.com"); r2.resp.StatusCode != 401 {
			t.Fatalf("second use: %s", r2.resp.Status)
		}
		if r3 := g.raw(t, "/mcp?ticket=bogus"); r3.resp.StatusCode != 401 {
			t.Fatalf("bogus ticket: %s", r3.resp.Status)
		}
		// An unlisted origin is refused before the ticket is even looked at.
		_, body = postTicket(t, g, aliceToken, "")
		must(t, json.Unmarshal([]byte(body), &tk))
		if r4 := g.raw(t, "/mcp?ticket="+tk.Ticket, "Origin: https://evil.example.net"); r4.resp.StatusCode != 403 {
			t.Fatalf("evil origin with ticket: %s", r4.resp.Status)
		}

		if resp, _ := postTicket(t, g, "", ""); resp.StatusCode != 401 {
			t.Fatalf("no bearer: %s", resp.Status)
		}
		if resp, _ := postTicket(t, g, "wrong", ""); resp.StatusCode != 401 {
			t.Fatalf("bad bearer: %s", resp.Status)
		}
		if resp, _ := postTicket(t, g, aliceToken, "https://evil.example.net"); resp.StatusCode != 403 {
			t.Fatalf("evil origin: %s", resp.Status)
		}
		resp, _ = postTicket(t, g, aliceToken, "https://app.example.com")
		if resp.StatusCode != 200 || resp.Header.Get("Access-Control-Allow-Origin") != "https://app.example.com" {
			t.Fatalf("allowed origin: %s %v", resp.Status, resp.Header)
		}
		pre := g.http(t, "OPTIONS", "/tickets", map[string]string{
			"Origin": "https://app.example.com", "Access-Control-Request-Method": "POST"})
		pre.Body.Close()
		if pre.StatusCode != 204 || !strings.Contains(pre.Header.Get("Access-Control-Allow-Headers"), "Authorization") {
			t.Fatalf("preflight: %s %v", pre.Status, pre.Header)
		}
		if strings.Contains(g.Logs(), tk.Ticket) || strings.Contains(g.Logs(), "ticket=") {
			t.Fatal("a ticket reached the log")
		}
	})
}

// SPEC 4.3: a ticket is spent only by an upgrade that passes every other
// check; one refused for its path (404) or its Origin (403) leaves the
// ticket usable.
func TestTicketSurvivesRefusedUpgrade(t *testing.T) {
	eachTransport(t, func(t *testing.T, tr wsraw.Transport) {
		g := startGatewayOn(t, tr)
		for _, refused := range []struct {
			path, origin string
			status       int
		}{
			{"/other", "https://app.example.com", 404},
			{"/mcp", "https://evil.example.net", 403},
		} {
			_, body := postTicket(t, g, aliceToken, "")
			var tk struct{ Ticket string }
			must(t, json.Unmarshal([]byte(body), &tk))
			if r := g.raw(t, refused.path+"?ticket="+tk.Ticket, "Origin: "+refused.origin); r.resp.StatusCode != refused.status {
				t.Fatalf("%s from %s with a ticket: %s, want %d", refused.path, refused.origin, r.resp.Status, refused.status)
			}
			if r := g.raw(t, "/mcp?ticket="+tk.Ticket, "Origin: https://app.example.com"); r.resp.StatusCode != 101 {
				t.Errorf("the ticket after a %d: %s (the refused upgrade spent it)", refused.status, r.resp.Status)
			}
		}
	})
}

func TestTicketExpires(t *testing.T) {
	eachTransport(t, func(t *testing.T, tr wsraw.Transport) {
		g := startGatewayOn(t, tr, with("auth", `
  timeout: 1s
  static_tokens_file: tokens.txt
  tickets: {ttl: 1s}`))
		_, body := postTicket(t, g, aliceToken, "")
		var tk struct{ Ticket string }
		must(t, json.Unmarshal([]byte(body), &tk))
		time.Sleep(1500 * time.Millisecond)
		if r := g.raw(t, "/mcp?ticket="+tk.Ticket); r.resp.StatusCode != 401 {
			t.Fatalf("expired ticket: %s", r.resp.Status)
		}
	})
}

func revoke(t *testing.T, admin, token, subject string) int {
	t.Helper()
	req, _ := http.NewRequest("POST", "http://"+admin+"/admin/revoke", strings.NewReader(`{"subject":"`+subject+`","ttl":"1h"}`))
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	must(t, err)
	resp.Body.Close()
	return resp.StatusCode
}

func TestRevokeSingleNode(t *testing.T) {
	eachTransport(t, func(t *testing.T, tr wsraw.Transport) {
		g := startGatewayOn(t, tr)
		a1 := g.authed(t, aliceToken)
		a2 := g.raw(t, "/mcp", "Authorization: Bearer "+aliceToken)
		b := g.authed(t, bobToken)
		_, body := postTicket(t, g, aliceToken, "")
		var tk struct{ Ticket string }
		must(t, json.Unmarshal([]byte(body), &tk))
		if code := revoke(t, g.Admin, "wrong-admin-token", "alice"); code != 401 {
			t.Fatalf("wrong admin token: %d", code)
		}
		start := time.Now()
		if code := revoke(t, g.Admin, adminToken, "alice"); code != 200 {
			t.Fatalf("revoke: %d", code)
		}
		a1.expectClose(1008, "Revoked", time.Second)
		a2.expectClose(1008, "Revoked", time.Second)
		if el := time.Since(start); el > time.Second {
			t.Fatalf("revocation took %v", el)
		}
		// Alice's token is refused from now on; Bob is untouched.
		r := g.raw(t, "/mcp")
		r.sendText(`{"type":"auth","token":"` + aliceToken + `"}`)
		r.expectClose(1008, "Invalid credentials", 3*time.Second)
		if r := g.raw(t, "/mcp", "Authorization: Bearer "+aliceToken); r.resp.StatusCode != 401 {
			t.Fatalf("revoked bearer: %s", r.resp.Status)
		}
		// A ticket issued before the revocation is refused like the token.
		if r := g.raw(t, "/mcp?ticket="+tk.Ticket, "Origin: https://app.example.com"); r.resp.StatusCode != 401 {
			t.Fatalf("revoked subject's ticket: %s", r.resp.Status)
		}
		b.sendText(`{"jsonrpc":"2.0","id":1,"method":"ping"}`)
		b.readText()
	})
}
