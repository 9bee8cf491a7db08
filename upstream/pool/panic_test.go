package pool

import (
	"fmt"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/mcpgate/gateway/metrics"
	"github.com/mcpgate/gateway/upstream/pool/pooltest"
)

// panicSink panics in Deliver: a bug met while routing to its connection.
type panicSink struct{ *pooltest.Sink }

func (panicSink) Deliver([]byte) { panic("deliver blew up") }

// SPEC 10: a panic while routing one worker message closes the connection
// the message was for (1011) and is counted; the other connections on the
// same shared worker, and the rest of a batch, are served.
func TestFromWorkerPanic(t *testing.T) {
	m := metrics.New()
	var tbl Table
	rt := Routing{Table: &tbl, Stats: NewStats(m, "up")}
	gate := &Gate{}
	badSink, goodSink := panicSink{pooltest.NewSink()}, pooltest.NewSink()
	bad, good := NewRoute(gate, badSink), NewRoute(gate, goodSink)
	call := func(r *Route, id string) *Call {
		p := Prepare(r, []byte(`{"jsonrpc":"2.0","id":`+id+`,"method":"ping"}`), ModeRequest)
		c := p.Out[0].Call
		tbl.Add(c, 0, nil)
		return c
	}
	reply := func(c *Call) string { return fmt.Sprintf(`{"jsonrpc":"2.0","id":%d,"result":{}}`, c.GID) }

	b1, g1 := call(bad, `"b1"`), call(good, `"g1"`)
	rt.FromWorker(nil, []byte(reply(b1)))
	if code, reason, ok := badSink.Failed(); !ok || code != 1011 || reason != "Internal error" {
		t.Fatalf("bad connection: failed %v with %d %q", ok, code, reason)
	}
	rt.FromWorker(nil, []byte(reply(g1)))
	if got := goodSink.Messages(); len(got) != 1 || !strings.Contains(string(got[0]), `"id":"g1"`) {
		t.Fatalf("good connection got %q", got)
	}

	// In a batch, the element that panics is its connection's alone.
	b2, g2 := call(bad, `"b2"`), call(good, `"g2"`)
	rt.FromWorker(nil, []byte("["+reply(b2)+","+reply(g2)+"]"))
	if got := goodSink.Messages(); len(got) != 2 || !strings.Contains(string(got[1]), `"id":"g2"`) {
		t.Fatalf("good connection after the batch got %q", got)
	}
	if _, _, failed := goodSink.Failed(); failed {
		t.Fatal("the good connection was failed")
	}
	if n := testutil.ToFloat64(m.Panics.WithLabelValues("upstream")); n != 2 {
		t.Fatalf("gateway_panics_total{site=upstream} = %v, want 2", n)
	}

	// A session's worker: whatever it sends is the session's.
	sess := NewRoute(gate, panicSink{pooltest.NewSink()})
	srt := Routing{Table: &Table{}, Session: sess, Stats: rt.Stats}
	srt.FromWorker(nil, []byte(`{"jsonrpc":"2.0","method":"notifications/message","params":{}}`))
	if !sess.Failed() {
		t.Fatal("the session was not failed")
	}
}
