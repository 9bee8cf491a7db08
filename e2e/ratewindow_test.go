package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/mcpgate/gateway/conformance/wsraw"
)

// The per-connection limit is a true sliding window (SPEC 3: "at most N in
// any W"; ratelimit's package doc): N messages just before a fixed-window
// edge and N more later in the next fixed window, less than W after the
// first, are not all admitted. With N = 10 and W = 2 s: 10 pings at an edge
// minus 300 ms, answered; 10 more 1.5 s later. The old weighted two-window
// counter (whose fixed windows were aligned on multiples of W of the wall
// clock, as here) counted the first burst at 800/2000 of its weight there
// and let 6 through (16 in 1.5 s). Now none is: the client gets no answer,
// only close 1008 "Rate limit exceeded" (SPEC 4.4).
func TestRateWindowBoundaryBurst(t *testing.T) {
	const n = 10
	const w = 2 * time.Second
	eachTransport(t, func(t *testing.T, tr wsraw.Transport) {
		g := startGatewayOn(t, tr, with("ratelimit", fmt.Sprintf(`
  per_connection: {messages: %d, window: %s}`, n, w)))
		r := g.authed(t, aliceToken)
		edge := time.Now().Truncate(w).Add(w)
		if time.Until(edge) < 500*time.Millisecond {
			edge = edge.Add(w)
		}
		time.Sleep(time.Until(edge.Add(-300 * time.Millisecond)))
		start := time.Now()
		burst := func(from int) []byte {
			var b []byte
			for i := from; i < from+n; i++ {
				b = append(b, buildFrame(true, 0, 1, true, []byte(fmt.Sprintf(`{"jsonrpc":"2.0","id":%d,"method":"ping"}`, i)))...)
			}
			return b
		}
		r.write(burst(0))
		for i := range n {
			if got := r.readText(); !strings.Contains(got, fmt.Sprintf(`"id":%d`, i)) {
				t.Fatalf("answer %d of the first burst: %s", i, got)
			}
		}
		if d := time.Since(start); d > 400*time.Millisecond {
			t.Logf("the first burst took %v (the second still comes W-500ms after its start)", d)
		}
		// Well inside one window of the first burst's start, whatever the
		// scheduling delays: 500 ms of margin.
		time.Sleep(time.Until(start.Add(w - 500*time.Millisecond)))
		r.writeRefused(burst(n))
		answered := 0
		for {
			f, err := r.readFrame(5 * time.Second)
			if err != nil {
				t.Fatalf("after %d answers to the second burst: %v", answered, err)
			}
			if f.op == 1 {
				answered++
				continue
			}
			if f.op == 8 {
				code, reason := wsraw.ParseClose(f.payload)
				if code != 1008 || reason != "Rate limit exceeded" {
					t.Fatalf("close %d %q, want 1008 \"Rate limit exceeded\"", code, reason)
				}
				break
			}
		}
		if answered != 0 {
			t.Fatalf("%d of the second burst answered less than W after the first %d: %d in one window, limit %d",
				answered, n, n+answered, n)
		}
	})
}
