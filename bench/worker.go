package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"sync"
	"sync/atomic"
	"time"
)

// workerEnv marks a process started as a worker. The gateway binary is
// re-executed as `gateway bench --worker`; the variable lets a test binary,
// whose own flags differ, recognise the role too (see TestMain).
const workerEnv = "GATEWAY_BENCH_WORKER"

// runner is one process's share of a run: the parent's own engine, or a
// worker process driven over its stdin and stdout.
type runner interface {
	connect(ctx context.Context) error
	run(ctx context.Context, start time.Time) error
	finish() (*Partial, error)
	live() liveCounts
}

// localRunner runs an engine in this process.
type localRunner struct{ e *engine }

func (l *localRunner) connect(ctx context.Context) error { l.e.connect(ctx); return nil }
func (l *localRunner) run(ctx context.Context, start time.Time) error {
	l.e.run(ctx, start)
	return nil
}
func (l *localRunner) finish() (*Partial, error) { return l.e.finish(), nil }
func (l *localRunner) live() liveCounts          { return l.e.live() }

// Messages between parent and worker, one JSON object per line.
type toWorker struct {
	Cmd          string   `json:"cmd"` // job, run, finish, abort
	Options      *Options `json:"options,omitempty"`
	First        int      `json:"first,omitempty"`
	N            int      `json:"n,omitempty"`
	Total        int      `json:"total,omitempty"`
	ConnectStart int64    `json:"connect_start,omitempty"` // Unix ns
	Start        int64    `json:"start,omitempty"`         // Unix ns
}

type fromWorker struct {
	Type    string      `json:"type"` // live, connected, ran, result, error
	Live    *liveCounts `json:"live,omitempty"`
	Partial *Partial    `json:"partial,omitempty"`
	Error   string      `json:"error,omitempty"`
}

// remoteRunner drives one worker process.
type remoteRunner struct {
	cmd    *exec.Cmd
	in     io.WriteCloser
	enc    *json.Encoder
	events chan fromWorker
	last   atomic.Pointer[liveCounts]
	job    toWorker
}

// startWorker re-executes this binary as a worker for connections
// [first, first+n).
func startWorker(o *Options, first, n, total int, connectStart time.Time, stderr io.Writer) (*remoteRunner, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(exe, "bench", "--worker")
	cmd.Env = append(os.Environ(), workerEnv+"=1")
	cmd.Stderr = stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting worker: %v", err)
	}
	r := &remoteRunner{
		cmd: cmd, in: in, enc: json.NewEncoder(in),
		events: make(chan fromWorker, 16),
		job: toWorker{Cmd: "job", Options: o, First: first, N: n, Total: total,
			ConnectStart: connectStart.UnixNano()},
	}
	go r.readEvents(out)
	return r, nil
}

func (r *remoteRunner) readEvents(out io.Reader) {
	defer close(r.events)
	dec := json.NewDecoder(bufio.NewReaderSize(out, 64<<10))
	for {
		var m fromWorker
		if err := dec.Decode(&m); err != nil {
			return
		}
		if m.Type == "live" && m.Live != nil {
			r.last.Store(m.Live)
			continue
		}
		r.events <- m
	}
}

// await waits for the event named want; ctx cancellation asks the worker to
// cut its phase short, and the wait goes on for its answer.
func (r *remoteRunner) await(ctx context.Context, want string) (fromWorker, error) {
	done := ctx.Done()
	for {
		select {
		case m, ok := <-r.events:
			if !ok {
				return m, fmt.Errorf("worker %d exited before %q", r.cmd.Process.Pid, want)
			}
			if m.Type == "error" {
				return m, fmt.Errorf("worker: %s", m.Error)
			}
			if m.Type == want {
				return m, nil
			}
		case <-done:
			r.enc.Encode(toWorker{Cmd: "abort"})
			done = nil
		}
	}
}

func (r *remoteRunner) connect(ctx context.Context) error {
	if err := r.enc.Encode(r.job); err != nil {
		return err
	}
	_, err := r.await(ctx, "connected")
	return err
}

func (r *remoteRunner) run(ctx context.Context, start time.Time) error {
	if err := r.enc.Encode(toWorker{Cmd: "run", Start: start.UnixNano()}); err != nil {
		return err
	}
	_, err := r.await(ctx, "ran")
	return err
}

func (r *remoteRunner) finish() (*Partial, error) {
	defer r.stop()
	if err := r.enc.Encode(toWorker{Cmd: "finish"}); err != nil {
		return nil, err
	}
	m, err := r.await(context.Background(), "result")
	if err != nil {
		return nil, err
	}
	if m.Partial == nil {
		return nil, errors.New("worker sent no result")
	}
	return m.Partial, nil
}

// stop closes the worker's stdin (its signal to exit) and reaps it.
func (r *remoteRunner) stop() {
	r.in.Close()
	done := make(chan struct{})
	go func() { r.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		r.cmd.Process.Kill()
		<-done
	}
}

func (r *remoteRunner) live() liveCounts {
	if l := r.last.Load(); l != nil {
		return *l
	}
	return liveCounts{}
}

// workerMain is the worker side: it takes a job, then run and finish, from
// in, and answers on out. It exits when in closes.
func workerMain(in io.Reader, out io.Writer) int {
	// Ctrl-C reaches the whole process group; the parent decides what stops.
	signal.Ignore(os.Interrupt)
	var mu sync.Mutex
	enc := json.NewEncoder(out)
	send := func(m fromWorker) {
		mu.Lock()
		enc.Encode(m)
		mu.Unlock()
	}
	fail := func(err error) int {
		send(fromWorker{Type: "error", Error: err.Error()})
		return 1
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cmds := make(chan toWorker, 4)
	go func() {
		defer cancel() // the parent went away
		defer close(cmds)
		dec := json.NewDecoder(in)
		for {
			var m toWorker
			if dec.Decode(&m) != nil {
				return
			}
			if m.Cmd == "abort" {
				cancel()
				continue
			}
			cmds <- m
		}
	}()
	job, ok := <-cmds
	if !ok || job.Cmd != "job" || job.Options == nil {
		return fail(errors.New("expected a job"))
	}
	o := job.Options
	t, err := resolveTarget(ctx, o.URL, o.AllowRemote, systemResolver)
	if err != nil {
		return fail(err)
	}
	t.sources = sourceAddrs(t, o.SourceIPs)
	e := newEngine(o, t, job.First, job.N, job.Total, time.Unix(0, job.ConnectStart))

	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	go func() {
		for range tick.C {
			l := e.live()
			send(fromWorker{Type: "live", Live: &l})
		}
	}()

	e.connect(ctx)
	send(fromWorker{Type: "connected"})
	for m := range cmds {
		switch m.Cmd {
		case "run":
			e.run(ctx, time.Unix(0, m.Start))
			send(fromWorker{Type: "ran"})
		case "finish":
			p := e.finish()
			send(fromWorker{Type: "result", Partial: p})
			return 0
		}
	}
	e.finish()
	return 1
}
