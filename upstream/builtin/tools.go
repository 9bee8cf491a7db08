package builtin

import (
	"errors"
	"math"
	"strconv"
	"unicode/utf8"

	"github.com/mcpgate/gateway/mcp"
)

// toolsListBody is the tools/list result of the reference server
// @modelcontextprotocol/server-everything (2026.8.31, SDK 1.32.2) for its echo
// and get-sum tools, member for member: names, titles, descriptions, the
// JSON Schema its SDK derives from the zod schemas, annotations and execution.
const toolsListBody = `"tools":[` +
	`{"name":"echo","title":"Echo Tool","description":"Echoes back the input string",` +
	`"inputSchema":{"$schema":"http://json-schema.org/draft-07/schema#","type":"object",` +
	`"properties":{"message":{"type":"string","description":"Message to echo"}},"required":["message"]},` +
	`"annotations":{"readOnlyHint":true,"destructiveHint":false,"idempotentHint":true,"openWorldHint":false},` +
	`"execution":{"taskSupport":"forbidden"}},` +
	`{"name":"get-sum","title":"Get Sum Tool","description":"Returns the sum of two numbers",` +
	`"inputSchema":{"$schema":"http://json-schema.org/draft-07/schema#","type":"object",` +
	`"properties":{"a":{"type":"number","description":"First number"},"b":{"type":"number","description":"Second number"}},"required":["a","b"]},` +
	`"annotations":{"readOnlyHint":true,"destructiveHint":false,"idempotentHint":true,"openWorldHint":false},` +
	`"execution":{"taskSupport":"forbidden"}}]`

// toolsCall runs echo or get-sum. Only the members it needs are looked up;
// nothing is decoded into Go values except get-sum's two numbers.
// name and args are the raw params members (nil when absent).
func (s *Server) toolsCall(dst, id, name, args []byte, stateless bool) []byte {
	if name == nil || name[0] != '"' {
		return mcp.AppendError(dst, id, mcp.CodeInvalidParams, "Invalid params: name must be a string", nil)
	}
	if args != nil && args[0] != '{' && string(args) != "null" {
		return mcp.AppendError(dst, id, mcp.CodeInvalidParams, "Invalid params: arguments must be an object", nil)
	}
	switch {
	case mcp.StringEquals(name, "echo"):
		msg, ok := mcp.Lookup(args, "message")
		if !ok || msg[0] != '"' {
			return mcp.AppendError(dst, id, mcp.CodeInvalidParams, "Invalid arguments for tool echo: message must be a string", nil)
		}
		dst = startResult(dst, id, stateless)
		dst = append(dst, `"content":[{"type":"text","text":"Echo: `...)
		dst = appendStringContent(dst, msg[1:len(msg)-1])
		dst = append(dst, `"}]`...)
		return endResult(dst)
	case mcp.StringEquals(name, "get-sum"):
		a, okA := numberArg(args, "a")
		b, okB := numberArg(args, "b")
		if !okA || !okB {
			return mcp.AppendError(dst, id, mcp.CodeInvalidParams, "Invalid arguments for tool get-sum: a and b must be numbers", nil)
		}
		// The reference's text: `The sum of ${a} and ${b} is ${sum}.`
		dst = startResult(dst, id, stateless)
		dst = append(dst, `"content":[{"type":"text","text":"The sum of `...)
		dst = appendJSNumber(dst, a)
		dst = append(dst, " and "...)
		dst = appendJSNumber(dst, b)
		dst = append(dst, " is "...)
		dst = appendJSNumber(dst, a+b)
		dst = append(dst, `."}]`...)
		return endResult(dst)
	}
	// Rare path: allocating for the message is fine here.
	var buf [64]byte
	n, _ := mcp.AppendUnquote(buf[:0], name)
	return mcp.AppendError(dst, id, mcp.CodeInvalidParams, "Tool "+string(n)+" not found", nil)
}

// appendStringContent appends the content of a JSON string literal (without
// its quotes) as the content of another: it is already escaped, so it is
// copied as is. Only invalid UTF-8 (which the JSON grammar lets through) is
// replaced with \ufffd, so the reply is valid UTF-8 whatever came in.
func appendStringContent(dst, raw []byte) []byte {
	if utf8.Valid(raw) {
		return append(dst, raw...)
	}
	for i := 0; i < len(raw); {
		r, size := utf8.DecodeRune(raw[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, `\ufffd`...)
		} else {
			dst = append(dst, raw[i:i+size]...)
		}
		i += size
	}
	return dst
}

// numberArg returns the finite JSON number member key of args. Like the
// reference's zod schema, it takes no strings, and a number too large for a
// double (Infinity in JavaScript) is refused.
func numberArg(args []byte, key string) (float64, bool) {
	v, ok := mcp.Lookup(args, key)
	if !ok || !(v[0] == '-' || (v[0] >= '0' && v[0] <= '9')) {
		return 0, false
	}
	// On underflow ParseFloat returns the nearest value (0 or a denormal)
	// with ErrRange, which is what JavaScript gives too.
	f, err := strconv.ParseFloat(string(v), 64)
	if math.IsInf(f, 0) || (err != nil && !errors.Is(err, strconv.ErrRange)) {
		return 0, false
	}
	return f, true
}

// appendJSNumber appends f as JavaScript's Number.prototype.toString does
// (ECMA-262 Number::toString): the shortest round-trip digits, plain
// notation for 1e-7 < |f| < 1e21, else "1.5e+21" style; "0" for -0.
func appendJSNumber(dst []byte, f float64) []byte {
	switch {
	case math.IsNaN(f):
		return append(dst, "NaN"...)
	case math.IsInf(f, 1):
		return append(dst, "Infinity"...)
	case math.IsInf(f, -1):
		return append(dst, "-Infinity"...)
	case f == 0:
		return append(dst, '0')
	}
	if f < 0 {
		dst = append(dst, '-')
		f = -f
	}
	var buf [32]byte
	e := strconv.AppendFloat(buf[:0], f, 'e', -1, 64) // d[.ddd]e±XX
	var digits [24]byte
	k := 0
	i := 0
	for ; e[i] != 'e'; i++ {
		if e[i] != '.' {
			digits[k] = e[i]
			k++
		}
	}
	exp, _ := strconv.Atoi(string(e[i+1:]))
	n := exp + 1 // f = 0.digits × 10^n
	d := digits[:k]
	switch {
	case k <= n && n <= 21:
		dst = append(dst, d...)
		for range n - k {
			dst = append(dst, '0')
		}
	case 0 < n && n <= 21:
		dst = append(dst, d[:n]...)
		dst = append(dst, '.')
		dst = append(dst, d[n:]...)
	case -6 < n && n <= 0:
		dst = append(dst, '0', '.')
		for range -n {
			dst = append(dst, '0')
		}
		dst = append(dst, d...)
	default:
		dst = append(dst, d[0])
		if k > 1 {
			dst = append(dst, '.')
			dst = append(dst, d[1:]...)
		}
		dst = append(dst, 'e')
		if n-1 >= 0 {
			dst = append(dst, '+')
		}
		dst = strconv.AppendInt(dst, int64(n-1), 10)
	}
	return dst
}
