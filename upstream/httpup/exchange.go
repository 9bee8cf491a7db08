package httpup

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"mime"
	"net/http"
	"net/http/httptrace"
	"strconv"
	"sync"

	"github.com/mcpgate/gateway/fault"
	"github.com/mcpgate/gateway/mcp"
	"github.com/mcpgate/gateway/upstream"
	"github.com/mcpgate/gateway/upstream/pool"
)

// exch is one client message on its way to the upstream.
type exch struct {
	out    pool.Out
	ctx    context.Context
	cancel context.CancelFunc
	// Session mode keeps the client's order: an exchange is sent once the
	// previous one has been written (prev), and says so (wrote).
	prev      <-chan struct{}
	wrote     chan struct{}
	wroteOnce sync.Once

	// Where it went, for a cancellation to follow (under the session's or
	// the exchange's own goroutine; read after the call was taken).
	mu      sync.Mutex
	tgt     *target
	sid     string
	version string
}

func (e *exch) written() {
	e.wroteOnce.Do(func() {
		if e.wrote != nil {
			close(e.wrote)
		}
	})
}

func (e *exch) setDest(t *target, sid, version string) {
	e.mu.Lock()
	e.tgt, e.sid, e.version = t, sid, version
	e.mu.Unlock()
}

func (e *exch) dest() (*target, string, string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.tgt, e.sid, e.version
}

// answer is what a POST came back with.
type answer struct {
	status int
	sid    string // Mcp-Session-Id of the response
	body   []byte // the start of a non-2xx body
	err    error
}

// post sends msg to t and routes what comes back (one JSON body or an SSE
// stream) with rt, until the call (if any) is answered. observe, if set,
// sees each message before it is routed.
func (u *Upstream) post(ctx context.Context, e *exch, t *target, sid, version string, rt *pool.Routing, observe func([]byte)) answer {
	t.inflight.Add(1)
	defer t.inflight.Add(-1)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, t.url, bytes.NewReader(e.out.Msg))
	if err != nil {
		return answer{err: err}
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	if sid != "" {
		req.Header.Set("Mcp-Session-Id", sid)
	}
	if version != "" {
		req.Header.Set("Mcp-Protocol-Version", version)
	}
	if e != nil && e.out.Call != nil && e.out.Call.Trace != nil && e.out.Call.Trace.Traceparent != "" {
		// The server continues the gateway's span (W3C Trace Context).
		req.Header.Set("Traceparent", e.out.Call.Trace.Traceparent)
	}
	if e != nil && e.wrote != nil && e.out.Call != nil {
		// The next message may go once a request is on the wire: requests
		// run side by side. A notification or response waits for the
		// server's answer instead (below): "written" is not "received" when
		// the next message finds an idle connection before the server has
		// accepted this one's, and notifications/initialized must arrive
		// before the requests that follow it.
		req = req.WithContext(httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{
			WroteRequest: func(httptrace.WroteRequestInfo) { e.written() },
		}))
	}
	resp, err := u.client.Do(req)
	if e != nil {
		e.written()
	}
	if err != nil {
		return answer{err: err}
	}
	defer resp.Body.Close()
	a := answer{status: resp.StatusCode, sid: resp.Header.Get("Mcp-Session-Id")}
	if resp.StatusCode/100 != 2 {
		a.body, _ = io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		return a
	}
	if resp.StatusCode == http.StatusAccepted || resp.StatusCode == http.StatusNoContent {
		return a
	}
	var call *pool.Call
	if e != nil {
		call = e.out.Call
	}
	answered := func() bool { return call != nil && rt.Table.Get(call.GID) != call }
	scratch := upstream.GetBuffer(4096)[:0]
	defer func() { upstream.PutBuffer(scratch) }()
	route := func(msg []byte) {
		fault.Hit("http.response")
		if observe != nil {
			observe(msg)
		}
		scratch = rt.FromWorker(scratch, msg)
	}
	ct, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	switch ct {
	case "text/event-stream":
		ev := newSSE(resp.Body)
		for !answered() {
			data, err := ev.next()
			if err != nil {
				if !errors.Is(err, io.EOF) && ctx.Err() == nil {
					a.err = err
				}
				break
			}
			route(data)
		}
	case "application/json":
		body, err := io.ReadAll(io.LimitReader(resp.Body, maxBody+1))
		switch {
		case err != nil:
			a.err = err
		case len(body) > maxBody:
			a.err = errors.New("answer too large")
		case len(bytes.TrimSpace(body)) > 0:
			route(body)
		}
	default:
		a.err = errors.New("unexpected content type " + strconv.Quote(ct))
	}
	return a
}

