package stdio

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"os"
	"os/exec"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/mcpgate/gateway/fault"
	"github.com/mcpgate/gateway/fdbudget"
	"github.com/mcpgate/gateway/upstream"
	"github.com/mcpgate/gateway/upstream/pool"
)

type role uint8

const (
	roleIdle    role = iota // warm, not yet given out
	roleSession             // dedicated to one session-mode connection
	roleShared              // serves request-mode connections
)

const (
	// killGrace is how long an ended child has between SIGTERM and SIGKILL,
	// and how long its output may outlive it before the pipe is cut.
	killGrace = 2 * time.Second
	// maxLine bounds one message from a child; longer lines are dropped
	// (a child that never sends a newline must not grow memory forever).
	maxLine = 64 << 20
	// healthyAfter: a child that lived this long (or answered) was not a
	// crash loop, so the spawn backoff resets.
	healthyAfter = 2 * time.Second
	// sigEnd asks a child to stop; SIGKILL follows after killGrace.
	sigEnd = syscall.SIGTERM
)

// child is one worker process. It is used by one role for its whole life
// and never reused after it exits.
type child struct {
	u     *Upstream
	table pool.Table
	in    chan []byte // bounded: a full queue is ErrBusy, never a wait
	// routing is set when the child is given a role; until then (warm)
	// whatever it says is dropped.
	routing atomic.Pointer[pool.Routing]

	// Under u.mu.
	role role
	slot bool // holds one of the pool's max slots
	busy bool // counted in the busy gauge as a dedicated worker
	// counted: a dedicated child counted against subject's share (and the
	// session cap) until its slot is released.
	counted bool
	subject string

	mu   sync.Mutex // orders submit against death
	dead bool

	stopOnce sync.Once
	stop     chan struct{} // closed when the child is ended or dies
	exited   chan struct{} // closed when the process has been reaped
	after    <-chan struct{}
	ending   atomic.Bool // ended on purpose: not a failure to report
	spoke    atomic.Bool // it sent at least one message
	pid      atomic.Int64
	started  time.Time
	startErr error
	fds      atomic.Int64 // descriptors held in u.fds (spawnFDs, then childFDs)
}

func newChild(u *Upstream, r role, after <-chan struct{}) *child {
	return &child{
		u:      u,
		role:   r,
		in:     make(chan []byte, u.queue),
		stop:   make(chan struct{}),
		exited: make(chan struct{}),
		after:  after,
	}
}

func (c *child) isDead() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.dead
}

// PID returns the process id (0 until started).
func (c *child) PID() int { return int(c.pid.Load()) }

// run starts the process and serves it until it exits; then the child dies.
func (c *child) run() {
	defer c.u.wg.Done()
	if c.after != nil {
		// This child takes the slot of one being killed: start once it is
		// gone, so there are never more than max processes.
		select {
		case <-c.after:
		case <-time.After(2 * killGrace):
		}
	}
	select {
	case <-c.stop: // ended before it started
		close(c.exited)
		c.die()
		return
	default:
	}
	stdin, stdout, stderr, err := c.start()
	if err == nil {
		c.releaseFDs(spawnFDs - childFDs) // the child's ends and exec's pipe are closed
	}
	if err != nil {
		c.startErr = err
		close(c.exited)
		c.u.log.Error("worker start failed", "upstream", c.u.name, "err", err)
		c.u.st.Error("spawn")
		c.die()
		return
	}
	pid := c.PID()
	c.u.log.Debug("worker started", "upstream", c.u.name, "pid", pid)
	if c.ending.Load() {
		killGroup(pid, syscall.SIGKILL) // end raced with the start
	}
	c.u.wg.Add(2)
	go c.writeLoop(stdin)
	go c.stderrLoop(stderr)
	c.readLoop(stdout)
	// stdout is closed: the child exited, or closed it and must go.
	select {
	case <-c.exited:
	default:
		killGroup(pid, syscall.SIGKILL)
		<-c.exited
	}
	_ = stdout.Close()
	c.die()
}

