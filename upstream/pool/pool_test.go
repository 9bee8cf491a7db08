package pool

import (
	"bytes"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mcpgate/gateway/mcp"
	"github.com/mcpgate/gateway/upstream/pool/pooltest"
)

func TestDetect(t *testing.T) {
	for msg, want := range map[string]Mode{
		`{"jsonrpc":"2.0","id":1,"method":"initialize","params":{}}`:                                                ModeSession,
		`{"jsonrpc":"2.0","id":1,"method":"init\u0069alize"}`:                                                       ModeSession,
		`{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"_meta":{"` + MetaVersionKey + `":"2026-07-28"}}}`: ModeRequest,
		`{"jsonrpc":"2.0","method":"initialize"}`:                                                                   ModeRequest, // a notification
		`[{"jsonrpc":"2.0","id":1,"method":"initialize"}]`:                                                          ModeRequest,
		`not json`: ModeRequest,
	} {
		if got := Detect([]byte(msg)); got != want {
			t.Errorf("Detect(%s) = %v, want %v", msg, got, want)
		}
	}
}

func TestParseGID(t *testing.T) {
	for raw, ok := range map[string]bool{"1": true, "0": true, "9007199254740991": true, "9007199254740992": false,
		"01": false, "-1": false, "1.0": false, `"1"`: false, "": false, "1e3": false} {
		if _, got := ParseGID([]byte(raw)); got != ok {
			t.Errorf("ParseGID(%q) ok = %v", raw, got)
		}
	}
}

// Every id a client may send (and every progress token) comes back byte
// for byte, whatever the worker does with the gateway's numbers.
func TestRoundTripIDs(t *testing.T) {
	for _, id := range []string{`"abc"`, `"a\"b\\c\u00e9"`, `1.50`, `-0`, `1e5`, `12345678901234567890123`, `""`, `7`} {
		sink := pooltest.NewSink()
		r := NewRoute(&Gate{}, sink)
		msg := fmt.Sprintf(`{"jsonrpc":"2.0","id":%s,"method":"x","params":{"_meta":{"progressToken":%s},"k":"id"}}`, id, id)
		p := Prepare(r, []byte(msg), ModeRequest)
		if len(p.Out) != 1 || p.Out[0].Call == nil || p.Own {
			t.Fatalf("%s: %+v", id, p)
		}
		c := p.Out[0].Call
		want := fmt.Sprintf(`{"jsonrpc":"2.0","id":%d,"method":"x","params":{"_meta":{"progressToken":%d},"k":"id"}}`, c.GID, c.GID)
		if string(p.Out[0].Msg) != want {
			t.Fatalf("to worker:\n got %s\nwant %s", p.Out[0].Msg, want)
		}
		var tbl Table
		tbl.Add(c, 0, nil)
		rt := Routing{Table: &tbl}
		rt.FromWorker(nil, fmt.Appendf(nil, `{"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":%d,"progress":1}}`, c.GID))
		rt.FromWorker(nil, fmt.Appendf(nil, `{"result":{},"jsonrpc":"2.0","id":%d}`, c.GID))
		got := sink.Messages()
		if len(got) != 2 {
			t.Fatalf("%s: %d messages", id, len(got))
		}
		if string(got[0]) != `{"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":`+id+`,"progress":1}}` {
			t.Fatalf("progress: %s", got[0])
		}
		if string(got[1]) != `{"result":{},"jsonrpc":"2.0","id":`+id+`}` {
			t.Fatalf("reply: %s", got[1])
		}
		if tbl.Len() != 0 {
			t.Fatal("call still in flight")
		}
	}
}

