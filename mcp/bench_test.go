package mcp

import (
	"encoding/json"
	"testing"
)

func BenchmarkScanToolsCall(b *testing.B) {
	msg := []byte(toolsCall)
	b.SetBytes(int64(len(msg)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Scan(msg); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkJSONValidToolsCall is the baseline Scan replaces.
func BenchmarkJSONValidToolsCall(b *testing.B) {
	msg := []byte(toolsCall)
	b.SetBytes(int64(len(msg)))
	b.ReportAllocs()
	for b.Loop() {
		if !json.Valid(msg) {
			b.Fatal("invalid")
		}
	}
}

func BenchmarkAppendError(b *testing.B) {
	buf := make([]byte, 0, 256)
	id := []byte(`"req-1"`)
	b.ReportAllocs()
	for b.Loop() {
		buf = AppendError(buf[:0], id, CodeRateLimited, "Rate limit exceeded", []byte(`{"retry_after_ms":120}`))
	}
}
