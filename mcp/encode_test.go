package mcp

import (
	"encoding/json"
	"testing"
)

func TestAppendString(t *testing.T) {
	for _, s := range []string{
		"", "plain", `q"uote`, `back\slash`, "nl\n cr\r tab\t bs\b ff\f nul\x00 us\x1f del\x7f",
		"<html>&amp;", "é 日本 😀", "bad\xffutf8\xc3", "ls\u2028ps\u2029", "\xed\xa0\x80",
	} {
		out := AppendString(nil, s)
		if !json.Valid(out) {
			t.Fatalf("AppendString(%q) = %s: invalid JSON", s, out)
		}
		var back string
		if err := json.Unmarshal(out, &back); err != nil {
			t.Fatal(err)
		}
		want, _ := json.Marshal(s) // encoding/json's view of s (U+FFFD for bad bytes)
		var wantBack string
		_ = json.Unmarshal(want, &wantBack)
		if back != wantBack {
			t.Errorf("AppendString(%q) decodes to %q, want %q", s, back, wantBack)
		}
		if got := string(AppendString(nil, []byte(s))); got != string(out) {
			t.Errorf("[]byte and string forms differ: %s vs %s", got, out)
		}
	}
	if got := string(AppendString(nil, "a\u2028<")); got != `"a\u2028<"` {
		t.Errorf("got %s", got)
	}
}

func TestAppendError(t *testing.T) {
	tests := []struct {
		id   []byte
		code int
		msg  string
		data []byte
		want string
	}{
		{nil, CodeParseError, "Parse error", nil, `{"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"Parse error"}}`},
		{[]byte(`"a\"b"`), CodeRateLimited, "Rate limited", []byte(`{"retry_after_ms":250}`),
			`{"jsonrpc":"2.0","id":"a\"b","error":{"code":-31029,"message":"Rate limited","data":{"retry_after_ms":250}}}`},
		{[]byte(`1.50`), CodeInvalidParams, "bad \"x\"\n", nil, `{"jsonrpc":"2.0","id":1.50,"error":{"code":-32602,"message":"bad \"x\"\n"}}`},
	}
	for _, tt := range tests {
		got := string(AppendError([]byte("prefix"), tt.id, tt.code, tt.msg, tt.data))
		if got != "prefix"+tt.want {
			t.Errorf("got  %s\nwant %s", got, tt.want)
		}
	}
	buf := make([]byte, 0, 256)
	id := []byte(`"req-1"`)
	if n := testing.AllocsPerRun(100, func() {
		buf = AppendError(buf[:0], id, CodeInternal, "Internal error", nil)
	}); n != 0 {
		t.Fatalf("AppendError allocates %v times", n)
	}
}

func TestStringEqualsAndUnquote(t *testing.T) {
	for _, tt := range []struct {
		raw, s string
		eq     bool
	}{
		{`"abc"`, "abc", true},
		{`"abc"`, "ab", false},
		{`"ab"`, "abc", false},
		{`"a\u0062c"`, "abc", true},
		{`"\/\"\\\b\f\n\r\t"`, "/\"\\\b\f\n\r\t", true},
		{`"\u00e9\u65e5"`, "é日", true},
		{`"\ud83d\ude00"`, "😀", true},
		{`"\ud83d"`, "\uFFFD", true},
		{`"\ude00x"`, "\uFFFDx", true},
		{"\"\xff\"", "\uFFFD", true},
		{`abc`, "abc", false},
	} {
		if got := StringEquals([]byte(tt.raw), tt.s); got != tt.eq {
			t.Errorf("StringEquals(%s, %q) = %v", tt.raw, tt.s, got)
		}
		if !tt.eq {
			continue
		}
		u, ok := AppendUnquote(nil, []byte(tt.raw))
		var want string
		if err := json.Unmarshal([]byte(tt.raw), &want); err != nil || !ok || string(u) != want {
			t.Errorf("AppendUnquote(%s) = %q %v, encoding/json %q %v", tt.raw, u, ok, want, err)
		}
	}
}