// Two connections on one shared worker with the same id and token: each
// gets only its own reply and notifications; what names no request is
// dropped, and a server request is refused to the worker.
func TestSharedRouting(t *testing.T) {
	var g Gate
	a, b := pooltest.NewSink(), pooltest.NewSink()
	ra, rb := NewRoute(&g, a), NewRoute(&g, b)
	var tbl Table
	var back [][]byte
	rt := Routing{Table: &tbl, Back: func(m []byte) { back = append(back, append([]byte(nil), m...)) }}
	msg := `{"jsonrpc":"2.0","id":1,"method":"x","params":{"_meta":{"progressToken":"t"}}}`
	pa, pb := Prepare(ra, []byte(msg), ModeRequest), Prepare(rb, []byte(msg), ModeRequest)
	ca, cb := pa.Out[0].Call, pb.Out[0].Call
	tbl.Add(ca, 0, nil)
	tbl.Add(cb, 0, nil)
	rt.FromWorker(nil, fmt.Appendf(nil, `{"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":%d}}`, cb.GID))
	rt.FromWorker(nil, []byte(`{"jsonrpc":"2.0","method":"notifications/message","params":{"level":"info"}}`))
	rt.FromWorker(nil, []byte(`{"jsonrpc":"2.0","id":"s1","method":"sampling/createMessage"}`))
	rt.FromWorker(nil, fmt.Appendf(nil, `[{"jsonrpc":"2.0","id":%d,"result":"B"},{"jsonrpc":"2.0","id":%d,"result":"A"}]`, cb.GID, ca.GID))
	if got := a.Messages(); len(got) != 1 || string(got[0]) != `{"jsonrpc":"2.0","id":1,"result":"A"}` {
		t.Fatalf("a got:\n%s", pooltest.Dump(got))
	}
	if got := b.Messages(); len(got) != 2 || !bytes.Contains(got[0], []byte(`"progressToken":"t"`)) {
		t.Fatalf("b got:\n%s", pooltest.Dump(got))
	}
	if len(back) != 1 || !bytes.Contains(back[0], []byte(`"id":"s1","error":{"code":-32601`)) {
		t.Fatalf("back: %q", back)
	}
	// A late reply (the call is gone) is dropped.
	rt.FromWorker(nil, fmt.Appendf(nil, `{"jsonrpc":"2.0","id":%d,"result":"again"}`, ca.GID))
	if len(a.Messages()) != 1 {
		t.Fatal("late reply delivered")
	}
}

func TestSessionRoutingAndCancel(t *testing.T) {
	sink := pooltest.NewSink()
	r := NewRoute(&Gate{}, sink)
	var tbl Table
	rt := Routing{Table: &tbl, Session: r}
	p := Prepare(r, []byte(`{"jsonrpc":"2.0","id":"q","method":"x"}`), ModeSession)
	c := p.Out[0].Call
	tbl.Add(c, 0, nil)
	// The client cancels "q": the worker sees the gateway id.
	cp := Prepare(r, []byte(`{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":"q","reason":"r"}}`), ModeSession)
	want := fmt.Sprintf(`{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":%d,"reason":"r"}}`, c.GID)
	if len(cp.Out) != 1 || cp.Out[0].Cancel != c || string(cp.Out[0].Msg) != want {
		t.Fatalf("cancel: %+v %s", cp, cp.Out[0].Msg)
	}
	// Other notifications and responses pass unchanged, as the caller's msg.
	for _, m := range []string{`{"jsonrpc":"2.0","method":"notifications/initialized"}`, `{"jsonrpc":"2.0","id":"srv","result":{}}`} {
		if p := Prepare(r, []byte(m), ModeSession); !p.Own || string(p.Out[0].Msg) != m {
			t.Fatalf("pass-through %s: %+v", m, p)
		}
		if p := Prepare(r, []byte(m), ModeRequest); len(p.Out) != 0 {
			t.Fatalf("request mode kept %s", m)
		}
	}
	rt.FromWorker(nil, []byte(`{"jsonrpc":"2.0","method":"notifications/tools/list_changed"}`))
	rt.FromWorker(nil, []byte(`{"jsonrpc":"2.0","id":3,"method":"roots/list"}`))
	rt.FromWorker(nil, fmt.Appendf(nil, `{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":%d}}`, c.GID))
	got := sink.Messages()
	if len(got) != 3 || string(got[1]) != `{"jsonrpc":"2.0","id":3,"method":"roots/list"}` ||
		string(got[2]) != `{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":"q"}}` {
		t.Fatalf("session got:\n%s", pooltest.Dump(got))
	}
	if tbl.Len() != 0 {
		t.Fatal("a request the worker cancelled is still in flight")
	}
}

func TestTimeout(t *testing.T) {
	sink := pooltest.NewSink()
	r := NewRoute(&Gate{}, sink)
	var tbl Table
	var busy atomic.Int32
	tbl.OnBusy = func(d int) { busy.Add(int32(d)) }
	p := Prepare(r, []byte(`{"jsonrpc":"2.0","id":"t","method":"x"}`), ModeRequest)
	var fired atomic.Int32
	tbl.Add(p.Out[0].Call, 20*time.Millisecond, func(c *Call) {
		fired.Add(1)
		c.TimedOut()
	})
	if busy.Load() != 1 {
		t.Fatal("busy not counted")
	}
	reply := sink.WaitReply(t, time.Second, `"t"`)
	if !strings.Contains(string(reply), MsgTimeout) || fired.Load() != 1 || busy.Load() != 0 || tbl.Len() != 0 {
		t.Fatalf("%s fired=%d busy=%d", reply, fired.Load(), busy.Load())
	}
	if len(r.InFlight()) != 0 {
		t.Fatal("route still lists the call")
	}
	// A listen request never times out.
	l := Prepare(r, []byte(`{"jsonrpc":"2.0","id":"l","method":"subscriptions/listen"}`), ModeRequest)
	tbl.Add(l.Out[0].Call, time.Millisecond, func(*Call) { t.Error("listen timed out") })
	time.Sleep(20 * time.Millisecond)
	if tbl.Len() != 1 || len(r.InFlight()) != 1 {
		t.Fatal("listen call lost")
	}
}

