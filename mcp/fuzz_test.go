package mcp

import (
	"bytes"
	"encoding/json"
	"testing"
)

const toolsCall = `{"jsonrpc":"2.0","id":42,"method":"tools/call","params":{"name":"echo","arguments":{"message":"hello, gateway"},"_meta":{"progressToken":"p-1"}}}`

// FuzzScan checks Scan against encoding/json: the same validity verdict, and
// for every accepted message the same id, method, params and batch elements.
func FuzzScan(f *testing.F) {
	for _, s := range validSeeds {
		f.Add([]byte(s))
	}
	f.Add([]byte(toolsCall))
	f.Fuzz(func(t *testing.T, msg []byte) {
		env, err := Scan(msg)
		jsonOK := json.Valid(msg)
		if Valid(msg) != jsonOK {
			t.Fatalf("Valid=%v, encoding/json.Valid=%v", !jsonOK, jsonOK)
		}
		if (err == ErrParse) == jsonOK {
			t.Fatalf("Scan err %v, encoding/json.Valid %v", err, jsonOK)
		}
		if err == ErrParse {
			return
		}
		if env.ID != nil && !json.Valid(env.ID) {
			t.Fatalf("id %q is not valid JSON", env.ID)
		}
		if env.Kind == KindBatch {
			var elems []json.RawMessage
			if json.Unmarshal(msg, &elems) != nil {
				t.Fatal("batch that encoding/json cannot decode as an array")
			}
			it := NewBatch(msg)
			for i := 0; ; i++ {
				e, ok := it.Next()
				if !ok {
					if i != len(elems) {
						t.Fatalf("%d elements, encoding/json %d", i, len(elems))
					}
					break
				}
				if i >= len(elems) || !bytes.Equal(e, elems[i]) {
					t.Fatalf("element %d %q", i, e)
				}
			}
			return
		}
		var m map[string]json.RawMessage
		if json.Unmarshal(msg, &m) != nil {
			if err == nil {
				t.Fatal("accepted a message that is not a JSON object")
			}
			return
		}
		if v, ok := Lookup(msg, "id"); ok != (m["id"] != nil) || !bytes.Equal(v, m["id"]) {
			t.Fatalf("Lookup id %q, encoding/json %q", v, m["id"])
		}
		if env.ID != nil && !bytes.Equal(env.ID, m["id"]) {
			t.Fatalf("id %q, encoding/json %q", env.ID, m["id"])
		}
		if err != nil {
			return
		}
		var jid any
		d := json.NewDecoder(bytes.NewReader(m["id"]))
		d.UseNumber()
		if env.ID != nil && d.Decode(&jid) != nil {
			t.Fatalf("id %q does not decode", env.ID)
		}
		if !bytes.Equal(env.Params, m["params"]) {
			t.Fatalf("params %q, encoding/json %q", env.Params, m["params"])
		}
		if env.Kind == KindRequest || env.Kind == KindNotification {
			var method string
			if json.Unmarshal(m["method"], &method) != nil || !env.MethodIs(method) {
				t.Fatalf("method %q, encoding/json %q", env.Method, method)
			}
			if u, ok := AppendUnquote(nil, m["method"]); !ok || string(u) != method {
				t.Fatalf("AppendUnquote %q, encoding/json %q", u, method)
			}
		}
	})
}
