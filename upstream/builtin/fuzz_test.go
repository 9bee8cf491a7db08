package builtin

import (
	"encoding/json"
	"testing"
	"unicode/utf8"

	"github.com/mcpgate/gateway/mcp"
)

// FuzzHandle checks that Handle never panics and answers with nothing or
// with valid JSON-RPC responses (valid UTF-8 too when the input was).
// The seed corpus is in testdata/fuzz/FuzzHandle.
func FuzzHandle(f *testing.F) {
	f.Add([]byte(echoRequest))
	f.Add([]byte(sumRequest))
	s := &Server{}
	f.Fuzz(func(t *testing.T, msg []byte) {
		out := s.Handle(nil, msg)
		if len(out) == 0 {
			return
		}
		if !json.Valid(out) {
			t.Fatalf("reply is not valid JSON: %s", out)
		}
		if utf8.Valid(msg) && !utf8.Valid(out) {
			t.Fatalf("reply is not valid UTF-8: %q", out)
		}
		env, err := mcp.Scan(out)
		if err != nil {
			t.Fatalf("reply does not scan: %v: %s", err, out)
		}
		switch env.Kind {
		case mcp.KindResponse:
			if in, err := mcp.Scan(msg); err == nil && in.Kind == mcp.KindRequest && string(in.ID) != string(env.ID) {
				t.Fatalf("reply id %s, request id %s", env.ID, in.ID)
			}
		case mcp.KindBatch:
			it := mcp.NewBatch(out)
			n := 0
			for {
				e, ok := it.Next()
				if !ok {
					break
				}
				n++
				if r, err := mcp.Scan(e); err != nil || r.Kind != mcp.KindResponse {
					t.Fatalf("batch reply element %s: %v", e, err)
				}
			}
			if n == 0 {
				t.Fatalf("empty batch reply %s", out)
			}
		default:
			t.Fatalf("reply kind %v: %s", env.Kind, out)
		}
	})
}