func TestBatchAndReplies(t *testing.T) {
	sink := pooltest.NewSink()
	r := NewRoute(&Gate{}, sink)
	var tbl Table
	p := Prepare(r, []byte(`[{"jsonrpc":"2.0","id":1,"method":"a"}, {"jsonrpc":"2.0","method":"n"}, {"id":2}, {"jsonrpc":"2.0","id":"c","method":"b"}]`), ModeRequest)
	if len(p.Out) != 2 || p.Batch == nil {
		t.Fatalf("%+v", p)
	}
	for _, o := range p.Out {
		tbl.Add(o.Call, 0, nil)
	}
	rt := Routing{Table: &tbl}
	rt.FromWorker(nil, fmt.Appendf(nil, `{"jsonrpc":"2.0","id":%d,"result":1}`, p.Out[1].Call.GID))
	rt.FromWorker(nil, fmt.Appendf(nil, `{"jsonrpc":"2.0","id":%d,"result":2}`, p.Out[0].Call.GID))
	if len(sink.Messages()) != 0 {
		t.Fatal("batch delivered before Seal")
	}
	p.Batch.Seal()
	got := sink.Messages()
	want := `[{"jsonrpc":"2.0","id":2,"error":{"code":-32600,"message":"Invalid Request"}},{"jsonrpc":"2.0","id":"c","result":1},{"jsonrpc":"2.0","id":1,"result":2}]`
	if len(got) != 1 || string(got[0]) != want {
		t.Fatalf("got:\n%s", pooltest.Dump(got))
	}
	// Not JSON-RPC: the gateway answers itself.
	if p := Prepare(r, []byte(`{"x":1}`), ModeRequest); !bytes.Contains(p.Reply, []byte("-32600")) {
		t.Fatalf("%s", p.Reply)
	}
	if p := Prepare(r, []byte(`[]`), ModeRequest); !bytes.Contains(p.Reply, []byte("-32600")) || p.Batch != nil {
		t.Fatalf("%s", p.Reply)
	}
}

func TestGateAndClose(t *testing.T) {
	var g Gate
	sink := pooltest.NewSink()
	r := NewRoute(&g, sink)
	r.Deliver([]byte("a"))
	g.Shut()
	r.Deliver([]byte("b"))
	r.Fail(1011, "x")
	if len(sink.Messages()) != 1 {
		t.Fatal("delivered after Shut")
	}
	if _, _, failed := sink.Failed(); failed {
		t.Fatal("failed after Shut")
	}
	r2 := NewRoute(&Gate{}, sink)
	r2.Close()
	r2.Deliver([]byte("c"))
	if len(sink.Messages()) != 1 {
		t.Fatal("delivered after Close")
	}
}

// FuzzRoundTrip: whatever a valid request looks like, the worker sees a
// valid message with the gateway id, and the reply carries the client's id
// back exactly.
func FuzzRoundTrip(f *testing.F) {
	f.Add(`{"jsonrpc":"2.0","id":"x","method":"m"}`)
	f.Add(`{"params":{"_meta":{"progressToken":1.5}},"id":-1e9,"method":"m","jsonrpc":"2.0"}`)
	f.Add(` { "id" : "\u0041" , "jsonrpc" : "2.0" , "method" : "m" , "params" : { "_meta" : { "progressToken" : "p" } } } `)
	f.Fuzz(func(t *testing.T, msg string) {
		env, err := mcp.Scan([]byte(msg))
		if err != nil || env.Kind != mcp.KindRequest {
			return
		}
		sink := pooltest.NewSink()
		r := NewRoute(&Gate{}, sink)
		p := Prepare(r, []byte(msg), ModeRequest)
		if len(p.Out) != 1 {
			t.Fatalf("%d outs", len(p.Out))
		}
		out := p.Out[0]
		wenv, err := mcp.Scan(out.Msg)
		if err != nil || wenv.Kind != mcp.KindRequest {
			t.Fatalf("worker got %s: %v", out.Msg, err)
		}
		if gid, ok := ParseGID(wenv.ID); !ok || gid != out.Call.GID {
			t.Fatalf("worker id %s", wenv.ID)
		}
		var tbl Table
		tbl.Add(out.Call, 0, nil)
		(&Routing{Table: &tbl}).FromWorker(nil, fmt.Appendf(nil, `{"jsonrpc":"2.0","id":%d,"result":null}`, out.Call.GID))
		got := sink.Messages()
		if len(got) != 1 || pooltest.RawID(got[0]) != string(env.ID) {
			t.Fatalf("reply %q for id %s", got, env.ID)
		}
	})
}
