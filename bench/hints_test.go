package bench

import (
	"strings"
	"testing"
)

// TestLimitHints: each refusal a default gateway gives a load generator is
// explained by the limit's name; a clean run gets no hint.
func TestLimitHints(t *testing.T) {
	if h := limitHints([]ErrorRow{{Kind: "call/timeout", Count: 3}}); len(h) != 0 {
		t.Fatalf("hints for a timeout: %v", h)
	}
	h := limitHints([]ErrorRow{
		{Kind: "connect/http 429", Count: 70},
		{Kind: "connect/http 503", Count: 2},
		{Kind: "hold/close 1008 Rate limit exceeded", Count: 30},
		{Kind: "call/rpc error -31029 rate limited", Count: 2000},
	})
	want := []string{"70 upgrades refused with 429: the gateway's ratelimit.handshakes_per_ip",
		"2 upgrades refused with 503: limits.max_connections_per_ip",
		"30 connections closed 1008 \"Rate limit exceeded\": ratelimit.per_connection",
		"2000 calls answered -31029: ratelimit.per_subject"}
	if len(h) != len(want) {
		t.Fatalf("hints %q", h)
	}
	for i := range want {
		if !strings.HasPrefix(h[i], want[i]) {
			t.Errorf("hint %d: %q, want it to start %q", i, h[i], want[i])
		}
	}
}
