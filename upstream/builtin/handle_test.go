package builtin

import (
	"encoding/json"
	"math"
	"strings"
	"testing"

	"github.com/mcpgate/gateway/mcp"
)

const (
	initResult = `"capabilities":{"tools":{}},"serverInfo":{"name":"mcp-gateway-builtin","version":"0.1.0"}`
	meta2026   = `"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}`
)

func TestHandle(t *testing.T) {
	s := &Server{name: "demo"}
	tests := []struct{ name, msg, want string }{
		// session revisions
		{"initialize 2025-06-18", `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"c","version":"1"}}}`,
			`{"jsonrpc":"2.0","id":1,"result":{"protocolVersion":"2025-06-18",` + initResult + `}}`},
		{"initialize 2024-11-05", `{"jsonrpc":"2.0","id":"i","method":"initialize","params":{"protocolVersion":"2024-11-05"}}`,
			`{"jsonrpc":"2.0","id":"i","result":{"protocolVersion":"2024-11-05",` + initResult + `}}`},
		{"initialize 2025-03-26", `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-03-26"}}`,
			`{"jsonrpc":"2.0","id":1,"result":{"protocolVersion":"2025-03-26",` + initResult + `}}`},
		{"initialize unknown version", `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"1999-01-01"}}`,
			`{"jsonrpc":"2.0","id":1,"result":{"protocolVersion":"2025-11-25",` + initResult + `}}`},
		{"initialize stateless version", `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2026-07-28"}}`,
			`{"jsonrpc":"2.0","id":1,"result":{"protocolVersion":"2025-11-25",` + initResult + `}}`},
		{"initialize no version", `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{}}`,
			`{"jsonrpc":"2.0","id":1,"error":{"code":-32602,"message":"Invalid params: protocolVersion must be a string"}}`},
		{"initialized", `{"jsonrpc":"2.0","method":"notifications/initialized"}`, ``},
		{"other notification", `{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":1}}`, ``},
		{"unknown notification", `{"jsonrpc":"2.0","method":"nope"}`, ``},
		{"client response", `{"jsonrpc":"2.0","id":5,"result":{}}`, ``},
		{"ping", `{"jsonrpc":"2.0","id":2,"method":"ping"}`, `{"jsonrpc":"2.0","id":2,"result":{}}`},
		{"tools/list", `{"jsonrpc":"2.0","id":3,"method":"tools/list"}`, `{"jsonrpc":"2.0","id":3,"result":{` + toolsListBody + `}}`},
		{"echo", `{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"echo","arguments":{"message":"hi"}}}`,
			`{"jsonrpc":"2.0","id":4,"result":{"content":[{"type":"text","text":"Echo: hi"}]}}`},
		{"echo escapes kept", `{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"echo","arguments":{"message":"a\"b\\c\n\u00e9 日本"}}}`,
			`{"jsonrpc":"2.0","id":4,"result":{"content":[{"type":"text","text":"Echo: a\"b\\c\n\u00e9 日本"}]}}`},
		{"echo invalid utf8", "{\"jsonrpc\":\"2.0\",\"id\":4,\"method\":\"tools/call\",\"params\":{\"name\":\"echo\",\"arguments\":{\"message\":\"x\xffy\"}}}",
			`{"jsonrpc":"2.0","id":4,"result":{"content":[{"type":"text","text":"Echo: x\ufffdy"}]}}`},
		{"echo escaped tool name", `{"jsonrpc":"2.0","id":4,"method":"tools\/call","params":{"name":"\u0065cho","arguments":{"message":""}}}`,
			`{"jsonrpc":"2.0","id":4,"result":{"content":[{"type":"text","text":"Echo: "}]}}`},
		{"echo last duplicate wins", `{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"echo","arguments":{"message":"a","message":"b"}}}`,
			`{"jsonrpc":"2.0","id":4,"result":{"content":[{"type":"text","text":"Echo: b"}]}}`},
		{"get-sum", `{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"get-sum","arguments":{"a":1.5,"b":2}}}`,
			`{"jsonrpc":"2.0","id":5,"result":{"content":[{"type":"text","text":"The sum of 1.5 and 2 is 3.5."}]}}`},
		{"get-sum js formatting", `{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"get-sum","arguments":{"a":0.1,"b":0.2}}}`,
			`{"jsonrpc":"2.0","id":5,"result":{"content":[{"type":"text","text":"The sum of 0.1 and 0.2 is 0.30000000000000004."}]}}`},
		{"get-sum exponents", `{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"get-sum","arguments":{"a":1e21,"b":1E-7}}}`,
			`{"jsonrpc":"2.0","id":5,"result":{"content":[{"type":"text","text":"The sum of 1e+21 and 1e-7 is 1e+21."}]}}`},
		{"get-sum big", `{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"get-sum","arguments":{"a":123456789012345680000,"b":-0}}}`,
			`{"jsonrpc":"2.0","id":5,"result":{"content":[{"type":"text","text":"The sum of 123456789012345680000 and 0 is 123456789012345680000."}]}}`},
		{"get-sum overflowing sum", `{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"get-sum","arguments":{"a":1e308,"b":1e308}}}`,
			`{"jsonrpc":"2.0","id":5,"result":{"content":[{"type":"text","text":"The sum of 1e+308 and 1e+308 is Infinity."}]}}`},
		{"get-sum underflow", `{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"get-sum","arguments":{"a":1e-400,"b":1}}}`,
			`{"jsonrpc":"2.0","id":5,"result":{"content":[{"type":"text","text":"The sum of 0 and 1 is 1."}]}}`},
		{"get-sum string", `{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"get-sum","arguments":{"a":"1","b":2}}}`,
			`{"jsonrpc":"2.0","id":5,"error":{"code":-32602,"message":"Invalid arguments for tool get-sum: a and b must be numbers"}}`},
		{"get-sum infinite", `{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"get-sum","arguments":{"a":1e400,"b":2}}}`,
			`{"jsonrpc":"2.0","id":5,"error":{"code":-32602,"message":"Invalid arguments for tool get-sum: a and b must be numbers"}}`},
		{"get-sum missing", `{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"get-sum","arguments":{"a":1}}}`,
			`{"jsonrpc":"2.0","id":5,"error":{"code":-32602,"message":"Invalid arguments for tool get-sum: a and b must be numbers"}}`},
		{"echo no message", `{"jsonrpc":"2.0","id":6,"method":"tools/call","params":{"name":"echo","arguments":{}}}`,
			`{"jsonrpc":"2.0","id":6,"error":{"code":-32602,"message":"Invalid arguments for tool echo: message must be a string"}}`},
		{"echo no arguments", `{"jsonrpc":"2.0","id":6,"method":"tools/call","params":{"name":"echo"}}`,
			`{"jsonrpc":"2.0","id":6,"error":{"code":-32602,"message":"Invalid arguments for tool echo: message must be a string"}}`},
		{"echo number message", `{"jsonrpc":"2.0","id":6,"method":"tools/call","params":{"name":"echo","arguments":{"message":1}}}`,
			`{"jsonrpc":"2.0","id":6,"error":{"code":-32602,"message":"Invalid arguments for tool echo: message must be a string"}}`},
		{"arguments not object", `{"jsonrpc":"2.0","id":6,"method":"tools/call","params":{"name":"echo","arguments":[1]}}`,
			`{"jsonrpc":"2.0","id":6,"error":{"code":-32602,"message":"Invalid params: arguments must be an object"}}`},
		{"unknown tool", `{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"no\"pe","arguments":{}}}`,
			`{"jsonrpc":"2.0","id":7,"error":{"code":-32602,"message":"Tool no\"pe not found"}}`},
		{"tools/call no params", `{"jsonrpc":"2.0","id":7,"method":"tools/call"}`,
			`{"jsonrpc":"2.0","id":7,"error":{"code":-32602,"message":"Invalid params: name must be a string"}}`},
		{"tools/call positional params", `{"jsonrpc":"2.0","id":7,"method":"tools/call","params":["echo"]}`,
			`{"jsonrpc":"2.0","id":7,"error":{"code":-32602,"message":"Invalid params: name must be a string"}}`},
		{"unknown method", `{"jsonrpc":"2.0","id":8,"method":"resources/list"}`,
			`{"jsonrpc":"2.0","id":8,"error":{"code":-32601,"message":"Method not found"}}`},

		// stateless revision
		{"discover", `{"jsonrpc":"2.0","id":"d-1","method":"server/discover","params":{` + meta2026 + `}}`,
			`{"jsonrpc":"2.0","id":"d-1","result":{"resultType":"complete","supportedVersions":["2026-07-28","2025-11-25","2025-06-18","2025-03-26","2024-11-05"],` + initResult + `}}`},
		{"discover without meta", `{"jsonrpc":"2.0","id":1,"method":"server/discover"}`,
			`{"jsonrpc":"2.0","id":1,"result":{"supportedVersions":["2026-07-28","2025-11-25","2025-06-18","2025-03-26","2024-11-05"],` + initResult + `}}`},
		{"stateless ping", `{"jsonrpc":"2.0","id":2,"method":"ping","params":{` + meta2026 + `}}`,
			`{"jsonrpc":"2.0","id":2,"result":{"resultType":"complete"}}`},
		{"stateless tools/list", `{"jsonrpc":"2.0","id":3,"method":"tools/list","params":{` + meta2026 + `}}`,
			`{"jsonrpc":"2.0","id":3,"result":{"resultType":"complete",` + toolsListBody + `}}`},
		{"stateless echo", `{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"echo","arguments":{"message":"x"},` + meta2026 + `}}`,
			`{"jsonrpc":"2.0","id":4,"result":{"resultType":"complete","content":[{"type":"text","text":"Echo: x"}]}}`},
		{"stateless get-sum", `{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{` + meta2026 + `,"name":"get-sum","arguments":{"a":2,"b":3}}}`,
			`{"jsonrpc":"2.0","id":5,"result":{"resultType":"complete","content":[{"type":"text","text":"The sum of 2 and 3 is 5."}]}}`},
		{"meta with session version", `{"jsonrpc":"2.0","id":2,"method":"ping","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":"2025-06-18"}}}`,
			`{"jsonrpc":"2.0","id":2,"result":{}}`},
		{"unsupported version", `{"jsonrpc":"2.0","id":9,"method":"tools/list","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":"2099-01-01"}}}`,
			`{"jsonrpc":"2.0","id":9,"error":{"code":-32022,"message":"Unsupported protocol version","data":{"requested":"2099-01-01","supported":["2026-07-28","2025-11-25","2025-06-18","2025-03-26","2024-11-05"]}}}`},
		{"version not a string", `{"jsonrpc":"2.0","id":9,"method":"ping","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":20260728}}}`,
			`{"jsonrpc":"2.0","id":9,"error":{"code":-32602,"message":"Invalid params: _meta protocol version must be a string"}}`},
		{"stateless unknown method", `{"jsonrpc":"2.0","id":8,"method":"subscriptions/listen","params":{` + meta2026 + `}}`,
			`{"jsonrpc":"2.0","id":8,"error":{"code":-32601,"message":"Method not found"}}`},

		// ids: byte for byte
		{"string id with escapes", `{"jsonrpc":"2.0","id":"a\"b\\c\u00e9\n","method":"ping"}`, `{"jsonrpc":"2.0","id":"a\"b\\c\u00e9\n","result":{}}`},
		{"id 1.50", `{"jsonrpc":"2.0","id":1.50,"method":"ping"}`, `{"jsonrpc":"2.0","id":1.50,"result":{}}`},
		{"big id", `{"jsonrpc":"2.0","id":123456789012345678901234567890,"method":"ping"}`, `{"jsonrpc":"2.0","id":123456789012345678901234567890,"result":{}}`},
		{"negative exponent id", `{"jsonrpc":"2.0","id":-1e-3,"method":"ping"}`, `{"jsonrpc":"2.0","id":-1e-3,"result":{}}`},
		{"null id request", `{"jsonrpc":"2.0","id":null,"method":"ping"}`, `{"jsonrpc":"2.0","id":null,"error":{"code":-32600,"message":"Invalid Request"}}`},
		{"object id", `{"jsonrpc":"2.0","id":{"a":1},"method":"ping"}`, `{"jsonrpc":"2.0","id":null,"error":{"code":-32600,"message":"Invalid Request"}}`},

		// invalid input
		{"invalid json", `{"jsonrpc":"2.0","id":1,"method":"ping"`, `{"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"Parse error"}}`},
		{"garbage", `garbage`, `{"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"Parse error"}}`},
		{"empty", ``, `{"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"Parse error"}}`},
		{"empty batch", `[]`, `{"jsonrpc":"2.0","id":null,"error":{"code":-32600,"message":"Invalid Request"}}`},
		{"number", `1`, `{"jsonrpc":"2.0","id":null,"error":{"code":-32600,"message":"Invalid Request"}}`},
		{"string", `"ping"`, `{"jsonrpc":"2.0","id":null,"error":{"code":-32600,"message":"Invalid Request"}}`},
		{"no jsonrpc", `{"id":3,"method":"ping"}`, `{"jsonrpc":"2.0","id":3,"error":{"code":-32600,"message":"Invalid Request"}}`},
		{"bad params type", `{"jsonrpc":"2.0","id":3,"method":"ping","params":1}`, `{"jsonrpc":"2.0","id":3,"error":{"code":-32600,"message":"Invalid Request"}}`},

		// batches
		{"batch", `[{"jsonrpc":"2.0","id":1,"method":"ping"},{"jsonrpc":"2.0","method":"notifications/initialized"},{"jsonrpc":"2.0","id":"two","method":"tools/call","params":{"name":"echo","arguments":{"message":"m"}}}]`,
			`[{"jsonrpc":"2.0","id":1,"result":{}},{"jsonrpc":"2.0","id":"two","result":{"content":[{"type":"text","text":"Echo: m"}]}}]`},
		{"batch of notifications", `[{"jsonrpc":"2.0","method":"notifications/initialized"},{"jsonrpc":"2.0","method":"x"}]`, ``},
		{"batch notification first", ` [ {"jsonrpc":"2.0","method":"n"} , {"jsonrpc":"2.0","id":1,"method":"ping"} ] `, `[{"jsonrpc":"2.0","id":1,"result":{}}]`},
		{"batch of invalid", `[1,2]`, `[{"jsonrpc":"2.0","id":null,"error":{"code":-32600,"message":"Invalid Request"}},{"jsonrpc":"2.0","id":null,"error":{"code":-32600,"message":"Invalid Request"}}]`},
		{"nested batch", `[[]]`, `[{"jsonrpc":"2.0","id":null,"error":{"code":-32600,"message":"Invalid Request"}}]`},
		{"batch invalid json", `[{"jsonrpc":"2.0","id":1,"method":"ping"},`, `{"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"Parse error"}}`},
		{"batch mixed", `[{"jsonrpc":"2.0","id":1,"method":"nope"},{"jsonrpc":"2.0","id":2,"result":1},{"jsonrpc":"2.0","id":null,"method":"ping"}]`,
			`[{"jsonrpc":"2.0","id":1,"error":{"code":-32601,"message":"Method not found"}},{"jsonrpc":"2.0","id":null,"error":{"code":-32600,"message":"Invalid Request"}}]`},
	}
	ss := &session{srv: s}
	for _, tt := range tests {
		got := string(s.Handle([]byte("keep"), []byte(tt.msg)))
		if got != "keep"+tt.want {
			t.Errorf("%s:\n got  %s\n want %s", tt.name, strings.TrimPrefix(got, "keep"), tt.want)
			continue
		}
		// The inline path answers from the reactor's scan, not its own.
		if env, err := mcp.Scan([]byte(tt.msg)); err == nil {
			inl, ok := ss.HandleInline([]byte("keep"), []byte(tt.msg), env)
			if !ok || string(inl) != got {
				t.Errorf("%s: HandleInline = %q, %v; Handle = %q", tt.name, inl, ok, got)
			}
		}
		if tt.want != "" && !json.Valid([]byte(tt.want)) {
			t.Errorf("%s: reply is not valid JSON", tt.name)
		}
	}
}

