package reactor

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/mcpgate/gateway/auth"
	"github.com/mcpgate/gateway/config"
	gwmetrics "github.com/mcpgate/gateway/metrics"
	"github.com/mcpgate/gateway/ratelimit"
	"github.com/mcpgate/gateway/session"
	"github.com/mcpgate/gateway/upstream/builtin"
)

// startLimited is startServer with a per-subject limiter.
func startLimited(t *testing.T, cfg *config.Config) {
	t.Helper()
	v, err := auth.New(cfg.Auth)
	if err != nil {
		t.Fatal(err)
	}
	up := builtin.New("demo", 1, 64)
	t.Cleanup(func() { up.Close() })
	ps := cfg.RateLimit.PerSubject
	s, err := New(Options{
		Config: cfg, Verifier: v, Routes: []Route{{Path: "/mcp", Upstream: up}},
		Table: session.NewTable(), Metrics: gwmetrics.New(),
		Log:            slog.New(slog.NewTextHandler(io.Discard, nil)),
		SubjectLimiter: ratelimit.NewLocalSubjectLimiter(ratelimit.Limit{N: ps.Messages, Window: time.Duration(ps.Window)}),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx) }()
	select {
	case <-s.Ready():
	case err := <-done:
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); <-done })
}

// client is an authenticated test connection.
type client struct {
	t  *testing.T
	c  net.Conn
	br *bufio.Reader
}

func dialAuthed(t *testing.T, addr string) *client {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(c, "GET /mcp HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != 101 {
		t.Fatalf("upgrade: %v %v", err, resp)
	}
	cl := &client{t: t, c: c, br: br}
	cl.send(`{"type":"auth","token":"` + testToken + `"}`)
	if op, p := cl.read(); op != 1 || !strings.Contains(string(p), "auth_ok") {
		t.Fatalf("auth: %d %s", op, p)
	}
	return cl
}

// send writes s as one masked text frame of any length.
func (cl *client) send(s string) {
	cl.t.Helper()
	f := []byte{0x81}
	switch n := len(s); {
	case n < 126:
		f = append(f, 0x80|byte(n))
	case n < 1<<16:
		f = binary.BigEndian.AppendUint16(append(f, 0x80|126), uint16(n))
	default:
		f = binary.BigEndian.AppendUint64(append(f, 0x80|127), uint64(n))
	}
	mask := [4]byte{1, 2, 3, 4}
	f = append(f, mask[:]...)
	for i := 0; i < len(s); i++ {
		f = append(f, s[i]^mask[i%4])
	}
	if _, err := cl.c.Write(f); err != nil {
		cl.t.Fatal(err)
	}
}

// read returns the next frame's opcode and payload.
func (cl *client) read() (byte, []byte) {
	cl.t.Helper()
	var h [2]byte
	if _, err := io.ReadFull(cl.br, h[:]); err != nil {
		cl.t.Fatal(err)
	}
	n := uint64(h[1] & 0x7f)
	switch n {
	case 126:
		var l [2]byte
		io.ReadFull(cl.br, l[:])
		n = uint64(binary.BigEndian.Uint16(l[:]))
	case 127:
		var l [8]byte
		io.ReadFull(cl.br, l[:])
		n = binary.BigEndian.Uint64(l[:])
	}
	p := make([]byte, n)
	if _, err := io.ReadFull(cl.br, p); err != nil {
		cl.t.Fatal(err)
	}
	return h[0] & 0x0f, p
}

// text reads a text frame.
func (cl *client) text() string {
	cl.t.Helper()
	op, p := cl.read()
	if op != 1 {
		cl.t.Fatalf("want a text frame, got op %d %q", op, p)
	}
	return string(p)
}

func (cl *client) expectClose(code uint16, reason string) {
	cl.t.Helper()
	op, p := cl.read()
	if op != 8 || len(p) < 2 || binary.BigEndian.Uint16(p) != code || string(p[2:]) != reason {
		cl.t.Fatalf("want close %d %q, got op %d %q", code, reason, op, p)
	}
}

