package mcp

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

const retryData = `{"retry_after_ms":1500}`

func TestCountBatch(t *testing.T) {
	for _, c := range []struct {
		batch           string
		max             int
		elems, requests int
	}{
		{`[]`, 16, 0, 0},
		{`[{"jsonrpc":"2.0","id":1,"method":"ping"}]`, 16, 1, 1},
		{`[{"jsonrpc":"2.0","id":1,"method":"ping"},{"jsonrpc":"2.0","method":"n"},{"jsonrpc":"2.0","id":2,"result":{}},1,[],{"jsonrpc":"2.0","id":"x","method":"ping"}]`, 16, 6, 2},
		{`[{"jsonrpc":"2.0","id":1,"method":"ping"},{"jsonrpc":"2.0","id":2,"method":"ping"},{"jsonrpc":"2.0","id":3,"method":"ping"}]`, 2, 3, 2},
		{`[1,2,3,4,5]`, 0, 5, 0},
	} {
		e, r := CountBatch([]byte(c.batch), c.max)
		if e != c.elems || r != c.requests {
			t.Errorf("CountBatch(%s, %d) = %d, %d; want %d, %d", c.batch, c.max, e, r, c.elems, c.requests)
		}
	}
}

func TestAppendBatchError(t *testing.T) {
	for _, c := range []struct{ batch, want string }{
		{`[{"jsonrpc":"2.0","id":"a","method":"ping"},{"jsonrpc":"2.0","method":"notifications/x"},{"jsonrpc":"2.0","id":1.50,"method":"tools/call","params":{}}]`,
			`[{"jsonrpc":"2.0","id":"a","error":{"code":-31029,"message":"Rate limit exceeded","data":` + retryData + `}},` +
				`{"jsonrpc":"2.0","id":1.50,"error":{"code":-31029,"message":"Rate limit exceeded","data":` + retryData + `}}]`},
		// Responses and notifications need no answer: nothing at all.
		{`[{"jsonrpc":"2.0","method":"n"},{"jsonrpc":"2.0","id":7,"result":{}}]`, ``},
		{`[]`, ``},
		// Invalid elements get what an upstream would have answered.
		{` [ 1 , {"jsonrpc":"2.0","id":"k","method":"ping","id":2}, [{"jsonrpc":"2.0","id":9,"method":"ping"}], {"jsonrpc":"1.0","id":4,"method":"ping"} ] `,
			`[{"jsonrpc":"2.0","id":null,"error":{"code":-32600,"message":"Invalid Request"}},` +
				`{"jsonrpc":"2.0","id":null,"error":{"code":-32600,"message":"Invalid Request"}},` +
				`{"jsonrpc":"2.0","id":null,"error":{"code":-32600,"message":"Invalid Request"}},` +
				`{"jsonrpc":"2.0","id":4,"error":{"code":-32600,"message":"Invalid Request"}}]`},
	} {
		got := AppendBatchError([]byte("prefix"), []byte(c.batch), CodeRateLimited, "Rate limit exceeded", []byte(retryData))
		if string(got) != "prefix"+c.want {
			t.Errorf("batch %s:\n got %s\nwant %s", c.batch, got, "prefix"+c.want)
		}
	}
}

func TestAppendResponseErrors(t *testing.T) {
	data := []byte(`{"reason":"reply_too_large"}`)
	for _, c := range []struct{ msg, want string }{
		{`{"jsonrpc":"2.0","id":"r","result":{"x":1}}`,
			`{"jsonrpc":"2.0","id":"r","error":{"code":-32603,"message":"Internal error","data":{"reason":"reply_too_large"}}}`},
		{`{"jsonrpc":"2.0","id":null,"error":{"code":1,"message":"m"}}`,
			`{"jsonrpc":"2.0","id":null,"error":{"code":-32603,"message":"Internal error","data":{"reason":"reply_too_large"}}}`},
		{`[{"jsonrpc":"2.0","id":1,"result":{}},{"jsonrpc":"2.0","method":"notifications/message"},{"jsonrpc":"2.0","id":2,"method":"sampling/createMessage"},{"jsonrpc":"2.0","id":"2","error":{"code":5,"message":"x"}}]`,
			`[{"jsonrpc":"2.0","id":1,"error":{"code":-32603,"message":"Internal error","data":{"reason":"reply_too_large"}}},` +
				`{"jsonrpc":"2.0","id":"2","error":{"code":-32603,"message":"Internal error","data":{"reason":"reply_too_large"}}}]`},
		// Server requests and notifications answer nothing; neither does garbage.
		{`{"jsonrpc":"2.0","method":"notifications/message","params":{}}`, ``},
		{`{"jsonrpc":"2.0","id":3,"method":"roots/list"}`, ``},
		{`[1,{"jsonrpc":"2.0","method":"n"}]`, ``},
		{`{"jsonrpc":"2.0","id":1,`, ``},
	} {
		got := AppendResponseErrors(nil, []byte(c.msg), CodeInternal, "Internal error", data)
		if string(got) != c.want {
			t.Errorf("msg %s:\n got %s\nwant %s", c.msg, got, c.want)
		}
	}
}

