package stdio

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"testing"
	"time"
)

// The test binary doubles as a fake MCP worker (for the fault cases a real
// server cannot be made to show on cue) when run with STDIO_FAKE_WORKER=1.
func TestMain(m *testing.M) {
	if os.Getenv("STDIO_FAKE_WORKER") == "1" {
		fakeWorker()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// fakeCommand is the argv of a fake worker.
func fakeCommand() []string {
	return []string{"/usr/bin/env", "STDIO_FAKE_WORKER=1", os.Args[0]}
}

type fakeMsg struct {
	ID     json.RawMessage `json:"id,omitempty"`
	Method string          `json:"method,omitempty"`
	Params struct {
		Message string `json:"message"`
		MS      int    `json:"ms"`
		N       int    `json:"n"`
		Meta    struct {
			ProgressToken json.RawMessage `json:"progressToken"`
		} `json:"_meta"`
	} `json:"params"`
	Result json.RawMessage `json:"result,omitempty"`
	Error  json.RawMessage `json:"error,omitempty"`
}

// fakeWorker answers: initialize, echo {message} (with its pid), sleep {ms},
// progress {n} (n progress notifications first), die (exits at once),
// grandchild (starts a sleep in its group and returns its pid), env (its
// environment, as os.Environ lists it), ask (asks the client
// sampling/createMessage and answers with what came back), and
// silent (never answers), and closestdin (answers, then closes its stdin
// and lives on, so that what the gateway writes next fails). With
// STDIO_FAKE_BOOT_MS=n it reads nothing for its first n ms (a slow boot).
func fakeWorker() {
	if ms, err := strconv.Atoi(os.Getenv("STDIO_FAKE_BOOT_MS")); err == nil {
		time.Sleep(time.Duration(ms) * time.Millisecond)
	}
	fmt.Fprintln(os.Stderr, "fake worker ready")
	var mu sync.Mutex
	out := bufio.NewWriter(os.Stdout)
	write := func(v any) {
		b, _ := json.Marshal(v)
		mu.Lock()
		out.Write(append(b, '\n'))
		out.Flush()
		mu.Unlock()
	}
	result := func(id json.RawMessage, r any) {
		write(map[string]any{"jsonrpc": "2.0", "id": id, "result": r})
	}
	var asked []json.RawMessage // ids of "ask" requests waiting for the client
	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 1<<20), 16<<20)
	for in.Scan() {
		var m fakeMsg
		if err := json.Unmarshal(in.Bytes(), &m); err != nil {
			fmt.Fprintln(os.Stderr, "bad line:", err)
			continue
		}
		if m.Method == "" { // a response from the client
			if string(m.ID) == `"srv-1"` && len(asked) > 0 {
				answer := m.Result
				if answer == nil {
					answer = m.Error
				}
				result(asked[0], map[string]any{"answer": answer})
				asked = asked[1:]
			}
			continue
		}
		if m.ID == nil {
			continue // notifications
		}
		switch m.Method {
		case "initialize":
			result(m.ID, map[string]any{"protocolVersion": "2025-11-25", "capabilities": map[string]any{},
				"serverInfo": map[string]any{"name": "fake", "version": "0"}})
		case "echo":
			result(m.ID, map[string]any{"text": "Echo: " + m.Params.Message, "pid": os.Getpid()})
		case "sleep":
			go func(id json.RawMessage, ms int) {
				time.Sleep(time.Duration(ms) * time.Millisecond)
				result(id, map[string]any{"slept": ms, "pid": os.Getpid()})
			}(m.ID, m.Params.MS)
		case "progress":
			for i := 1; i <= m.Params.N; i++ {
				write(map[string]any{"jsonrpc": "2.0", "method": "notifications/progress",
					"params": map[string]any{"progressToken": m.Params.Meta.ProgressToken, "progress": i, "total": m.Params.N}})
			}
			result(m.ID, map[string]any{"done": m.Params.N})
		case "die":
			os.Exit(3)
		case "grandchild":
			cmd := exec.Command("sleep", "1000")
			if err := cmd.Start(); err != nil {
				fmt.Fprintln(os.Stderr, err)
			}
			result(m.ID, map[string]any{"pid": cmd.Process.Pid})
		case "ask":
			asked = append(asked, m.ID)
			write(map[string]any{"jsonrpc": "2.0", "id": "srv-1", "method": "sampling/createMessage", "params": map[string]any{}})
		case "env":
			result(m.ID, map[string]any{"env": os.Environ()})
		case "closestdin":
			result(m.ID, map[string]any{"pid": os.Getpid()})
			os.Stdin.Close()
			time.Sleep(time.Hour)
		case "silent":
		default:
			write(map[string]any{"jsonrpc": "2.0", "id": m.ID, "error": map[string]any{"code": -32601, "message": "Method not found"}})
		}
	}
}
