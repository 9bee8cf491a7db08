package conformance

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mcpgate/gateway/conformance/wsraw"
)

var gatewayBin string

func TestMain(m *testing.M) {
	bin, dir, err := wsraw.Build(os.Getenv("E2E_RACE") == "1")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	gatewayBin = bin
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// maxMsg is the gateway's max_message_bytes in this suite (its default).
const maxMsg = 1 << 20

// maxPreAuth is max_preauth_message_bytes (its default).
const maxPreAuth = 16 << 10

// suiteConfig lifts the rate limits, which the suite is not about: about
// 170 connections of one subject and one IP within seconds.
var suiteConfig = wsraw.Config{
	"ratelimit": `
  per_connection: {messages: 100000, window: 1s}
  per_subject: {messages: 1000000, window: 1s}
  handshakes_per_ip: {count: 100000, window: 1s}
  frames_per_connection: {count: 1000000, window: 1s}`,
}

// testCase is one conformance case.
type testCase struct {
	ID      string
	Desc    string
	Expect  string
	Run     func(x *cx)
	PreAuth bool // the case starts before authentication
}

// cx is what a case runs with: an authenticated raw connection, and a log
// of what was observed, which becomes the table's "observed" column.
type cx struct {
	t      *testing.T
	g      *wsraw.Gateway
	c      *wsraw.Conn
	obs    []string
	nextID int
}

func (x *cx) note(format string, args ...any) { x.obs = append(x.obs, fmt.Sprintf(format, args...)) }

// fail records what was seen and ends the case as FAILED.
func (x *cx) fail(format string, args ...any) {
	x.t.Helper()
	x.note(format, args...)
	x.t.Fatalf("observed: %s", strings.Join(x.obs, "; "))
}

func (x *cx) observed() string { return strings.Join(x.obs, "; ") }

func (x *cx) id() int { x.nextID++; return x.nextID }

// send writes frames back to back in one write.
func (x *cx) send(frames ...[]byte) {
	x.t.Helper()
	if err := x.c.Write(bytes.Join(frames, nil)); err != nil {
		x.fail("write: %v", err)
	}
}

// sendChunked writes frames in pieces of chunk bytes with a pause between.
func (x *cx) sendChunked(chunk int, frames ...[]byte) {
	x.t.Helper()
	if err := x.c.WriteChunked(bytes.Join(frames, nil), chunk, time.Millisecond); err != nil {
		x.fail("write: %v", err)
	}
}

// sendChunkedLenient is sendChunked for frames the gateway may refuse
// before it has read them whole: write errors end the writing, not the case.
func (x *cx) sendChunkedLenient(chunk int, frames ...[]byte) {
	if err := x.c.WriteChunked(bytes.Join(frames, nil), chunk, time.Millisecond); err != nil {
		x.note("gateway closed while the frame was being written")
	}
}

// sendAsync writes in the background and ignores errors: for cases where
// the gateway may close before it has read everything.
func (x *cx) sendAsync(b []byte) {
	go func() { _ = x.c.Write(b) }()
}

// next reads one server frame.
func (x *cx) next(timeout time.Duration) wsraw.ServerFrame {
	x.t.Helper()
	f, err := x.c.ReadFrame(timeout)
	if err != nil {
		switch {
		case wsraw.IsTimeout(err):
			x.fail("nothing within %v", timeout)
		default:
			x.fail("connection ended (%v)", err)
		}
	}
	if f.RSV != 0 {
		x.fail("server frame with RSV bits %d", f.RSV)
	}
	if !f.Fin && f.Op >= 8 {
		x.fail("fragmented server control frame")
	}
	return f
}

// nextText reads one whole text message (reassembling fragments); any
// control frame in between is a failure.
func (x *cx) nextText() []byte {
	x.t.Helper()
	f := x.next(10 * time.Second)
	if f.Op != wsraw.OpText {
		x.fail("expected a text message, got %s", f)
	}
	msg := f.Payload
	for !f.Fin {
		f = x.next(10 * time.Second)
		if f.Op != wsraw.OpContinuation {
			x.fail("expected a continuation, got %s", f)
		}
		msg = append(msg, f.Payload...)
	}
	return msg
}

// expectEcho checks the next message answers echo request id with msg.
func (x *cx) expectEcho(id int, msg []byte) {
	x.t.Helper()
	got := x.nextText()
	var resp struct {
		ID     json.RawMessage `json:"id"`
		Result struct {
			Content []struct{ Text string } `json:"content"`
		} `json:"result"`
		Error json.RawMessage `json:"error"`
	}
	if err := json.Unmarshal(got, &resp); err != nil {
		x.fail("answer is not JSON: %q", wsraw.Truncate(string(got), 120))
	}
	if string(resp.ID) != strconv.Itoa(id) || len(resp.Result.Content) != 1 {
		x.fail("unexpected answer %q", wsraw.Truncate(string(got), 120))
	}
	if resp.Result.Content[0].Text != "Echo: "+string(msg) {
		x.fail("echo of %d bytes differs from the %d bytes sent", len(resp.Result.Content[0].Text)-6, len(msg))
	}
	x.note("echoed (%d-byte message)", len(msg))
}

// expectPingAnswer checks the next message answers ping request id.
func (x *cx) expectPingAnswer(id int) {
	x.t.Helper()
	got := string(x.nextText())
	if want := `{"jsonrpc":"2.0","id":` + strconv.Itoa(id) + `,"result":{}}`; got != want {
		x.fail("answer %q, want %q", wsraw.Truncate(got, 120), want)
	}
}

// alive checks the connection still serves, and that nothing else arrives
// before the answer to a fresh request.
func (x *cx) alive() {
	x.t.Helper()
	id := x.id()
	x.send(wsraw.Frame(true, 0, wsraw.OpText, pingReq(id)))
	x.expectPingAnswer(id)
	x.note("still open")
}

// expectPong checks the next frame is a pong carrying p.
func (x *cx) expectPong(p []byte) {
	x.t.Helper()
	f := x.next(5 * time.Second)
	if f.Op != wsraw.OpPong {
		x.fail("expected pong, got %s", f)
	}
	if !bytes.Equal(f.Payload, p) {
		x.fail("pong payload %q, want %q", wsraw.Truncate(string(f.Payload), 40), wsraw.Truncate(string(p), 40))
	}
	x.note("pong %dB", len(p))
}

// expectClose checks the next frame is a close with one of codes, then
// that the gateway closes TCP.
func (x *cx) expectClose(codes ...int) {
	x.t.Helper()
	f := x.next(5 * time.Second)
	if f.Op != wsraw.OpClose {
		x.fail("expected close %v, got %s", codes, f)
	}
	code, reason := wsraw.ParseClose(f.Payload)
	x.note("close %d %q", code, reason)
	ok := false
	for _, c := range codes {
		ok = ok || c == code
	}
	if !ok {
		x.fail("want close %v", codes)
	}
	if n, err := x.c.WaitEOF(3 * time.Second); err != nil {
		x.fail("after the close: %v", err)
	} else if n > 0 {
		x.fail("%d bytes after the close frame", n)
	}
	x.note("TCP closed")
}

// expectParseError checks the next message is JSON-RPC error -32700.
func (x *cx) expectParseError() {
	x.t.Helper()
	got := string(x.nextText())
	if !strings.Contains(got, `"code":-32700`) || !strings.Contains(got, `"id":null`) {
		x.fail("answer %q, want a -32700 error with id null", wsraw.Truncate(got, 120))
	}
	x.note("-32700")
}

// expectEchoes reads len(msgs) answers to the echo requests whose ids are
// the keys, in any order (the builtin server answers concurrently), and
// checks each echoes its message; msgs is emptied.
func (x *cx) expectEchoes(msgs map[int][]byte) {
	x.t.Helper()
	n := len(msgs)
	for i := range n {
		got := x.nextText()
		var resp struct {
			ID     int `json:"id"`
			Result struct {
				Content []struct{ Text string } `json:"content"`
			} `json:"result"`
		}
		if err := json.Unmarshal(got, &resp); err != nil {
			x.fail("answer %d: %q", i, wsraw.Truncate(string(got), 100))
		}
		msg, ok := msgs[resp.ID]
		if !ok {
			x.fail("answer %d: unknown or repeated id %d", i, resp.ID)
		}
		if msg != nil && (len(resp.Result.Content) != 1 || resp.Result.Content[0].Text != "Echo: "+string(msg)) {
			x.fail("answer %d (id %d) does not echo its request", i, resp.ID)
		}
		delete(msgs, resp.ID)
	}
	x.note("%d answers", n)
}

// pingReq is a JSON-RPC ping request.
func pingReq(id int) []byte {
	return []byte(`{"jsonrpc":"2.0","id":` + strconv.Itoa(id) + `,"method":"ping"}`)
}

// echoReq is an echo tool call whose message is raw, inserted verbatim (raw
// must not need JSON escaping; invalid UTF-8 goes through as is).
func echoReq(id int, raw []byte) []byte {
	b := []byte(`{"jsonrpc":"2.0","id":` + strconv.Itoa(id) +
		`,"method":"tools/call","params":{"name":"echo","arguments":{"message":"`)
	b = append(b, raw...)
	return append(b, `"}}}`...)
}

// echoOfLen is an echo request of exactly total bytes and its message.
func echoOfLen(id, total int) ([]byte, []byte) {
	over := len(echoReq(id, nil))
	if total < over {
		panic(fmt.Sprintf("echo request cannot be %d bytes", total))
	}
	msg := pattern(total - over)
	return echoReq(id, msg), msg
}

// pattern is n printable bytes that show a shift or a lost chunk.
func pattern(n int) []byte {
	const alpha = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-_"
	b := make([]byte, n)
	for i := range b {
		b[i] = alpha[(i*7+i/len(alpha))%len(alpha)]
	}
	return b
}

// fragments splits msg at the given offsets into a text frame and
// continuations, the last one final.
func fragments(msg []byte, cuts ...int) [][]byte {
	var out [][]byte
	prev := 0
	for i, end := range append(cuts, len(msg)) {
		op := wsraw.OpContinuation
		if i == 0 {
			op = wsraw.OpText
		}
		out = append(out, wsraw.Frame(end == len(msg) && i == len(cuts), 0, op, msg[prev:end]))
		prev = end
	}
	return out
}

// everyN are the offsets cutting msg into pieces of n bytes.
func everyN(msg []byte, n int) []int {
	var cuts []int
	for i := n; i < len(msg); i += n {
		cuts = append(cuts, i)
	}
	return cuts
}

// sortCases orders cases by their numeric ids (1.2.10 after 1.2.9).
func sortCases(cs []testCase) {
	slices.SortStableFunc(cs, func(a, b testCase) int { return compareIDs(a.ID, b.ID) })
}

func compareIDs(a, b string) int {
	as, bs := strings.Split(a, "."), strings.Split(b, ".")
	for i := 0; i < len(as) && i < len(bs); i++ {
		x, _ := strconv.Atoi(as[i])
		y, _ := strconv.Atoi(bs[i])
		if x != y {
			return x - y
		}
	}
	return len(as) - len(bs)
}
