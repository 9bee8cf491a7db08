package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"
)

// StdioFloorResult is what `suite stdiofloor` writes: the CPU that the stdio
// worker alone (server-everything) spends per echo call, with no relay in
// front of it. The stdio target compares two relays with their workers
// counted, so this is the part of both sides that no relay can remove.
type StdioFloorResult struct {
	Command     []string `json:"command"`
	Calls       int      `json:"calls"`
	WarmupCalls int      `json:"warmup_calls"` // answered before the pause, not counted
	Window      int      `json:"window"`       // requests in flight at most
	MessageSize int      `json:"message_size"`
	// Each run: one fresh process; its CPU is read from /proc after the
	// initialize answer and a pause (the startup-only cost) and again after
	// the last answer. The calls' cost is the difference.
	Runs      []FloorRun `json:"runs"`
	USPerCall float64    `json:"cpu_us_per_call"` // median over the runs
	// The same process under node --cpu-prof, summarised (the profiler's own
	// overhead makes its CPU figure unusable as the floor; it is not one).
	Profile      *ProfileSummary `json:"profile,omitempty"`
	ProfileError string          `json:"profile_error,omitempty"`
}

// FloorRun is one measured process.
type FloorRun struct {
	StartupCPUSecs float64 `json:"startup_cpu_secs"` // exec to initialize answered + pause
	CallsCPUSecs   float64 `json:"calls_cpu_secs"`   // the N calls
	ExitCPUSecs    float64 `json:"exit_cpu_secs"`    // whole life (rusage at exit), a cross-check
	CallsWallSecs  float64 `json:"calls_wall_secs"`
	USPerCall      float64 `json:"cpu_us_per_call"`
	ErrorAnswers   int     `json:"error_answers,omitempty"`
}

// cmdStdioFloor runs the stdio worker's command (pinned like the servers by
// -pin), sends initialize + notifications/initialized, waits for the
// answer, runs -warmup calls, pauses, then sends N tools/call echo requests
// (the echo `gateway bench` sends: same tool and message size), keeping at
// most -window in flight, and waits for the N answers. Stdin is then closed, which ends
// server-everything normally.
func cmdStdioFloor(args []string) error {
	fs := flag.NewFlagSet("stdiofloor", flag.ContinueOnError)
	node := fs.String("node", "node", "node binary")
	script := fs.String("script", "", "server-everything's dist/index.js")
	pin := fs.String("pin", "", "command prefix, split on spaces (e.g. \"taskset -c 1\")")
	calls := fs.Int("calls", 50000, "echo calls per run")
	size := fs.Int("message-size", 64, "bytes of the echo message (gateway bench --message-size)")
	runs := fs.Int("runs", 1, "measured runs (the median is reported)")
	profDir := fs.String("prof-dir", "", "run once more under node --cpu-prof into this directory (empty: no profile)")
	warmup := fs.Int("warmup", -1, "calls sent and answered before the measured ones, not counted (-1: calls/5)")
	pause := fs.Duration("pause", 500*time.Millisecond, "pause between the initialize answer and the first call")
	window := fs.Int("window", 256, "requests in flight at most: the worker's cheapest point (it reads them in batches; all at once costs more in GC, one at a time far more in wake-ups)")
	out := fs.String("out", "", "JSON output file")
	maxDur := fs.Duration("max", 3*time.Minute, "give up after this long")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *script == "" || *out == "" || *calls < 1 || *runs < 1 || *window < 1 {
		return fmt.Errorf("-script and -out are required; -calls, -runs and -window must be positive")
	}
	if *warmup < 0 {
		*warmup = *calls / 5
	}
	ctx, cancel := context.WithTimeout(context.Background(), *maxDur)
	defer cancel()
	prefix := strings.Fields(*pin)
	cmd := func(nodeFlags ...string) []string {
		c := append(append([]string{}, prefix...), *node)
		return append(append(c, nodeFlags...), *script, "stdio")
	}
	res := &StdioFloorResult{Command: cmd(), Calls: *calls, WarmupCalls: *warmup, Window: *window, MessageSize: *size}
	var per []float64
	for i := 0; i < *runs; i++ {
		r, err := floorRun(ctx, cmd(), *warmup, *calls, *size, *window, *pause)
		if err != nil {
			return fmt.Errorf("run %d: %w", i+1, err)
		}
		fmt.Fprintf(os.Stderr, "stdiofloor: run %d: %.1f µs/call (%.2f s CPU for %d calls, startup %.2f s)\n",
			i+1, r.USPerCall, r.CallsCPUSecs, *calls, r.StartupCPUSecs)
		res.Runs = append(res.Runs, *r)
		per = append(per, r.USPerCall)
	}
	res.USPerCall = median(per)
	if *profDir != "" {
		if err := os.MkdirAll(*profDir, 0o755); err != nil {
			return err
		}
		// 250 µs sampling: enough samples in a quick run's few thousand calls.
		_, err := floorRun(ctx, cmd("--cpu-prof", "--cpu-prof-dir", *profDir, "--cpu-prof-interval", "250"), *warmup, *calls, *size, *window, *pause)
		if err == nil {
			res.Profile, err = summarizeProfileDir(*profDir, 10)
		}
		if err != nil {
			res.ProfileError = err.Error()
			fmt.Fprintf(os.Stderr, "stdiofloor: profile: %v\n", err)
		}
	}
	b, _ := json.MarshalIndent(res, "", "  ")
	return os.WriteFile(*out, append(b, '\n'), 0o644)
}