// pingBatch is a batch of n ping requests with ids first..first+n-1 and a
// notification in the middle.
func pingBatch(first, n int) string {
	var b strings.Builder
	b.WriteByte('[')
	for i := 0; i < n; i++ {
		if i > 0 {
			b.WriteByte(',')
		}
		if i == n/2 {
			b.WriteString(`{"jsonrpc":"2.0","method":"notifications/initialized"},`)
		}
		fmt.Fprintf(&b, `{"jsonrpc":"2.0","id":%d,"method":"ping"}`, first+i)
	}
	b.WriteByte(']')
	return b.String()
}

type rpcReply struct {
	ID    json.RawMessage `json:"id"`
	Error *struct {
		Code int `json:"code"`
		Data struct {
			RetryAfterMS int64  `json:"retry_after_ms"`
			MaxBatch     int    `json:"max_batch"`
			Reason       string `json:"reason"`
			ReplyBytes   int64  `json:"reply_bytes"`
		} `json:"data"`
	} `json:"error"`
	Result json.RawMessage `json:"result"`
}

// batchReply decodes an array answer and checks it answers ids
// first..first+n-1 in order.
func batchReply(t *testing.T, got string, first, n int) []rpcReply {
	t.Helper()
	var rs []rpcReply
	if err := json.Unmarshal([]byte(got), &rs); err != nil || len(rs) != n {
		t.Fatalf("want an array of %d answers, got %.300s (%v)", n, got, err)
	}
	for i, r := range rs {
		if string(r.ID) != fmt.Sprint(first+i) {
			t.Fatalf("answer %d has id %s, want %d: %.300s", i, r.ID, first+i, got)
		}
	}
	return rs
}

// SPEC 10: a batch counts each of its messages against per_subject and
// per_connection; refused by per_subject, each request gets -31029; a
// batch over limits.max_batch gets one -32600 with id null.
func TestBatchCountsEachMessage(t *testing.T) {
	cfg := testConfig(t)
	cfg.RateLimit.PerSubject = config.Window{Messages: 13, Window: config.Duration(time.Minute)}
	cfg.RateLimit.PerConnection = config.Window{Messages: 1000, Window: config.Duration(time.Minute)}
	startLimited(t, cfg)
	c := dialAuthed(t, cfg.Listen[0])

	c.send(pingBatch(1, 17)) // over max_batch (16): counts as one message
	var r rpcReply
	if got := c.text(); json.Unmarshal([]byte(got), &r) != nil || string(r.ID) != "null" ||
		r.Error == nil || r.Error.Code != -32600 || r.Error.Data.MaxBatch != 16 {
		t.Fatalf("17 requests: %s", got)
	}
	c.send(pingBatch(1, 5)) // 6 messages of 13 (the notification counts)
	for _, r := range batchReply(t, c.text(), 1, 5) {
		if r.Error != nil || string(r.Result) != "{}" {
			t.Fatalf("within the limit: %+v", r)
		}
	}
	c.send(pingBatch(10, 5)) // 12 of 13: fits
	batchReply(t, c.text(), 10, 5)
	c.send(pingBatch(20, 1)) // 1 more would fit, 2 do not: refused whole
	for _, r := range batchReply(t, c.text(), 20, 1) {
		if r.Error == nil || r.Error.Code != -31029 || r.Error.Data.RetryAfterMS <= 0 {
			t.Fatalf("over per_subject: %+v %+v", r, r.Error)
		}
	}
	c.send(pingBatch(30, 5))
	for _, r := range batchReply(t, c.text(), 30, 5) {
		if r.Error == nil || r.Error.Code != -31029 || r.Error.Data.RetryAfterMS <= 0 || r.Error.Data.RetryAfterMS > 2*60000 {
			t.Fatalf("over per_subject: %+v %+v", r, r.Error)
		}
	}
	c.send(`{"jsonrpc":"2.0","id":"one","method":"ping"}`) // the 13th message
	if got := c.text(); got != `{"jsonrpc":"2.0","id":"one","result":{}}` {
		t.Fatalf("13th message: %s", got)
	}
	c.send(`[{"jsonrpc":"2.0","method":"notifications/initialized"}]`) // refused, nothing to answer
	c.send(`[]`)                                                       // not a batch: -32600 (counted as one)
	if got := c.text(); got != `{"jsonrpc":"2.0","id":null,"error":{"code":-32600,"message":"Invalid Request"}}` {
		t.Fatalf("[]: %s", got)
	}
}

