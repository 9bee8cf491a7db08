// Command tlsref is the reference point for the gateway's TLS figures: Go's
// net/http + crypto/tls serving WebSocket (coder/websocket) the usual way,
// with a goroutine per connection. It speaks just enough of the gateway's
// protocol for `gateway bench`: first-message auth (any token), an MCP
// initialize answer, and tools/call echo answered like the gateway's builtin
// echo ("Echo: " + message); any other request gets an empty result with
// its id. Notifications get nothing.
//
// With -plain it serves the same handler over plain HTTP (ws://), so that
// the cost of TLS is the difference between the two modes, handler alike.
//
//	go run ./bench/tlsref -listen 127.0.0.1:9443 -cert server.crt -key server.key
//	go run ./bench/tlsref -listen 127.0.0.1:9080 -plain
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"

	"github.com/coder/websocket"
)

// initResult is the initialize result: the fields an MCP client expects.
const initResult = `{"protocolVersion":"2025-06-18","capabilities":{"tools":{}},"serverInfo":{"name":"tlsref","version":"1"}}`

type request struct {
	ID     json.RawMessage `json:"id"`
	Method string          `json:"method"`
	Params struct {
		Name      string `json:"name"`
		Arguments struct {
			Message string `json:"message"`
		} `json:"arguments"`
	} `json:"params"`
}

type textContent struct {
	Type string `json:"type"`
	Text string `json:"text"`
}

type response struct {
	JSONRPC string          `json:"jsonrpc"`
	ID      json.RawMessage `json:"id"`
	Result  any             `json:"result"`
}

// answer returns the reply to one client message, or nil for none.
func answer(data []byte) []byte {
	var req request
	if json.Unmarshal(data, &req) != nil || req.ID == nil {
		return nil // not JSON-RPC, or a notification
	}
	resp := response{JSONRPC: "2.0", ID: req.ID}
	switch {
	case req.Method == "initialize":
		resp.Result = json.RawMessage(initResult)
	case req.Method == "tools/call" && req.Params.Name == "echo":
		resp.Result = struct {
			Content []textContent `json:"content"`
		}{[]textContent{{Type: "text", Text: "Echo: " + req.Params.Arguments.Message}}}
	default:
		resp.Result = struct{}{}
	}
	out, err := json.Marshal(resp)
	if err != nil {
		return nil
	}
	return out
}

func handle(w http.ResponseWriter, r *http.Request) {
	c, err := websocket.Accept(w, r, &websocket.AcceptOptions{Subprotocols: []string{"mcp"}})
	if err != nil {
		return
	}
	defer c.CloseNow()
	c.SetReadLimit(1 << 20)
	ctx := context.Background()
	first := true
	for {
		_, data, err := c.Read(ctx)
		if err != nil {
			return
		}
		if first {
			first = false
			if c.Write(ctx, websocket.MessageText, []byte(`{"type":"auth_ok","session":"ref"}`)) != nil {
				return
			}
			continue
		}
		if reply := answer(data); reply != nil {
			if c.Write(ctx, websocket.MessageText, reply) != nil {
				return
			}
		}
	}
}

func main() {
	listen := flag.String("listen", "127.0.0.1:9443", "address")
	cert := flag.String("cert", "", "certificate file (TLS)")
	key := flag.String("key", "", "key file (TLS)")
	plain := flag.Bool("plain", false, "serve plain HTTP (ws://) instead of TLS, same handler")
	flag.Parse()
	if !*plain && (*cert == "" || *key == "") {
		fmt.Fprintln(os.Stderr, "tlsref: -cert and -key are required (or -plain)")
		os.Exit(2)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/mcp", handle)
	srv := &http.Server{Handler: mux}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	scheme := "wss"
	if *plain {
		scheme = "ws"
	}
	fmt.Fprintf(os.Stderr, "tlsref listening on %s (%s://)\n", ln.Addr(), scheme)
	if *plain {
		err = srv.Serve(ln)
	} else {
		err = srv.ServeTLS(ln, *cert, *key)
	}
	fmt.Fprintln(os.Stderr, err)
	os.Exit(1)
}
