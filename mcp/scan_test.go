package mcp

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

func TestScan(t *testing.T) {
	tests := []struct {
		msg    string
		err    error
		kind   Kind
		id     string // raw; "<nil>" for absent
		method string
		params string
	}{
		{`{"jsonrpc":"2.0","id":1,"method":"ping"}`, nil, KindRequest, `1`, "ping", "<nil>"},
		{` {"jsonrpc" : "2.0" , "id" : "a\"b\u0041" , "method" : "tools/call" , "params" : {"x":[1,{"y":"}"}]} } `,
			nil, KindRequest, `"a\"b\u0041"`, "tools/call", `{"x":[1,{"y":"}"}]}`},
		{`{"jsonrpc":"2.0","id":1.50,"method":"m","params":[]}`, nil, KindRequest, `1.50`, "m", `[]`},
		{`{"jsonrpc":"2.0","id":-123456789012345678901234567890,"method":"m"}`, nil, KindRequest, `-123456789012345678901234567890`, "m", "<nil>"},
		{`{"method":"notifications/initialized","jsonrpc":"2.0"}`, nil, KindNotification, "<nil>", "notifications/initialized", "<nil>"},
		{`{"jsonrpc":"2.0","id":7,"result":{}}`, nil, KindResponse, `7`, "", "<nil>"},
		{`{"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"x"}}`, nil, KindResponse, `null`, "", "<nil>"},
		{`[{"jsonrpc":"2.0","id":1,"method":"ping"}]`, nil, KindBatch, "<nil>", "", "<nil>"},
		{` [] `, nil, KindBatch, "<nil>", "", "<nil>"},
		// escaped key names are the same keys
		{`{"\u006asonrpc":"2.0","\u0069d":2,"method":"p"}`, nil, KindRequest, `2`, "p", "<nil>"},
		// unknown members are ignored, at any depth
		{`{"jsonrpc":"2.0","id":3,"method":"m","idx":4,"extra":{"id":5,"ID":6}}`, nil, KindRequest, `3`, "m", "<nil>"},

		// parse errors
		{``, ErrParse, 0, "<nil>", "", "<nil>"},
		{`   `, ErrParse, 0, "<nil>", "", "<nil>"},
		{`{"jsonrpc":"2.0","id":1,"method":"ping"`, ErrParse, 0, "<nil>", "", "<nil>"},
		{`{"jsonrpc":"2.0","id":1,"method":"ping"}}`, ErrParse, 0, "<nil>", "", "<nil>"},
		{`{"jsonrpc":"2.0","id":1,"method":"ping"} x`, ErrParse, 0, "<nil>", "", "<nil>"},
		{`{"jsonrpc":"2.0","id":01,"method":"ping"}`, ErrParse, 0, "<nil>", "", "<nil>"},
		{`{"jsonrpc":"2.0","id":1,"method":"pi` + "\n" + `ng"}`, ErrParse, 0, "<nil>", "", "<nil>"},
		{`{"jsonrpc":"2.0","id":1,"method":"ping",}`, ErrParse, 0, "<nil>", "", "<nil>"},
		{`[1,]`, ErrParse, 0, "<nil>", "", "<nil>"},
		{`garbage`, ErrParse, 0, "<nil>", "", "<nil>"},

		// invalid requests (the id is kept when it is a string or number)
		{`{}`, ErrInvalidRequest, 0, "<nil>", "", "<nil>"},
		{`1`, ErrInvalidRequest, 0, "<nil>", "", "<nil>"},
		{`"x"`, ErrInvalidRequest, 0, "<nil>", "", "<nil>"},
		{`{"id":1,"method":"ping"}`, ErrInvalidRequest, 0, `1`, "", "<nil>"},
		{`{"jsonrpc":"1.0","id":1,"method":"ping"}`, ErrInvalidRequest, 0, `1`, "", "<nil>"},
		{`{"jsonrpc":2.0,"id":1,"method":"ping"}`, ErrInvalidRequest, 0, `1`, "", "<nil>"},
		{`{"jsonrpc":"2.0","id":null,"method":"ping"}`, ErrInvalidRequest, 0, "<nil>", "", "<nil>"},
		{`{"jsonrpc":"2.0","id":true,"method":"ping"}`, ErrInvalidRequest, 0, "<nil>", "", "<nil>"},
		{`{"jsonrpc":"2.0","id":{},"method":"ping"}`, ErrInvalidRequest, 0, "<nil>", "", "<nil>"},
		{`{"jsonrpc":"2.0","id":1,"method":5}`, ErrInvalidRequest, 0, `1`, "", "<nil>"},
		{`{"jsonrpc":"2.0","id":1,"method":"m","params":"x"}`, ErrInvalidRequest, 0, `1`, "", "<nil>"},
		{`{"jsonrpc":"2.0","id":1,"method":"m","id":2}`, ErrInvalidRequest, 0, "<nil>", "", "<nil>"},
		{`{"jsonrpc":"2.0","id":1,"method":"m","\u0069d":2}`, ErrInvalidRequest, 0, "<nil>", "", "<nil>"},
		// keys that case-fold to envelope keys are ambiguous
		{`{"jsonrpc":"2.0","id":3,"method":"m","ID":4}`, ErrInvalidRequest, 0, "<nil>", "", "<nil>"},
		{`{"jsonrpc":"2.0","Id":3,"method":"m"}`, ErrInvalidRequest, 0, "<nil>", "", "<nil>"},
		{`{"jsonrpc":"2.0","id":3,"Method":"m"}`, ErrInvalidRequest, 0, "<nil>", "", "<nil>"},
		{`{"j\u017fonrpc":"2.0","jsonrpc":"2.0","id":3,"method":"m"}`, ErrInvalidRequest, 0, "<nil>", "", "<nil>"},
		{"{\"jsonrpc\":\"2.0\",\"id\":3,\"method\":\"m\",\"PARAM\u017f\":{}}", ErrInvalidRequest, 0, "<nil>", "", "<nil>"},
		{`{"jsonrpc":"2.0","id":1}`, ErrInvalidRequest, 0, `1`, "", "<nil>"},
		{`{"jsonrpc":"2.0","id":1,"result":1,"error":{}}`, ErrInvalidRequest, 0, `1`, "", "<nil>"},
		{`{"jsonrpc":"2.0","id":1,"error":5}`, ErrInvalidRequest, 0, `1`, "", "<nil>"},
		{`{"jsonrpc":"2.0","result":1}`, ErrInvalidRequest, 0, "<nil>", "", "<nil>"},
		{`{"jsonrpc":"2.0","id":1,"method":"m","result":1}`, ErrInvalidRequest, 0, `1`, "", "<nil>"},
	}
	for _, tt := range tests {
		env, err := Scan([]byte(tt.msg))
		if !errors.Is(err, tt.err) {
			t.Errorf("Scan(%s): err %v, want %v", tt.msg, err, tt.err)
			continue
		}
		if got := rawOrNil(env.ID); got != tt.id {
			t.Errorf("Scan(%s): id %s, want %s", tt.msg, got, tt.id)
		}
		if err != nil {
			continue
		}
		if env.Kind != tt.kind {
			t.Errorf("Scan(%s): kind %v, want %v", tt.msg, env.Kind, tt.kind)
		}
		if string(env.Method) != tt.method {
			t.Errorf("Scan(%s): method %q, want %q", tt.msg, env.Method, tt.method)
		}
		if got := rawOrNil(env.Params); got != tt.params {
			t.Errorf("Scan(%s): params %s, want %s", tt.msg, got, tt.params)
		}
	}
}

