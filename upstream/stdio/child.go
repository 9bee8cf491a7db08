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

	"github.com/mcpgate/gateway/clock"
	"github.com/mcpgate/gateway/fault"
	"github.com/mcpgate/gateway/fdbudget"
	"github.com/mcpgate/gateway/mcp"
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
	// bootLimit: a child that has said nothing this long after it was
	// started no longer counts as booting (pickShared), whatever it is
	// doing.
	bootLimit = 10 * time.Second
	// maxProbeGrace bounds how long a worker suspected of hanging has to
	// answer the gateway's ping (at most request_timeout).
	maxProbeGrace = 5 * time.Second
	// maxStallAfter: a child with requests in flight that has said nothing
	// for this long (or request_timeout, if shorter) is stalled: busy with
	// something long, or hung; no candidate for more (pickShared).
	maxStallAfter = time.Second
	// busyAfter: a shared child counts as busy (the pool grows rather than
	// give it more) once it has had requests in flight without a break
	// for this long; two quick requests that overlap do not make it busy.
	busyAfter = 100 * time.Millisecond
	// writeChunk is how much of the queue one write to stdin takes.
	writeChunk = 64 << 10
)

// The gateway's own ping to a worker (MCP allows it at any time, before
// initialize too): sent when a child starts, so that a warm child is known
// to have booted once it answers, and to a child suspected of hanging. Its
// answer is consumed, never routed.
const (
	probeID  = `"mcpgate-probe"`
	probeMsg = `{"jsonrpc":"2.0","id":` + probeID + `,"method":"ping"}`
)

// child is one worker process. It is used by one role for its whole life
// and never reused after it exits.
type child struct {
	u     *Upstream
	table pool.Table
	in    chan pool.Out // bounded: a full queue is ErrBusy, never a wait
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
	// born is clock.Now when the child was created, heard when it last
	// wrote a line on stdout (born until then).
	born, heard atomic.Int64
	// probes counts the gateway's pings whose answer is still due.
	probes  atomic.Int32
	probing atomic.Bool // a hang check is under way
	// busySince is clock.Now when the table last got its first call.
	busySince atomic.Int64
	hung      atomic.Bool // killed for answering nothing: a failure
	// wdone is closed once the write loop has handed back every message it
	// did not write (or when it never ran).
	wdone    chan struct{}
	pid      atomic.Int64
	started  time.Time
	startErr error
	fds      atomic.Int64 // descriptors held in u.fds (spawnFDs, then childFDs)
}

func newChild(u *Upstream, r role, after <-chan struct{}) *child {
	c := &child{
		u:      u,
		role:   r,
		in:     make(chan pool.Out, u.queue),
		stop:   make(chan struct{}),
		exited: make(chan struct{}),
		wdone:  make(chan struct{}),
		after:  after,
	}
	now := clock.Now()
	c.born.Store(now)
	c.heard.Store(now)
	// The ping goes first, before anything the child is given.
	c.probes.Add(1)
	c.in <- pool.Out{Msg: append(upstream.GetBuffer(len(probeMsg))[:0], probeMsg...)}
	return c
}

// booting reports whether the child may still be starting: it has said
// nothing yet (not even to the ping every child is sent at start), and was
// created less than bootLimit (or request_timeout, if shorter) ago. A
// booting child is no candidate for new requests while a booted one
// exists, and while one boots the pool does not grow (pickShared); a child
// that takes longer (stuck, or stopped while it booted) no longer holds
// the pool back: the requests queued on it would time out anyway.
func (c *child) booting(now int64) bool {
	return !c.spoke.Load() && now-c.born.Load() < int64(min(bootLimit, c.u.timeout))
}

// occupied reports whether the child has had requests in flight without a
// break for busyAfter.
func (c *child) occupied(now int64) bool {
	return c.table.Len() > 0 && now-c.busySince.Load() >= int64(busyAfter)
}

// stalled reports whether the child has requests in flight and has said
// nothing for maxStallAfter (at most request_timeout): whether it is busy
// with long work or hung, more requests would wait behind it.
func (c *child) stalled(now int64) bool {
	return c.table.Len() > 0 && now-c.heard.Load() >= int64(min(maxStallAfter, c.u.timeout))
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
		close(c.wdone)
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
		close(c.wdone)
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
func (c *child) submit(outs []pool.Out) error { return c.put(outs, true) }

// put is submit; count says the requests are new (a retry was counted
// when it first came).
func (c *child) put(outs []pool.Out, count bool) error {
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
			if count {
				c.u.st.Request()
			}
		}
		c.in <- o // cannot block: room checked under c.mu
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
		case c.in <- pool.Out{Msg: buf}:
			return
		default:
		}
	}
	upstream.PutBuffer(buf)
}

// probe pings the child (trySend) and reports whether the ping was queued;
// its answer is consumed by route.
func (c *child) probe() bool {
	buf := append(upstream.GetBuffer(len(probeMsg))[:0], probeMsg...)
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.dead {
		c.probes.Add(1)
		select {
		case c.in <- pool.Out{Msg: buf}:
			return true
		default:
			c.probes.Add(-1)
		}
	}
	upstream.PutBuffer(buf)
	return false
}

