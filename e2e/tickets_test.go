package e2e

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

func postTicket(t *testing.T, g *gateway, token, origin string) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequest("POST", "http://"+g.Addr+"/tickets", nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if origin != "" {
		req.Header.Set("Origin", origin)
	}
	resp, err := http.DefaultClient.Do(req)
	must(t, err)
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp, string(body)
}

// SPEC 4.3: single-use tickets for browsers (single node: in memory).
func TestTickets(t *testing.T) {
	g := startGateway(t)
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
	r := dialRaw(t, g.Addr, "/mcp?ticket="+tk.Ticket, "Origin: https://app.example.com")
	if r.resp.StatusCode != 101 {
		t.Fatalf("ticket upgrade: %s", r.resp.Status)
	}
	r.sendText(`{"jsonrpc":"2.0","id":"t","method":"ping"}`)
	if got := r.readText(); got != `{"jsonrpc":"2.0","id":"t","result":{}}` {
		t.Fatalf("got %s", got)
	}
	// Single use.
	if r2 := dialRaw(t, g.Addr, "/mcp?ticket="+tk.Ticket, "Origin: https://app.example.com"); r2.resp.StatusCode != 401 {
		t.Fatalf("second use: %s", r2.resp.Status)
	}
	if r3 := dialRaw(t, g.Addr, "/mcp?ticket=bogus"); r3.resp.StatusCode != 401 {
		t.Fatalf("bogus ticket: %s", r3.resp.Status)
	}
	// An unlisted origin is refused before the ticket is even looked at.
	_, body = postTicket(t, g, aliceToken, "")
	must(t, json.Unmarshal([]byte(body), &tk))
	if r4 := dialRaw(t, g.Addr, "/mcp?ticket="+tk.Ticket, "Origin: https://evil.example.net"); r4.resp.StatusCode != 403 {
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
	req, _ := http.NewRequest("OPTIONS", "http://"+g.Addr+"/tickets", nil)
	req.Header.Set("Origin", "https://app.example.com")
	req.Header.Set("Access-Control-Request-Method", "POST")
	pre, err := http.DefaultClient.Do(req)
	must(t, err)
	pre.Body.Close()
	if pre.StatusCode != 204 || !strings.Contains(pre.Header.Get("Access-Control-Allow-Headers"), "Authorization") {
		t.Fatalf("preflight: %s %v", pre.Status, pre.Header)
	}
	if strings.Contains(g.Logs(), tk.Ticket) || strings.Contains(g.Logs(), "ticket=") {
		t.Fatal("a ticket reached the log")
	}
}

func TestTicketExpires(t *testing.T) {
	g := startGateway(t, with("auth", `
  timeout: 1s
  static_tokens_file: tokens.txt
  tickets: {ttl: 1s}`))
	_, body := postTicket(t, g, aliceToken, "")
	var tk struct{ Ticket string }
	must(t, json.Unmarshal([]byte(body), &tk))
	time.Sleep(1500 * time.Millisecond)
	if r := dialRaw(t, g.Addr, "/mcp?ticket="+tk.Ticket); r.resp.StatusCode != 401 {
		t.Fatalf("expired ticket: %s", r.resp.Status)
	}
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
	g := startGateway(t)
	a1 := dialAuthed(t, g.Addr, aliceToken)
	a2 := dialRaw(t, g.Addr, "/mcp", "Authorization: Bearer "+aliceToken)
	b := dialAuthed(t, g.Addr, bobToken)
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
	r := dialRaw(t, g.Addr, "/mcp")
	r.sendText(`{"type":"auth","token":"` + aliceToken + `"}`)
	r.expectClose(1008, "Invalid credentials", 3*time.Second)
	if r := dialRaw(t, g.Addr, "/mcp", "Authorization: Bearer "+aliceToken); r.resp.StatusCode != 401 {
		t.Fatalf("revoked bearer: %s", r.resp.Status)
	}
	b.sendText(`{"jsonrpc":"2.0","id":1,"method":"ping"}`)
	b.readText()
}