// floorRun measures one fresh process: warm calls first (V8 compiles the
// hot paths, as in a relay's long-running worker), then the pause, then
// the measured calls.
func floorRun(ctx context.Context, argv []string, warm, calls, size, window int, pause time.Duration) (*FloorRun, error) {
	c := exec.Command(argv[0], argv[1:]...)
	// Its own process group, killed on every way out; and killed with us.
	c.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	c.Stderr = io.Discard
	stdin, err := c.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := c.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := c.Start(); err != nil {
		return nil, err
	}
	pid := c.Process.Pid
	exited := make(chan struct{})
	defer func() {
		select {
		case <-exited:
		default:
			syscall.Kill(-pid, syscall.SIGKILL)
			<-exited
		}
	}()
	answers := make(chan answer, 1024)
	readErr := make(chan error, 1)
	// One credit per request in flight: the reader returns one per answer.
	credits := make(chan struct{}, window+1)
	for range window {
		credits <- struct{}{}
	}
	go func() { readErr <- readAnswers(stdout, answers, credits) }()
	go func() { c.Wait(); close(exited) }()

	init := `{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18",` +
		`"capabilities":{},"clientInfo":{"name":"suite-stdiofloor","version":"1"}}}` + "\n" +
		`{"jsonrpc":"2.0","method":"notifications/initialized"}` + "\n"
	if _, err := io.WriteString(stdin, init); err != nil {
		return nil, err
	}
	if _, err := waitAnswers(ctx, answers, readErr, 1); err != nil {
		return nil, fmt.Errorf("initialize: %w", err)
	}
	send := func(first, n int) <-chan error {
		done := make(chan error, 1)
		go func() {
			w := bufio.NewWriterSize(stdin, 64<<10)
			msg := strings.Repeat("x", size)
			for i := first; i < first+n; i++ {
				select {
				case <-credits:
				default:
					if err := w.Flush(); err != nil {
						done <- err
						return
					}
					select {
					case <-credits:
					case <-ctx.Done():
						done <- ctx.Err()
						return
					}
				}
				fmt.Fprintf(w, `{"jsonrpc":"2.0","id":%d,"method":"tools/call","params":{"name":"echo","arguments":{"message":"%s"}}}`+"\n", i, msg)
			}
			done <- w.Flush()
		}()
		return done
	}
	if warm > 0 {
		sent := send(1, warm)
		if _, err := waitAnswers(ctx, answers, readErr, warm); err != nil {
			return nil, fmt.Errorf("warm-up: %w", err)
		}
		if err := <-sent; err != nil {
			return nil, err
		}
	}
	// The pause lets startup work that follows initialize finish, and leaves
	// an idle stretch in the profile that marks where the calls begin.
	select {
	case <-time.After(pause):
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	pids := withDescendants([]int{pid})
	r := &FloorRun{StartupCPUSecs: cpuSecs(pids)}
	t0 := time.Now()
	writeErr := send(warm+1, calls)
	errs, err := waitAnswers(ctx, answers, readErr, calls)
	if err != nil {
		return nil, fmt.Errorf("calls: %w", err)
	}
	if err := <-writeErr; err != nil {
		return nil, err
	}
	r.CallsWallSecs = time.Since(t0).Seconds()
	r.CallsCPUSecs = cpuSecs(withDescendants([]int{pid})) - r.StartupCPUSecs
	r.USPerCall = r.CallsCPUSecs * 1e6 / float64(calls)
	r.ErrorAnswers = errs
	r.CallsCPUSecs, r.USPerCall, r.CallsWallSecs = round3(r.CallsCPUSecs), round3(r.USPerCall), round3(r.CallsWallSecs)
	// End of input ends the server normally (and writes its CPU profile).
	stdin.Close()
	select {
	case <-exited:
	case <-time.After(20 * time.Second):
		syscall.Kill(pid, syscall.SIGINT) // server-everything exits on SIGINT
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
			return nil, fmt.Errorf("the server did not exit after its input ended")
		}
	}
	if u, ok := c.ProcessState.SysUsage().(*syscall.Rusage); ok {
		r.ExitCPUSecs = round3(float64(u.Utime.Nano()+u.Stime.Nano()) / 1e9)
	}
	return r, nil
}