// replyStatus answers call for an upstream that said no (non-2xx): with the
// upstream's own JSON-RPC error when the body holds one, else -32603.
func replyStatus(call *pool.Call, status int, body []byte) {
	if env, err := mcp.Scan(body); err == nil && env.Kind == mcp.KindResponse && env.Error != nil {
		b := append(upstream.GetBuffer(len(body) + len(call.ID) + 32)[:0], `{"jsonrpc":"2.0","id":`...)
		b = append(b, call.ID...)
		b = append(b, `,"error":`...)
		b = append(b, env.Error...)
		b = append(b, '}')
		call.Reply(b)
		upstream.PutBuffer(b)
		return
	}
	call.ReplyError(mcp.CodeInternal, "Upstream HTTP "+strconv.Itoa(status))
}

// sse reads a text/event-stream (the WHATWG format): it returns the data of
// each message event, its lines joined with "\n".
type sse struct {
	br     *bufio.Reader
	data   []byte
	long   []byte
	lastID string
}

func newSSE(r io.Reader) *sse { return &sse{br: bufio.NewReaderSize(r, 32<<10)} }

func (s *sse) next() ([]byte, error) {
	s.data = s.data[:0]
	hasData, message := false, true
	for {
		line, err := s.line()
		if err != nil {
			return nil, err
		}
		if len(line) == 0 { // end of event
			// An event with empty data primes a stream for resumption
			// (its id); it carries no message.
			if hasData && message && len(s.data) > 0 {
				return s.data, nil
			}
			hasData, message = false, true
			s.data = s.data[:0]
			continue
		}
		if line[0] == ':' {
			continue // comment (keep-alive)
		}
		field, value := line, []byte(nil)
		if i := bytes.IndexByte(line, ':'); i >= 0 {
			field, value = line[:i], line[i+1:]
			if len(value) > 0 && value[0] == ' ' {
				value = value[1:]
			}
		}
		switch string(field) {
		case "data":
			if hasData {
				s.data = append(s.data, '\n')
			}
			if len(s.data)+len(value) > maxBody {
				return nil, errors.New("sse event too large")
			}
			s.data = append(s.data, value...)
			hasData = true
		case "event":
			message = len(value) == 0 || string(value) == "message"
		case "id":
			s.lastID = string(value)
		}
	}
}

// line returns the next line without its end (LF or CRLF); it is valid
// until the next call.
func (s *sse) line() ([]byte, error) {
	s.long = s.long[:0]
	for {
		chunk, err := s.br.ReadSlice('\n')
		if err == bufio.ErrBufferFull {
			if len(s.long)+len(chunk) > maxBody {
				return nil, errors.New("sse line too long")
			}
			s.long = append(s.long, chunk...)
			continue
		}
		if err != nil && (len(chunk) == 0 || err != io.EOF) {
			return nil, err
		}
		line := chunk
		if len(s.long) > 0 {
			s.long = append(s.long, chunk...)
			line = s.long
		}
		line = bytes.TrimSuffix(line, []byte{'\n'})
		return bytes.TrimSuffix(line, []byte{'\r'}), nil
	}
}
