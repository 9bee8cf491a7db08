// Command tlsref is the reference point for the gateway's TLS figures: Go's
// net/http + crypto/tls serving WebSocket (coder/websocket) the usual way,
// with a goroutine per connection. It speaks just enough of the gateway's
// protocol for `gateway bench`: first-message auth (any token), then one
// JSON-RPC result per request, with the id copied.
//
//	go run ./bench/tlsref -listen 127.0.0.1:9443 -cert server.crt -key server.key
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net/http"
	"os"

	"github.com/coder/websocket"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:9443", "address")
	cert := flag.String("cert", "", "certificate file")
	key := flag.String("key", "", "key file")
	flag.Parse()
	http.HandleFunc("/mcp", func(w http.ResponseWriter, r *http.Request) {
		c, err := websocket.Accept(w, r, &websocket.AcceptOptions{Subprotocols: []string{"mcp"}})
		if err != nil {
			return
		}
		defer c.CloseNow()
		ctx := context.Background()
		first := true
		for {
			_, data, err := c.Read(ctx)
			if err != nil {
				return
			}
			if first {
				first = false
				_ = c.Write(ctx, websocket.MessageText, []byte(`{"type":"auth_ok","session":"ref"}`))
				continue
			}
			var req struct {
				ID json.RawMessage `json:"id"`
			}
			if json.Unmarshal(data, &req) != nil || req.ID == nil {
				continue
			}
			reply := fmt.Sprintf(`{"jsonrpc":"2.0","id":%s,"result":{"content":[{"type":"text","text":"Echo: ref"}]}}`, req.ID)
			if c.Write(ctx, websocket.MessageText, []byte(reply)) != nil {
				return
			}
		}
	})
	fmt.Fprintf(os.Stderr, "tlsref listening on %s\n", *listen)
	if err := http.ListenAndServeTLS(*listen, *cert, *key, nil); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