func rawOrNil(b []byte) string {
	if b == nil {
		return "<nil>"
	}
	return string(b)
}

func TestScanEscapedMethod(t *testing.T) {
	env, err := Scan([]byte(`{"jsonrpc":"2.0","id":1,"method":"tools\/c\u0061ll"}`))
	if err != nil {
		t.Fatal(err)
	}
	if !env.MethodEscaped || string(env.Method) != `"tools\/c\u0061ll"` {
		t.Fatalf("method %s escaped %v", env.Method, env.MethodEscaped)
	}
	if !env.MethodIs("tools/call") || env.MethodIs("tools/cal") {
		t.Fatal("MethodIs")
	}
}

func TestScanDeepNesting(t *testing.T) {
	deep := `{"jsonrpc":"2.0","id":1,"method":"m","params":[` + strings.Repeat("[", 9990) + strings.Repeat("]", 9990) + `]}`
	if _, err := Scan([]byte(deep)); err != nil {
		t.Fatalf("depth 9992: %v", err)
	}
	tooDeep := strings.Repeat("[", 10001) + strings.Repeat("]", 10001)
	if _, err := Scan([]byte(tooDeep)); err != ErrParse {
		t.Fatalf("depth 10001: %v", err)
	}
	if json.Valid([]byte(tooDeep)) {
		t.Fatal("encoding/json accepts depth 10001; keep maxDepth in line")
	}
}

func TestValidAgreesWithEncodingJSON(t *testing.T) {
	for _, s := range validSeeds {
		if got, want := Valid([]byte(s)), json.Valid([]byte(s)); got != want {
			t.Errorf("Valid(%q) = %v, encoding/json says %v", s, got, want)
		}
	}
}

var validSeeds = []string{
	``, ` `, `0`, `-0`, `-`, `01`, `1.`, `1.0`, `1e`, `1e+`, `1E-7`, `1.5e300`, `-1.25e-3x`,
	`true`, `tru`, `truex`, `null`, `nul`, `false`, `"`, `""`, `"\"`, `"\u12"`, `"\u12g4"`, `"\uD800"`,
	`"\x"`, "\"\x01\"", "\"\x7f\"", "\"\xff\"", `"\/\b\f\n\r\t"`,
	`[]`, `[`, `]`, `[,]`, `[1,]`, `[1 2]`, `[[[]]]`, `[[[]]`, `{}`, `{`, `{"a"}`, `{"a":}`, `{"a":1,}`,
	`{"a":1 "b":2}`, `{"a":[1,{"b":null}],"c":"}"}`, `{1:2}`, ` {"a" : 1 } `, `{"a":1}}`, `[1]]`,
	"\t[\r\n1\n]\t", `{"a":{"b":{"c":[true,false,null]}}}`,
}