func TestJSNumber(t *testing.T) {
	// Checked against node's String(x); a 600,000-value differential run
	// against node agreed on every value.
	for _, tt := range []struct {
		f    float64
		want string
	}{
		{0, "0"}, {math.Copysign(0, -1), "0"}, {1, "1"}, {-1, "-1"}, {0.30000000000000004, "0.30000000000000004"},
		{1e21, "1e+21"}, {1e20, "100000000000000000000"}, {9.999999999999999e20, "999999999999999900000"},
		{1e-7, "1e-7"}, {1e-6, "0.000001"}, {1.234e-7, "1.234e-7"}, {123.456, "123.456"},
		{-1.5e-10, "-1.5e-10"}, {5e-324, "5e-324"}, {math.MaxFloat64, "1.7976931348623157e+308"},
		{1 << 53, "9007199254740992"}, {1.5e300, "1.5e+300"}, {math.Inf(1), "Infinity"},
		{math.Inf(-1), "-Infinity"}, {math.NaN(), "NaN"},
	} {
		if got := string(appendJSNumber(nil, tt.f)); got != tt.want {
			t.Errorf("appendJSNumber(%v) = %s, want %s", tt.f, got, tt.want)
		}
	}
}

func TestHandleAllocs(t *testing.T) {
	s := &Server{}
	dst := make([]byte, 0, 1024)
	for _, msg := range []string{echoRequest, sumRequest,
		`{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"echo","arguments":{"message":"x"},` + meta2026 + `}}`,
		`{"jsonrpc":"2.0","id":1,"method":"ping"}`, `{"jsonrpc":"2.0","id":1,"method":"tools/list"}`,
		`[{"jsonrpc":"2.0","id":1,"method":"ping"},{"jsonrpc":"2.0","method":"n"}]`,
	} {
		b := []byte(msg)
		if n := testing.AllocsPerRun(100, func() { dst = s.Handle(dst[:0], b) }); n != 0 {
			t.Errorf("Handle(%s) allocates %v times", msg, n)
		}
	}
}

const (
	echoRequest = `{"jsonrpc":"2.0","id":42,"method":"tools/call","params":{"name":"echo","arguments":{"message":"hello, gateway"}}}`
	sumRequest  = `{"jsonrpc":"2.0","id":43,"method":"tools/call","params":{"name":"get-sum","arguments":{"a":1.5,"b":2.25}}}`
)

func BenchmarkHandleEcho(b *testing.B) {
	s := &Server{}
	msg := []byte(echoRequest)
	dst := make([]byte, 0, 1024)
	b.SetBytes(int64(len(msg)))
	b.ReportAllocs()
	for b.Loop() {
		dst = s.Handle(dst[:0], msg)
	}
}

func BenchmarkHandleGetSum(b *testing.B) {
	s := &Server{}
	msg := []byte(sumRequest)
	dst := make([]byte, 0, 1024)
	b.ReportAllocs()
	for b.Loop() {
		dst = s.Handle(dst[:0], msg)
	}
}