// checkHung runs when a request on the child timed out. A child that has
// written nothing on stdout for request_timeout while that request waited
// is pinged; if it answers nothing within the probe grace either (stopped,
// deadlocked, its event loop blocked), it is killed as hung and replaced:
// the requests still on it get -32603, its session (if it has one) is
// failed 1011, as when a worker dies (SPEC 4.4). A child that answers the
// ping is only slow: it stays; so does one that has never said anything
// and started less than bootLimit ago (a slow boot).
func (c *child) checkHung() {
	timeout := c.u.timeout
	if clock.Now()-c.heard.Load() < int64(timeout) || c.isDead() {
		return // it spoke while the request waited
	}
	if !c.probing.CompareAndSwap(false, true) {
		return // a check is under way
	}
	sent := clock.Now()
	c.probe() // a full queue is itself a sign: the check goes on regardless
	time.AfterFunc(min(timeout, maxProbeGrace), func() {
		defer c.probing.Store(false)
		if c.heard.Load() >= sent || c.isDead() || c.ending.Load() {
			return
		}
		if !c.spoke.Load() && clock.Now()-c.born.Load() < int64(bootLimit) {
			return // still booting, slowly: a later timeout looks again
		}
		pid := c.PID()
		c.u.st.Error("worker_hung")
		c.u.log.Warn("worker hung: killed and replaced", "upstream", c.u.name, "pid", pid,
			"silent_for", time.Duration(clock.Now()-c.heard.Load()).String(), "in_flight", c.table.Len())
		c.hung.Store(true)
		killGroup(pid, syscall.SIGKILL)
	})
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
	hung := c.hung.Load()
	failed := !c.ending.Load() || hung
	c.u.release(c, failed && !hung && (c.startErr != nil || (!c.spoke.Load() && time.Since(c.started) < healthyAfter)))
	// What the write loop never wrote is retried elsewhere (request mode)
	// or answered by it; wait for it to have done so (it ends once stdin
	// is closed or broken, so the wait is short; bounded for a pipe a
	// stray process still holds).
	select {
	case <-c.wdone:
	case <-time.After(killGrace):
	}
	calls := c.table.TakeAll()
	if failed && !hung {
		c.u.st.Error("worker_died")
		c.u.log.Warn("worker died", "upstream", c.u.name, "pid", c.PID(), "in_flight", len(calls))
	}
	for _, call := range calls {
		call.Died()
	}
	if rt := c.routing.Load(); rt != nil && rt.Session != nil && failed {
		reason := pool.MsgWorkerDied
		if hung {
			reason = pool.MsgWorkerHung
		}
		rt.Session.Fail(1011, reason)
	}
}

// unsent takes back the messages the write loop could not write (the child
// died, or its stdin broke, before they reached it): a request-mode
// request is retried once on another child (Upstream.retry), a session's
// request is answered as the child's death answers it (-32603). Requests
// already answered (timed out, cancelled, the client left) are dropped.
func (c *child) unsent(outs []pool.Out) {
	rt := c.routing.Load()
	shared := rt != nil && rt.Session == nil
	for _, o := range outs {
		call := o.Call
		if call == nil || c.table.Take(call.GID) != call {
			upstream.PutBuffer(o.Msg)
			continue
		}
		if shared {
			c.u.retry(c, o)
			continue
		}
		call.Died()
		upstream.PutBuffer(o.Msg)
	}
}

// writeLoop feeds stdin from the queue, one message per line; what is
// queued goes in one write (up to writeChunk), so bursts share a write.
// A message counts as having reached the child once the write took all
// of it; the ones that did not (a write failed, or the child ended with
// them queued) go back through unsent when the loop ends. A failed write
// kills the child: a worker that cannot be written to is of no use, and
// its replacement serves the retries.
func (c *child) writeLoop(w *os.File) {
	defer c.u.wg.Done()
	defer close(c.wdone)
	var left []pool.Out // never written
	defer func() { c.unsent(left) }()
	defer c.recoverLoop()
	buf := make([]byte, 0, writeChunk)
	var batch []pool.Out
	var werr error
	for {
		select {
		case o := <-c.in:
			batch = append(batch[:0], o)
			buf = appendLine(buf[:0], o.Msg)
		more:
			for len(buf) < writeChunk {
				select {
				case o := <-c.in:
					batch = append(batch, o)
					buf = appendLine(buf, o.Msg)
				default:
					break more
				}
			}
			n := 0
			if werr == nil {
				if n, werr = w.Write(buf); werr != nil && !c.ending.Load() {
					c.u.log.Debug("worker stdin", "upstream", c.u.name, "pid", c.PID(), "err", werr)
					killGroup(c.PID(), syscall.SIGKILL)
				}
			}
			end := 0
			for i, o := range batch {
				if end += len(o.Msg) + 1; end <= n {
					upstream.PutBuffer(o.Msg)
				} else {
					left = append(left, o)
				}
				batch[i] = pool.Out{}
			}
			if cap(buf) > 4*writeChunk {
				buf = make([]byte, 0, writeChunk)
			}
		case <-c.stop:
			_ = w.Close() // EOF on stdin: well-behaved servers exit
			for {
				select {
				case o := <-c.in:
					left = append(left, o)
				default:
					return
				}
			}
		}
	}
}

// appendLine appends msg and a newline to dst. Newline-delimited: JSON
// whitespace may hold line breaks (never a string), so they become
// spaces.
func appendLine(dst, msg []byte) []byte {
	start := len(dst)
	dst = append(dst, msg...)
	line := dst[start:]
	for i := bytes.IndexAny(line, "\r\n"); i >= 0; i = bytes.IndexAny(line, "\r\n") {
		line[i] = ' '
	}
	return append(dst, '\n')
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
			c.heard.Store(clock.Now())
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
	if c.probes.Load() > 0 && bytes.Contains(line, []byte(probeID)) {
		if env, err := mcp.Scan(line); err == nil && env.Kind == mcp.KindResponse && string(env.ID) == probeID {
			c.probes.Add(-1)
			return scratch // the answer to the gateway's ping
		}
	}
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