func (c *child) start() (stdin, stdout, stderr *os.File, err error) {
	// Own pipes rather than cmd.StdoutPipe: Wait must not close our read
	// end while a grandchild still holds the write end, and exec must not
	// copy through goroutines of its own.
	var inR, outW, errW *os.File
	closeAll := func() {
		for _, f := range []*os.File{inR, stdin, stdout, outW, stderr, errW} {
			if f != nil {
				_ = f.Close()
			}
		}
	}
	if inR, stdin, err = os.Pipe(); err == nil {
		if stdout, outW, err = os.Pipe(); err == nil {
			stderr, errW, err = os.Pipe()
		}
	}
	if err != nil {
		closeAll()
		return nil, nil, nil, err
	}
	argv := c.u.argv
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = c.u.env
	cmd.Stdin, cmd.Stdout, cmd.Stderr = inR, outW, errW
	// A group of its own: ending the child ends whatever it started too.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err = cmd.Start(); err != nil {
		closeAll()
		return nil, nil, nil, err
	}
	_ = inR.Close()
	_ = outW.Close()
	_ = errW.Close()
	c.started = time.Now()
	c.pid.Store(int64(cmd.Process.Pid))
	c.u.wg.Add(1)
	go func() {
		defer c.u.wg.Done()
		_ = cmd.Wait()
		close(c.exited)
		// The leader is gone; so must be the rest of its group, whose
		// members would otherwise keep the pipes (and resources) open.
		killGroup(cmd.Process.Pid, syscall.SIGKILL)
		c.endOnce()
		// Whatever escaped the group may hold the pipes: cut them.
		time.AfterFunc(killGrace, func() {
			_ = stdout.SetReadDeadline(time.Now())
			_ = stderr.SetReadDeadline(time.Now())
		})
	}()
	return stdin, stdout, stderr, nil
}

// releaseFDs gives n of the child's descriptors back to the budget (all
// it holds when n < 0).
func (c *child) releaseFDs(n int64) {
	if c.u.fds == nil {
		return
	}
	if n < 0 {
		n = c.fds.Swap(0)
	} else {
		c.fds.Add(-n)
	}
	c.u.fds.Release(fdbudget.Stdio, int(n))
}

func killGroup(pid int, sig syscall.Signal) {
	if pid > 0 {
		_ = syscall.Kill(-pid, sig)
	}
}

func (c *child) endOnce() { c.stopOnce.Do(func() { close(c.stop) }) }

// end stops the child on purpose (its session left, the upstream closes,
// or its slot is needed): SIGTERM to the group, SIGKILL after a grace.
// Calls still on it end silently. It does not block.
func (c *child) end(sig syscall.Signal) {
	c.ending.Store(true)
	c.endOnce()
	pid := c.PID()
	if pid == 0 {
		return // not started yet: run sees stop and the start fails or exits
	}
	select {
	case <-c.exited:
		return
	default:
	}
	killGroup(pid, sig)
	if sig != syscall.SIGKILL {
		time.AfterFunc(killGrace, func() {
			select {
			case <-c.exited:
			default:
				killGroup(pid, syscall.SIGKILL)
			}
		})
	}
}

// submit hands messages to the child, all or none: the requests among them
// are registered first, so a reply can never beat its call. It never
// blocks: a full queue is upstream.ErrBusy.
func (c *child) submit(outs []pool.Out) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.dead {
		return upstream.ErrClosed
	}
	if cap(c.in)-len(c.in) < len(outs) {
		return upstream.ErrBusy
	}
	for _, o := range outs {
		if o.Call != nil {
			o.Call.Worker = c
			c.table.Add(o.Call, c.u.timeout, c.u.onTimeout)
			c.u.st.Request()
		}
		c.in <- o.Msg // cannot block: room checked under c.mu
	}
	return nil
}

// trySend queues a message of the gateway's own (a cancellation, a refusal),
// dropping it if the child is gone or its queue is full. msg is copied.
func (c *child) trySend(msg []byte) {
	buf := append(upstream.GetBuffer(len(msg))[:0], msg...)
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.dead {
		select {
		case c.in <- buf:
			return
		default:
		}
	}
	upstream.PutBuffer(buf)
}

// die runs once the process is gone (or never started): the requests still
// on it are answered -32603, a session it served is failed with 1011, and
// its slot goes back to the pool, which replaces it.
func (c *child) die() {
	c.mu.Lock()
	if c.dead {
		c.mu.Unlock()
		return
	}
	c.dead = true
	c.mu.Unlock()
	c.endOnce()
	// The process is reaped (its pidfd closed) and stdout closed; stdin
	// and stderr close as their loops see the end.
	c.releaseFDs(-1)
	failed := !c.ending.Load()
	c.u.release(c, failed && (c.startErr != nil || (!c.spoke.Load() && time.Since(c.started) < healthyAfter)))
	calls := c.table.TakeAll()
	if failed {
		c.u.st.Error("worker_died")
		c.u.log.Warn("worker died", "upstream", c.u.name, "pid", c.PID(), "in_flight", len(calls))
	}
	for _, call := range calls {
		call.Died()
	}
	if rt := c.routing.Load(); rt != nil && rt.Session != nil && failed {
		rt.Session.Fail(1011, pool.MsgWorkerDied)
	}
}

