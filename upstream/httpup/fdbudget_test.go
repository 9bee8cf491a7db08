package httpup

import (
	"fmt"
	"log/slog"
	"os"
	"testing"

	"github.com/mcpgate/gateway/config"
	"github.com/mcpgate/gateway/fdbudget"
	"github.com/mcpgate/gateway/metrics"
	"github.com/mcpgate/gateway/upstream/pool/pooltest"
)

func newBudgeted(t *testing.T, url string, m *metrics.Metrics, b *fdbudget.Budget) *Upstream {
	t.Helper()
	u, err := New(config.Upstream{Name: "h", Type: "http", URLs: []string{url}},
		m, slog.New(slog.DiscardHandler), WithDescriptors(b))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { u.Close() })
	return u
}

func openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skip("no /proc/self/fd")
	}
	return len(ents) - 1 // ReadDir's own
}

// Each connection to the upstream is one descriptor, counted while it
// lives (idle in the pool included) and given back when it closes.
func TestConnectionDescriptors(t *testing.T) {
	f := newFakeServer(t, true)
	b := fdbudget.New(fdbudget.Options{})
	u := newBudgeted(t, f.URL(), nil, b)
	s, sink := pooltest.Open(t, u)
	pooltest.Send(t, s, `{"jsonrpc":"2.0","id":0,"method":"echo"}`) // the runtime's poller, first
	sink.WaitReply(t, wait, `0`)
	before, counted := openFDs(t), b.Count(fdbudget.HTTP)
	const n = 20
	for i := 1; i <= n; i++ {
		// Long enough that all 20 are in flight at once on a loaded
		// machine: one answered early would lend its connection to a
		// later request, and fewer than 19 would be dialled.
		pooltest.Send(t, s, fmt.Sprintf(`{"jsonrpc":"2.0","id":%d,"method":"sleep","params":{"ms":4000}}`, i))
	}
	// The server runs in this process: each connection is two descriptors
	// here, one of them ours. (The first request's connection is reused.)
	var conns int64
	var delta int
	waitFor(t, "19 new connections, both ends open", func() bool {
		conns, delta = b.Count(fdbudget.HTTP)-counted, openFDs(t)-before
		return conns == n-1 && int64(delta) == 2*conns
	})
	t.Logf("%d new connections counted, %d new descriptors (both ends)", conns, delta)
	for i := 1; i <= n; i++ {
		sink.WaitReply(t, wait, fmt.Sprint(i))
	}
	s.Close()
	u.Close()
	if got := b.Count(fdbudget.HTTP); got != 0 {
		t.Fatalf("%d still counted after Close", got)
	}
}

// A dial the budget refuses fails that request (-32603, counted as
// "descriptors"), does not mark the URL down, and the connections that fit
// keep serving.
func TestConnectionRefusedByBudget(t *testing.T) {
	f := newFakeServer(t, true)
	b := fdbudget.New(fdbudget.Options{Limit: 1000, AcceptBurst: 1, Count: func() (int, error) { return 0, nil }})
	b.Acquire(fdbudget.Other, int(b.Free()-2))
	m := metrics.New()
	u := newBudgeted(t, f.URL(), m, b)
	s, sink := pooltest.Open(t, u)
	for i := 1; i <= 5; i++ {
		pooltest.Send(t, s, fmt.Sprintf(`{"jsonrpc":"2.0","id":%d,"method":"sleep","params":{"ms":300}}`, i))
	}
	failed := 0
	for i := 1; i <= 5; i++ {
		if d := pooltest.Decode(t, sink.WaitReply(t, wait, fmt.Sprint(i))); d.Error != nil {
			if d.Error.Code != -32603 {
				t.Fatalf("%d: %+v", i, d.Error)
			}
			failed++
		}
	}
	if failed != 3 || b.Count(fdbudget.HTTP) != 2 {
		t.Fatalf("%d of 5 failed with 2 descriptors to spare; %d counted", failed, b.Count(fdbudget.HTTP))
	}
	if v := value(t, m.UpstreamErrors.WithLabelValues("h", "descriptors")); v != 3 {
		t.Fatalf("descriptors errors = %v", v)
	}
	if v := value(t, m.UpstreamErrors.WithLabelValues("h", "connect")); v != 0 {
		t.Fatalf("the URL was marked down (%v)", v)
	}
	pooltest.Send(t, s, `{"jsonrpc":"2.0","id":"again","method":"echo","params":{"message":"x"}}`)
	if d := pooltest.Decode(t, sink.WaitReply(t, wait, `"again"`)); d.Error != nil {
		t.Fatalf("on an idle connection: %+v", d.Error)
	}
}
