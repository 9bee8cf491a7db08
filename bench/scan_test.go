package bench

import "testing"

func TestScanResponse(t *testing.T) {
	cases := []struct {
		in   string
		want response
		bad  bool
	}{
		{`{"jsonrpc":"2.0","id":42,"result":{"content":[{"type":"text","text":"Echo: }]\"x"}]}}`,
			response{id: 42, idNumeric: true, hasID: true, hasResult: true}, false},
		{` { "result" : {} , "id" : 7 , "jsonrpc":"2.0" } `,
			response{id: 7, idNumeric: true, hasID: true, hasResult: true}, false},
		{`{"jsonrpc":"2.0","id":3,"error":{"message":"slow down","code":-32029,"data":{"retry_after_ms":5}}}`,
			response{id: 3, idNumeric: true, hasID: true, isError: true, errCode: -32029}, false},
		{`{"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"Parse error"}}`,
			response{hasID: true, isError: true, errCode: -32700}, false},
		{`{"jsonrpc":"2.0","id":"7","result":{}}`,
			response{hasID: true, hasResult: true}, false},
		{`{"jsonrpc":"2.0","method":"notifications/message","params":{"id":9}}`,
			response{hasMethod: true}, false},
		{`{"jsonrpc":"2.0","id":1.5,"result":true}`, response{hasID: true, hasResult: true}, false},
		{`{}`, response{}, false},
		{`[{"id":1}]`, response{}, true},
		{`{"id":1,`, response{}, true},
		{`{"id" 1}`, response{}, true},
		{`{"id":1 "x":2}`, response{}, true},
		{`{"result":"unterminated}`, response{}, true},
		{``, response{}, true},
	}
	for _, c := range cases {
		got, err := scanResponse([]byte(c.in))
		if (err != nil) != c.bad {
			t.Errorf("%s: err %v", c.in, err)
			continue
		}
		if !c.bad && got != c.want {
			t.Errorf("%s:\n got %+v\nwant %+v", c.in, got, c.want)
		}
	}
}

func BenchmarkScanResponse(b *testing.B) {
	msg := []byte(`{"jsonrpc":"2.0","id":123456,"result":{"content":[{"type":"text","text":"Echo: xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}]}}`)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := scanResponse(msg); err != nil {
			b.Fatal(err)
		}
	}
}
