package httpup

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mcpgate/gateway/config"
	"github.com/mcpgate/gateway/metrics"
	"github.com/mcpgate/gateway/upstream/pool/pooltest"
)

const wait = 20 * time.Second

func newUp(t *testing.T, urls []string, timeout time.Duration, m *metrics.Metrics) *Upstream {
	t.Helper()
	u, err := New(config.Upstream{Name: "h", Type: "http", URLs: urls, RequestTimeout: config.Duration(timeout)},
		m, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { u.Close() })
	return u
}

// syncBuffer collects a child's output.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// everything is server-everything over Streamable HTTP, on a port of its own.
type everything struct {
	url    string
	cmd    *exec.Cmd
	out    *syncBuffer
	exited chan struct{}
}

func startEverything(t *testing.T) *everything {
	t.Helper()
	peer := pooltest.Peer(t)
	var last string
	for range 3 { // a port taken between the check and the bind: try another
		ev, out := tryEverything(t, peer, pooltest.FreePort(t))
		if ev != nil {
			return ev
		}
		last = out
	}
	t.Fatalf("server-everything did not listen: %s", last)
	return nil
}

func tryEverything(t *testing.T, peer string, port int) (*everything, string) {
	// The server reads its port from PORT (default 3001).
	cmd := exec.Command("node", peer, "streamableHttp")
	cmd.Env = append(os.Environ(), "PORT="+strconv.Itoa(port))
	out := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	ev := &everything{url: fmt.Sprintf("http://127.0.0.1:%d/mcp", port), cmd: cmd, out: out, exited: exited}
	deadline := time.Now().Add(wait)
	for time.Now().Before(deadline) {
		select {
		case <-exited:
			return nil, out.String()
		default:
		}
		c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err == nil {
			c.Close()
			t.Cleanup(ev.stop)
			return ev, ""
		}
		time.Sleep(50 * time.Millisecond)
	}
	ev.stop()
	return nil, out.String()
}

func (e *everything) stop() {
	_ = syscall.Kill(-e.cmd.Process.Pid, syscall.SIGKILL)
	<-e.exited
}

// fakeServer is a small Streamable HTTP server for the fault cases. It
// hands out session ids on initialize (unless stateless), answers JSON or
// SSE, and records what it was sent.
type fakeServer struct {
	*httptest.Server
	stateless bool

	mu       sync.Mutex
	sessions map[string]bool
	deleted  []string
	methods  []string
	sids     []string
	n        int
}

type fakeReq struct {
	ID     json.RawMessage `json:"id"`
	Method string          `json:"method"`
	Params struct {
		MS      int    `json:"ms"`
		Message string `json:"message"`
		Meta    struct {
			ProgressToken json.RawMessage `json:"progressToken"`
		} `json:"_meta"`
	} `json:"params"`
}

func newFakeServer(t *testing.T, stateless bool) *fakeServer {
	f := &fakeServer{stateless: stateless, sessions: map[string]bool{}}
	f.Server = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.Close)
	return f
}

func (f *fakeServer) URL() string { return f.Server.URL + "/mcp" }

func (f *fakeServer) expire(sid string) {
	f.mu.Lock()
	delete(f.sessions, sid)
	f.mu.Unlock()
}

func (f *fakeServer) record() (methods, sids, deleted []string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.methods...), append([]string(nil), f.sids...), append([]string(nil), f.deleted...)
}

func (f *fakeServer) serve(w http.ResponseWriter, r *http.Request) {
	sid := r.Header.Get("Mcp-Session-Id")
	f.mu.Lock()
	known := f.sessions[sid]
	f.mu.Unlock()
	switch r.Method {
	case http.MethodDelete:
		f.mu.Lock()
		f.deleted = append(f.deleted, sid)
		delete(f.sessions, sid)
		f.mu.Unlock()
		return
	case http.MethodGet:
		w.WriteHeader(http.StatusMethodNotAllowed)
		return
	}
	if r.Header.Get("Accept") != "application/json, text/event-stream" || r.Header.Get("Content-Type") != "application/json" {
		http.Error(w, "bad headers", http.StatusNotAcceptable)
		return
	}
	var req fakeReq
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	f.mu.Lock()
	f.methods = append(f.methods, req.Method)
	f.sids = append(f.sids, sid)
	f.mu.Unlock()
	if sid != "" && !known {
		http.Error(w, `{"jsonrpc":"2.0","id":null,"error":{"code":-32001,"message":"Session not found"}}`, http.StatusNotFound)
		return
	}
	if req.ID == nil {
		w.WriteHeader(http.StatusAccepted)
		return
	}
	reply := func(result any) []byte {
		b, _ := json.Marshal(map[string]any{"jsonrpc": "2.0", "id": req.ID, "result": result})
		return b
	}
	switch req.Method {
	case "initialize":
		if !f.stateless {
			f.mu.Lock()
			f.n++
			sid = fmt.Sprintf("sess-%d", f.n)
			f.sessions[sid] = true
			f.mu.Unlock()
			w.Header().Set("Mcp-Session-Id", sid)
		}
		w.Header().Set("Content-Type", "application/json")
		w.Write(reply(map[string]any{"protocolVersion": "2025-06-18", "capabilities": map[string]any{}}))
	case "echo":
		w.Header().Set("Content-Type", "application/json")
		w.Write(reply(map[string]any{"text": "Echo: " + req.Params.Message, "version": r.Header.Get("Mcp-Protocol-Version")}))
	case "sse":
		// A progress notification, then the answer, over SSE.
		w.Header().Set("Content-Type", "text/event-stream")
		note, _ := json.Marshal(map[string]any{"jsonrpc": "2.0", "method": "notifications/progress",
			"params": map[string]any{"progressToken": req.Params.Meta.ProgressToken, "progress": 1}})
		fmt.Fprintf(w, ": keep-alive\n\nid: 1\nevent: message\ndata: %s\n\n", note)
		w.(http.Flusher).Flush()
		fmt.Fprintf(w, "event: message\ndata: %s\n\n", reply(map[string]any{"done": true}))
	case "sleep":
		select {
		case <-time.After(time.Duration(req.Params.MS) * time.Millisecond):
		case <-r.Context().Done():
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Write(reply(map[string]any{"slept": req.Params.MS}))
	case "fail":
		http.Error(w, "boom", http.StatusInternalServerError)
	default:
		w.Header().Set("Content-Type", "application/json")
		b, _ := json.Marshal(map[string]any{"jsonrpc": "2.0", "id": req.ID, "error": map[string]any{"code": -32601, "message": "Method not found"}})
		w.Write(b)
	}
}

// deadURL is a URL nothing listens on.
func deadURL(t *testing.T) string {
	return fmt.Sprintf("http://127.0.0.1:%d/mcp", pooltest.FreePort(t))
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(wait)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
