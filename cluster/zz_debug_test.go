package cluster

import (
	"testing"
	"time"

	"github.com/mcpgate/gateway/ratelimit"
)

func TestZZDebug(t *testing.T) {
	r := startRedis(t)
	const N = 5000
	const W = 2 * time.Second
	lims := newNodes(t, r, 3, ratelimit.Limit{N: N, Window: W}, LimiterOptions{Nodes: 3})
	ts, _ := hammer(lims, "large", time.Now().Add(2*W+200*time.Millisecond))
	t0 := ts[0]
	hist := map[int64]int{}
	for _, x := range ts {
		hist[(x-t0)/int64(100*time.Millisecond)]++
	}
	for i := int64(0); i < 45; i++ {
		t.Logf("%4dms %d", i*100, hist[i])
	}
}