func TestBatch(t *testing.T) {
	msg := []byte(` [ {"a":"],"} , 1 ,"x", [2,3] ,{"jsonrpc":"2.0"}] `)
	if env, err := Scan(msg); err != nil || env.Kind != KindBatch {
		t.Fatalf("Scan: %v %v", env.Kind, err)
	}
	var got []string
	for it := NewBatch(msg); ; {
		e, ok := it.Next()
		if !ok {
			break
		}
		got = append(got, string(e))
	}
	want := []string{`{"a":"],"}`, `1`, `"x"`, `[2,3]`, `{"jsonrpc":"2.0"}`}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("got %q", got)
	}
	it := NewBatch([]byte(`[]`))
	if _, ok := it.Next(); ok {
		t.Fatal("empty batch has an element")
	}
	it = NewBatch([]byte(`{}`)) // not an array: no elements, no panic
	if _, ok := it.Next(); ok {
		t.Fatal("object walked as batch")
	}
}

func TestLookup(t *testing.T) {
	obj := []byte(` { "name" : "echo", "arguments":{"message":"hi","n":{"message":1}}, "a\u0062":[1], "name":"last" } `)
	for _, tt := range []struct{ key, want string }{
		{"name", `"last"`},
		{"arguments", `{"message":"hi","n":{"message":1}}`},
		{"ab", `[1]`},
		{"message", "<nil>"},
	} {
		v, ok := Lookup(obj, tt.key)
		if got := rawOrNil(v); got != tt.want || ok != (tt.want != "<nil>") {
			t.Errorf("Lookup(%q) = %s, %v", tt.key, got, ok)
		}
	}
	for _, bad := range []string{``, `[]`, `1`, `{"a"`, `{"a":`} {
		if _, ok := Lookup([]byte(bad), "a"); ok {
			t.Errorf("Lookup(%q) found a", bad)
		}
	}
}

func TestScanAllocs(t *testing.T) {
	msg := []byte(toolsCall)
	if n := testing.AllocsPerRun(100, func() { _, _ = Scan(msg) }); n != 0 {
		t.Fatalf("Scan allocates %v times", n)
	}
	for _, m := range []string{
		`{"jsonrpc":"2.0","id":1,"method":"m","ID":2,"\u0069d":3,"extra":{}}`,
		`{"jsonrpc":"2.0","id":1,"method":"tools\/call","params":{}}`,
	} {
		msg := []byte(m)
		if n := testing.AllocsPerRun(100, func() { _, _ = Scan(msg) }); n != 0 {
			t.Fatalf("Scan(%s) allocates %v times", m, n)
		}
	}
	deep := []byte(strings.Repeat("[", 128) + strings.Repeat("]", 128))
	if n := testing.AllocsPerRun(100, func() { _ = Valid(deep) }); n != 0 {
		t.Fatalf("Valid at depth 128 allocates %v times", n)
	}
}

// TestSkipSafeEveryOffset puts each byte value at each offset of a string
// that the 8-byte scan covers, after neighbours that provoke borrows.
func TestSkipSafeEveryOffset(t *testing.T) {
	for _, fill := range []byte{'a', 0x80, 0xff, 0x20, 0x21, 0x5d} {
		for pos := 0; pos < 20; pos++ {
			for c := 0; c < 256; c++ {
				s := make([]byte, 0, 32)
				s = append(s, '"')
				for range pos {
					s = append(s, fill)
				}
				s = append(s, byte(c))
				s = append(s, `\n"`...)
				if got, want := Valid(s), json.Valid(s); got != want {
					t.Fatalf("Valid(%q) = %v, encoding/json %v", s, got, want)
				}
			}
		}
	}
}

func TestMembers(t *testing.T) {
	obj := []byte(`{"name":"echo","_meta":{"name":1},"arguments":{},"name":"get-sum"}`)
	keys := []string{"_meta", "name", "arguments", "absent"}
	vals := make([][]byte, 4)
	vals[3] = []byte("stale")
	if !Members(obj, keys, vals) {
		t.Fatal("not an object")
	}
	want := []string{`{"name":1}`, `"get-sum"`, `{}`, "<nil>"}
	for i := range keys {
		if got := rawOrNil(vals[i]); got != want[i] {
			t.Errorf("%s = %s, want %s", keys[i], got, want[i])
		}
	}
	if Members([]byte(`[1]`), keys, vals) || vals[0] != nil {
		t.Error("array taken as object")
	}
}
