package e2e

import (
	"encoding/json"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/mcpgate/gateway/conformance/wsraw"
)

// authedSession is authed, also returning the session id auth_ok gave.
func authedSession(t *testing.T, g *gateway, token string) (*raw, string) {
	t.Helper()
	r := g.raw(t, "/mcp")
	if r.resp.StatusCode != 101 {
		t.Fatalf("upgrade: %s", r.resp.Status)
	}
	r.sendText(`{"type":"auth","token":"` + token + `"}`)
	var ok struct{ Type, Session string }
	if got := r.readText(); json.Unmarshal([]byte(got), &ok) != nil || ok.Type != "auth_ok" || ok.Session == "" {
		t.Fatalf("auth answer %q", got)
	}
	return r, ok.Session
}

type connList struct {
	Connections []struct {
		Session, State, Subject, Route, Remote string
		AgeMS                                  int64  `json:"age_ms"`
		MessagesIn                             uint32 `json:"messages_in"`
	}
	Complete bool
}

func adminCall(t *testing.T, g *gateway, method, path, token string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, "http://"+g.Admin+path, nil)
	must(t, err)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	must(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	must(t, err)
	return resp, body
}

// TestAdminConnections (SPEC 12): GET /admin/connections lists the open
// connections (subject, route, remote, age, messages) and filters by
// subject; DELETE /admin/connections/{session} closes one with 1008
// "Closed by operator", which reaches the client on every transport;
// the others stay. Without the admin token: 401.
func TestAdminConnections(t *testing.T) {
	eachTransport(t, func(t *testing.T, tr wsraw.Transport) {
		g := startGatewayOn(t, tr)
		alice, aliceID := authedSession(t, g, aliceToken)
		bob, bobID := authedSession(t, g, bobToken)
		alice.sendText(`{"jsonrpc":"2.0","id":1,"method":"ping"}`)
		alice.readText()

		if resp, _ := adminCall(t, g, "GET", "/admin/connections", ""); resp.StatusCode != 401 {
			t.Fatalf("without the admin token: %s", resp.Status)
		}
		resp, body := adminCall(t, g, "GET", "/admin/connections", adminToken)
		var all connList
		if resp.StatusCode != 200 || json.Unmarshal(body, &all) != nil || !all.Complete {
			t.Fatalf("list: %s %s", resp.Status, body)
		}
		seen := map[string]string{}
		for _, c := range all.Connections {
			seen[c.Session] = c.Subject
			if c.Session == aliceID && (c.Route != "/mcp" || c.State != "open" || c.MessagesIn != 1 || c.Remote == "" || c.AgeMS < 0) {
				t.Errorf("alice listed as %+v", c)
			}
		}
		if seen[aliceID] != "alice" || seen[bobID] != "bob" {
			t.Fatalf("list %s lacks alice %s or bob %s", body, aliceID, bobID)
		}
		_, body = adminCall(t, g, "GET", "/admin/connections?subject=bob", adminToken)
		var bobs connList
		if json.Unmarshal(body, &bobs) != nil || len(bobs.Connections) != 1 || bobs.Connections[0].Session != bobID {
			t.Fatalf("?subject=bob: %s", body)
		}

		if resp, _ := adminCall(t, g, "DELETE", "/admin/connections/"+bobID, ""); resp.StatusCode != 401 {
			t.Fatalf("DELETE without the admin token: %s", resp.Status)
		}
		if resp, body := adminCall(t, g, "DELETE", "/admin/connections/"+bobID, adminToken); resp.StatusCode != 200 {
			t.Fatalf("DELETE: %s %s", resp.Status, body)
		}
		bob.expectClose(1008, "Closed by operator", 5*time.Second)
		alice.sendText(`{"jsonrpc":"2.0","id":2,"method":"ping"}`)
		if got := alice.readText(); got != `{"jsonrpc":"2.0","id":2,"result":{}}` {
			t.Fatalf("alice after bob's close: %s", got)
		}
		deadline := time.Now().Add(5 * time.Second)
		for {
			resp, _ := adminCall(t, g, "DELETE", "/admin/connections/"+bobID, adminToken)
			if resp.StatusCode == 404 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("DELETE of a closed connection: %s, want 404", resp.Status)
			}
			time.Sleep(50 * time.Millisecond)
		}
		if resp, _ := adminCall(t, g, "DELETE", "/admin/connections/nothex", adminToken); resp.StatusCode != 400 {
			t.Fatalf("DELETE of a malformed id: %s, want 400", resp.Status)
		}
	})
}