// The builders run on the event loop for every refused batch: no
// allocation when the buffer has room.
func TestBatchErrorAllocs(t *testing.T) {
	batch := []byte(`[{"jsonrpc":"2.0","id":"a\u00e9","method":"ping"},{"jsonrpc":"2.0","method":"n"},{"jsonrpc":"2.0","id":3,"method":"ping"},7]`)
	resp := []byte(`[{"jsonrpc":"2.0","id":1,"result":{}},{"jsonrpc":"2.0","id":2,"result":{}}]`)
	buf := make([]byte, 0, 4096)
	data := []byte(retryData)
	if n := testing.AllocsPerRun(100, func() {
		_, _ = CountBatch(batch, 16)
		buf = AppendBatchError(buf[:0], batch, CodeReconnect, "Reconnect", data)
		buf = AppendResponseErrors(buf[:0], resp, CodeInternal, "Internal error", data)
	}); n != 0 {
		t.Fatalf("%v allocations per batch", n)
	}
}

// FuzzBatchError checks the refusal answer of any batch Scan accepts
// against encoding/json: valid JSON, one element per request or invalid
// element of the batch (CountBatch agrees), each carrying that element's id
// byte for byte; nothing for a batch that needs no answer. And
// AppendResponseErrors answers exactly the responses of any message.
func FuzzBatchError(f *testing.F) {
	for _, s := range []string{
		`[]`, `[1]`, `[[]]`, `[{"jsonrpc":"2.0","id":1,"method":"ping"}]`,
		`[{"jsonrpc":"2.0","id":"x","method":"ping"},{"jsonrpc":"2.0","method":"notifications/initialized"},{"jsonrpc":"2.0","id":3,"method":"ping"}]`,
		`[{"jsonrpc":"2.0","id":1,"result":{}},{"jsonrpc":"2.0","id":"e","error":{"code":1,"message":"m"}}]`,
		` [ {"jsonrpc":"2.0","id":"a\"b\\u00e9","method":"x","params":[1]} , {"jsonrpc":"2.0","id":2,"ID":3,"method":"y"} ] `,
		`{"jsonrpc":"2.0","id":1,"result":{}}`, `{"jsonrpc":"2.0","id":1,"method":"ping"}`,
		`[{"jsonrpc":"2.0","id":-0,"method":"m"},{"jsonrpc":"2.0","id":1e400,"method":"m"},{"jsonrpc":"2.0","id":null,"method":"m"}]`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, msg []byte) {
		env, err := Scan(msg)
		if err != nil {
			if out := AppendResponseErrors(nil, msg, CodeInternal, "Internal error", nil); len(out) != 0 {
				t.Fatalf("answer to a message Scan refuses: %s", out)
			}
			return
		}
		checkErrors(t, msg, env.Kind == KindBatch, KindResponse,
			AppendResponseErrors(nil, msg, CodeInternal, "Internal error", nil), CodeInternal)
		if env.Kind != KindBatch {
			return
		}
		out := AppendBatchError(nil, msg, CodeRateLimited, "Rate limit exceeded", []byte(retryData))
		want := checkErrors(t, msg, true, KindRequest, out, CodeRateLimited)
		elems, requests := CountBatch(msg, 0)
		var all []json.RawMessage
		if json.Unmarshal(msg, &all) != nil || len(all) != elems {
			t.Fatalf("CountBatch found %d elements, encoding/json %d", elems, len(all))
		}
		if requests > want {
			t.Fatalf("CountBatch found %d requests, the answer has %d elements", requests, want)
		}
		if e, _ := CountBatch(msg, 1); elems > 1 && e != 2 {
			t.Fatalf("CountBatch(max 1) = %d elements of %d, want 2", e, elems)
		}
	})
}

// checkErrors checks out, the errors for the elements of msg of kind answer
// (a request's invalid siblings included), and returns how many it holds.
func checkErrors(t *testing.T, msg []byte, batch bool, answer Kind, out []byte, code int) int {
	t.Helper()
	var ids [][]byte // the ids an answer must carry, in order
	var codes []int
	add := func(el []byte) {
		env, err := Scan(el)
		if err == nil && env.Kind == KindBatch {
			err = ErrInvalidRequest
		}
		switch {
		case err != nil && answer == KindRequest:
			ids, codes = append(ids, env.ID), append(codes, CodeInvalidRequest)
		case err == nil && env.Kind == answer:
			ids, codes = append(ids, env.ID), append(codes, code)
		}
	}
	if batch {
		for it := NewBatch(msg); ; {
			el, ok := it.Next()
			if !ok {
				break
			}
			add(el)
		}
	} else {
		add(msg)
	}
	if len(ids) == 0 {
		if len(out) != 0 {
			t.Fatalf("%s: answer %s to nothing that asks for one", msg, out)
		}
		return 0
	}
	if !json.Valid(out) {
		t.Fatalf("%s: answer is not JSON: %s", msg, out)
	}
	var got []json.RawMessage
	if batch {
		if err := json.Unmarshal(out, &got); err != nil {
			t.Fatalf("%s: answer is not an array: %s", msg, out)
		}
	} else {
		got = []json.RawMessage{out}
	}
	if len(got) != len(ids) {
		t.Fatalf("%s: %d answers, want %d: %s", msg, len(got), len(ids), out)
	}
	for i, g := range got {
		var r struct {
			JSONRPC string          `json:"jsonrpc"`
			ID      json.RawMessage `json:"id"`
			Error   struct {
				Code    int    `json:"code"`
				Message string `json:"message"`
			} `json:"error"`
		}
		if err := json.Unmarshal(g, &r); err != nil {
			t.Fatalf("answer %d %s: %v", i, g, err)
		}
		want := ids[i]
		if want == nil {
			want = []byte("null")
		}
		if r.JSONRPC != "2.0" || !bytes.Equal(r.ID, want) || r.Error.Code != codes[i] || strings.TrimSpace(r.Error.Message) == "" {
			t.Fatalf("answer %d %s: want id %s code %d", i, g, want, codes[i])
		}
	}
	return len(got)
}