// A batch that per_connection cannot take whole closes the connection 1008
// and none of it is answered.
func TestBatchOverPerConnection(t *testing.T) {
	cfg := testConfig(t)
	cfg.RateLimit.PerConnection = config.Window{Messages: 10, Window: config.Duration(time.Minute)}
	cfg.Limits.MaxBatch = 256
	startLimited(t, cfg)

	c := dialAuthed(t, cfg.Listen[0])
	c.send(pingBatch(1, 4))
	batchReply(t, c.text(), 1, 4) // 5 messages
	c.send(pingBatch(1, 4))       // 10
	batchReply(t, c.text(), 1, 4)
	c.send(`{"jsonrpc":"2.0","id":1,"method":"ping"}`)
	c.expectClose(1008, "Rate limit exceeded")

	c = dialAuthed(t, cfg.Listen[0])
	c.send(pingBatch(1, 200))
	c.expectClose(1008, "Rate limit exceeded")
}

// SPEC 10: a reply over write_buffer_bytes becomes -32603 for each request
// it answers, inline (builtin, <= 16 KiB) or from a worker, and the
// connection stays; a reply within the cap is delivered.
func TestReplyOverWriteCap(t *testing.T) {
	for _, tc := range []struct {
		name     string
		writeCap int
		echo     int // bytes echoed by each request
	}{
		{"inline", 8 << 10, 10 << 10},
		{"worker", 64 << 10, 100 << 10},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig(t)
			cfg.Limits.WriteBufferBytes = config.Size(tc.writeCap)
			cfg.Limits.MaxMessageBytes = 512 << 10
			startLimited(t, cfg)
			c := dialAuthed(t, cfg.Listen[0])
			echo := func(id, n int) string {
				return fmt.Sprintf(`{"jsonrpc":"2.0","id":%d,"method":"tools/call","params":{"name":"echo","arguments":{"message":"%s"}}}`,
					id, strings.Repeat("x", n))
			}
			c.send(echo(1, tc.echo))
			var r rpcReply
			if got := c.text(); json.Unmarshal([]byte(got), &r) != nil || string(r.ID) != "1" || r.Error == nil ||
				r.Error.Code != -32603 || r.Error.Data.Reason != "reply_too_large" || r.Error.Data.ReplyBytes <= int64(tc.writeCap-10) {
				t.Fatalf("reply over the cap: %.300s", got)
			}
			// A batch whose reply is over the cap: an error per request.
			if tc.name == "worker" {
				c.send("[" + echo(2, tc.writeCap/2) + "," + echo(3, tc.writeCap/2) + "]")
				for i, r := range batchReply(t, c.text(), 2, 2) {
					if r.Error == nil || r.Error.Code != -32603 {
						t.Fatalf("answer %d: %+v", i, r)
					}
				}
			}
			c.send(echo(4, tc.writeCap-1024)) // within the cap
			if got := c.text(); !strings.Contains(got, `"id":4,"result"`) || !strings.Contains(got, strings.Repeat("x", tc.writeCap-1024)) {
				t.Fatalf("reply within the cap: %.300s", got)
			}
		})
	}
}