type answer struct {
	id    int
	isErr bool
}

// readAnswers passes on every JSON-RPC answer that carries a numeric id
// (notifications such as tools/list_changed have none).
func readAnswers(r io.Reader, to chan<- answer, credits chan<- struct{}) error {
	br := bufio.NewReaderSize(r, 256<<10)
	for {
		line, err := br.ReadBytes('\n')
		if len(bytes.TrimSpace(line)) > 0 {
			var m struct {
				ID    *int            `json:"id"`
				Error json.RawMessage `json:"error"`
			}
			if json.Unmarshal(line, &m) == nil && m.ID != nil {
				if *m.ID != 0 { // not initialize's: a call's credit comes back
					select {
					case credits <- struct{}{}:
					default:
					}
				}
				to <- answer{id: *m.ID, isErr: m.Error != nil}
			}
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				return fmt.Errorf("the server closed its output")
			}
			return err
		}
	}
}

// waitAnswers waits for n answers and counts the error answers among them.
func waitAnswers(ctx context.Context, from <-chan answer, readErr <-chan error, n int) (int, error) {
	errs := 0
	for got := 0; got < n; {
		select {
		case a := <-from:
			got++
			if a.isErr {
				errs++
			}
		case err := <-readErr:
			return errs, err
		case <-ctx.Done():
			return errs, fmt.Errorf("%w after %d of %d answers", ctx.Err(), got, n)
		}
	}
	return errs, nil
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// summarizeProfileDir summarises the newest .cpuprofile in dir.
func summarizeProfileDir(dir string, top int) (*ProfileSummary, error) {
	files, _ := filepath.Glob(filepath.Join(dir, "*.cpuprofile"))
	if len(files) == 0 {
		return nil, fmt.Errorf("node wrote no .cpuprofile into %s", dir)
	}
	newest, when := "", time.Time{}
	for _, f := range files {
		if st, err := os.Stat(f); err == nil && st.ModTime().After(when) {
			newest, when = f, st.ModTime()
		}
	}
	b, err := os.ReadFile(newest)
	if err != nil {
		return nil, err
	}
	s, err := summarizeProfile(b, top)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Base(newest), err)
	}
	s.File = filepath.Base(newest)
	return s, nil
}