// writeLoop feeds stdin from the queue, one message per line, flushing when
// the queue is empty so bursts share a write.
func (c *child) writeLoop(w *os.File) {
	defer c.u.wg.Done()
	defer c.recoverLoop()
	bw := bufio.NewWriterSize(w, 64<<10)
	var werr error
	for {
		select {
		case msg := <-c.in:
			if werr == nil {
				// Newline-delimited: JSON whitespace may hold line breaks
				// (never a string), so they become spaces.
				for i := bytes.IndexAny(msg, "\r\n"); i >= 0; i = bytes.IndexAny(msg, "\r\n") {
					msg[i] = ' '
				}
				_, werr = bw.Write(msg)
				if werr == nil {
					werr = bw.WriteByte('\n')
				}
				if werr == nil && len(c.in) == 0 {
					werr = bw.Flush()
				}
			}
			upstream.PutBuffer(msg)
		case <-c.stop:
			_ = w.Close() // EOF on stdin: well-behaved servers exit
			for {
				select {
				case msg := <-c.in:
					upstream.PutBuffer(msg)
				default:
					return
				}
			}
		}
	}
}

// readLoop routes each line the child writes on stdout.
func (c *child) readLoop(r io.Reader) {
	defer c.recoverLoop()
	br := bufio.NewReaderSize(r, 64<<10)
	var long []byte // a line longer than the reader's buffer
	tooLong := false
	scratch := make([]byte, 0, 4096)
	for {
		chunk, err := br.ReadSlice('\n')
		if err == bufio.ErrBufferFull {
			if !tooLong && len(long)+len(chunk) <= maxLine {
				long = append(long, chunk...)
			} else {
				tooLong, long = true, nil
			}
			continue
		}
		line := chunk
		if long != nil {
			line = append(long, chunk...)
		}
		if tooLong {
			c.u.st.Error("oversize")
		} else if line = bytes.TrimSpace(line); len(line) > 0 {
			c.spoke.Store(true)
			scratch = c.route(scratch, line)
		}
		long, tooLong = nil, false
		if err != nil {
			if !errors.Is(err, io.EOF) && !errors.Is(err, os.ErrDeadlineExceeded) && !errors.Is(err, os.ErrClosed) {
				c.u.log.Debug("worker stdout", "upstream", c.u.name, "pid", c.PID(), "err", err)
			}
			return
		}
	}
}

// route hands one line of the child to its routing (nothing before it has
// a role) and returns the scratch buffer to reuse. A panic is the line's
// alone (SPEC 10): it is counted and logged, the child's session (if it
// has one) is closed with 1011, and on a shared child the line is dropped
// (a request it answered times out); the reader goes on with the next
// line. (pool.Routing.FromWorker recovers what happens while routing.)
func (c *child) route(scratch, line []byte) (reuse []byte) {
	rt := c.routing.Load()
	if rt == nil {
		return scratch
	}
	defer func() {
		if p := recover(); p != nil {
			fault.Recovered(c.u.st.Metrics(), c.u.log, fault.SiteUpstream, p)
			if rt.Session != nil {
				rt.Session.Fail(fault.Code, fault.Reason)
			}
			reuse = make([]byte, 0, 4096)
		}
	}()
	fault.Hit("stdio.line")
	scratch = rt.FromWorker(scratch, line)
	if cap(scratch) > 1<<20 {
		scratch = make([]byte, 0, 4096)
	}
	return scratch
}

// recoverLoop is deferred by the child's I/O goroutines: a panic there is
// counted and logged, and the child is killed, so that it is replaced and
// those it served learn of it as of any death (-32603 for the requests in
// flight, 1011 for its session).
func (c *child) recoverLoop() {
	if p := recover(); p != nil {
		fault.Recovered(c.u.st.Metrics(), c.u.log, fault.SiteUpstream, p)
		if pid := c.PID(); pid != 0 {
			killGroup(pid, syscall.SIGKILL)
		}
	}
}

// stderrLoop copies the child's stderr to the log, one record per line,
// at most stderrBurst lines at once and stderrRate per second after that:
// a chatty child must not flood the gateway's log.
func (c *child) stderrLoop(r *os.File) {
	defer c.u.wg.Done()
	defer r.Close()
	defer c.recoverLoop()
	const stderrRate, stderrBurst = 50.0, 200.0
	br := bufio.NewReaderSize(r, 4096)
	pid := c.PID()
	tokens, last := stderrBurst, time.Now()
	dropped := 0
	for {
		line, err := br.ReadSlice('\n')
		if l := bytes.TrimRight(line, "\r\n"); len(l) > 0 {
			now := time.Now()
			tokens = min(stderrBurst, tokens+now.Sub(last).Seconds()*stderrRate)
			last = now
			if tokens >= 1 {
				tokens--
				if dropped > 0 {
					c.u.log.Warn("worker stderr lines dropped", "upstream", c.u.name, "pid", pid, "count", dropped)
					dropped = 0
				}
				c.u.log.Info("worker stderr", "upstream", c.u.name, "pid", pid, "line", string(l))
			} else {
				dropped++
			}
		}
		if err != nil && err != bufio.ErrBufferFull {
			return
		}
	}
}
