package bench

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gobwas/ws"
)

// engine drives the connections of one process: global indices
// [first, first+n) of a run of total connections.
type engine struct {
	o            *Options
	t            *target
	first, n     int
	total        int
	connectStart time.Time // shared by all processes, so --ramp holds for the whole run

	conns []*wsConn // by local index; nil when it failed (or in connect mode)
	dead  []atomic.Bool

	hists map[string]*recorder
	errs  errorCounts

	attempted, established, lost atomic.Int64
	sent, completed, notices     atomic.Int64

	closing     atomic.Bool
	readers     sync.WaitGroup
	connectSecs float64
	runCPU      float64 // this process's CPU seconds during run

	// ev is the event-loop engine (evloop_linux.go) when it runs the call
	// phase: plaintext targets on Linux. Otherwise (wss://, other systems,
	// GATEWAY_BENCH_ENGINE=goroutine) each connection has a reader
	// goroutine and the pacers call send.
	useEv bool
	ev    *evEngine

	callHead, callTail []byte
	closedLoop         bool
	phase              atomic.Pointer[callPhase] // nil until the call phase starts
}

// callPhase is published atomically because reader goroutines, started while
// connecting, consult it.
type callPhase struct {
	start, end int64 // mono ns
	perSec     []atomic.Int64
	stopped    atomic.Bool // interrupted: send nothing more
}

func newEngine(o *Options, t *target, first, n, total int, connectStart time.Time) *engine {
	e := &engine{
		o: o, t: t, first: first, n: n, total: total, connectStart: connectStart,
		conns:      make([]*wsConn, n),
		dead:       make([]atomic.Bool, n),
		hists:      make(map[string]*recorder),
		closedLoop: o.Rate == 0,
		useEv:      useEvLoop(o, t),
	}
	for _, name := range histNames {
		e.hists[name] = newRecorder(16)
	}
	e.callHead = []byte(`{"jsonrpc":"2.0","id":`)
	e.callTail = []byte(`,"method":"tools/call","params":{"name":"` + o.Tool +
		`","arguments":{"message":"` + strings.Repeat("x", o.MessageSize) + `"}}}`)
	return e
}

// engineEnv forces an engine: "goroutine" (the portable one, for
// comparison) or "epoll" (the default where it is supported). Workers
// inherit it with the environment.
const engineEnv = "GATEWAY_BENCH_ENGINE"

// useEvLoop says whether the event-loop engine runs the call phase: it
// takes raw sockets, so not for TLS, and exists on Linux only.
func useEvLoop(o *Options, t *target) bool {
	return evLoopSupported && o.Mode == ModeCall && t.url.Scheme == "ws" && os.Getenv(engineEnv) != "goroutine"
}

// engineName is reported with the generator's CPU figures.
func (e *engine) engineName() string {
	if e.ev != nil {
		return "epoll"
	}
	return "goroutine"
}

func sinceUS(t time.Time) int64 { return int64(time.Since(t) / time.Microsecond) }

// sleepUntil waits for t or ctx; it reports whether t was reached.
func sleepUntil(ctx context.Context, t time.Time) bool {
	d := time.Until(t)
	if d <= 0 {
		return ctx.Err() == nil
	}
	tm := time.NewTimer(d)
	defer tm.Stop()
	select {
	case <-tm.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// connect opens every connection of this process: at most --dial-concurrency
// at once and, with --ramp, each at its due time in the run-wide ramp.
func (e *engine) connect(ctx context.Context) {
	if e.useEv {
		// The loops start now: each connection is handed over as soon as
		// it is initialized, so that pings are answered and closes counted
		// while the others connect and settle.
		if ev, err := newEvEngine(e, min(e.o.Pacers, max(e.n, 1))); err == nil {
			e.ev = ev
		} else {
			fmt.Fprintf(os.Stderr, "gateway bench: event loop unavailable (%v); using goroutines\n", err)
		}
	}
	sem := make(chan struct{}, e.o.DialConcurrency)
	var wg sync.WaitGroup
	start := time.Now()
	if e.o.Mode == ModeConnect {
		// Connect mode measures this phase: the generator's own CPU over
		// it says whether the client (its TLS handshakes) was the limit.
		cpu0, _ := processCPUSecs()
		defer func() {
			cpu1, _ := processCPUSecs()
			e.runCPU = cpu1 - cpu0
		}()
	}
dial:
	for i := range e.n {
		g := e.first + i
		if e.o.Ramp > 0 {
			at := e.connectStart.Add(time.Duration(float64(g) * 1e9 / e.o.Ramp))
			if !sleepUntil(ctx, at) {
				break
			}
		}
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			break dial
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			e.open(ctx, i, g)
			<-sem
		}()
	}
	wg.Wait()
	e.connectSecs = time.Since(start).Seconds()
}

// open runs one connection's connect, auth and initialize phases.
func (e *engine) open(ctx context.Context, i, g int) {
	e.attempted.Add(1)
	t0 := time.Now()
	c, err := dialWS(ctx, e.o, e.t, g)
	if err != nil {
		e.errs.add(errKind("connect", err), 1)
		return
	}
	e.hists[hConnect].record(g, sinceUS(t0))
	if e.o.Auth == "message" {
		t1 := time.Now()
		if err := c.authenticate(e.o.Token, e.o.Timeout); err != nil {
			e.errs.add(errKind("auth", err), 1)
			c.nc.Close()
			return
		}
		e.hists[hAuth].record(g, sinceUS(t1))
	}
	if !e.o.NoInit {
		t2 := time.Now()
		n, err := c.initialize(e.o.ProtocolVersion, e.o.Timeout)
		e.notices.Add(n)
		if err != nil {
			e.errs.add(errKind("initialize", err), 1)
			c.nc.Close()
			return
		}
		e.hists[hInit].record(g, sinceUS(t2))
	}
	if e.ev != nil {
		if err := e.ev.adopt(i, c); err != nil {
			e.errs.add(errKind("connect", err), 1)
			c.nc.Close()
			return
		}
		e.established.Add(1)
		return
	}
	e.established.Add(1)
	if e.o.Mode == ModeConnect {
		c.closeGracefully(200 * time.Millisecond)
		return
	}
	c.pending = make(map[int64]int64, 4)
	e.conns[i] = c
	e.readers.Add(1)
	go e.readLoop(i, c)
}

// readLoop reads one connection until it closes: answers pings, matches
// call responses, and counts a loss unless the run is closing it.
func (e *engine) readLoop(i int, c *wsConn) {
	defer e.readers.Done()
	for {
		op, p, err := c.readMessage()
		if err != nil {
			e.dead[i].Store(true)
			if e.closing.Load() {
				return
			}
			e.lost.Add(1)
			e.errs.add(errKind("hold", err), 1)
			c.pmu.Lock()
			n := len(c.pending)
			clear(c.pending)
			c.pmu.Unlock()
			e.errs.add("call/lost in flight", int64(n))
			c.nc.Close()
			return
		}
		if op != ws.OpText {
			e.errs.add("hold/binary message", 1)
			continue
		}
		e.onMessage(i, c, p)
	}
}

// onMessage handles one text message received after initialize.
func (e *engine) onMessage(i int, c *wsConn, p []byte) {
	now := mono()
	answered := e.account(c.idx, p, now, func(id int64) (int64, bool, int64) {
		c.pmu.Lock()
		defer c.pmu.Unlock()
		at, ok := c.pending[id]
		if ok {
			delete(c.pending, id)
		}
		return at, ok, c.nextID
	})
	if ph := e.phase.Load(); answered && e.closedLoop && ph != nil && now < ph.end && !ph.stopped.Load() {
		e.send(i, c, mono())
	}
}

// account classifies one server message received at now by connection idx
// and counts it. take removes call id from the connection's pending calls,
// returning its due time, whether it was pending, and the highest id sent.
// It reports whether the message answered a pending call (in closed loop the
// connection then sends the next one). Both engines count through it.
func (e *engine) account(idx int, p []byte, now int64, take func(id int64) (at int64, ok bool, next int64)) bool {
	r, err := scanResponse(p)
	if err != nil {
		e.errs.add("call/bad response", 1)
		return false
	}
	if r.hasMethod || !r.hasID {
		e.notices.Add(1)
		return false
	}
	if !r.idNumeric {
		e.errs.add("call/mismatched id", 1)
		return false
	}
	at, ok, next := take(r.id)
	switch {
	case !ok && r.id >= 1 && r.id <= next:
		e.errs.add("call/late answer", 1) // already counted as a timeout
		return false
	case !ok:
		e.errs.add("call/mismatched id", 1)
		return false
	case r.isError:
		e.errs.add("call/"+rpcKind(r.errCode), 1)
	case !r.hasResult:
		e.errs.add("call/bad response", 1)
	default:
		e.completed.Add(1)
		e.hists[hCall].record(idx, (now-at)/1000)
		if ph := e.phase.Load(); ph != nil {
			if s := (now - ph.start) / 1e9; s >= 0 && s < int64(len(ph.perSec)) {
				ph.perSec[s].Add(1)
			}
		}
	}
	return true
}

// send issues one call due at `at` (mono ns).
func (e *engine) send(i int, c *wsConn, at int64) {
	if e.dead[i].Load() {
		return
	}
	if !e.closedLoop {
		e.hists[hLag].record(c.idx, (mono()-at)/1000)
	}
	c.pmu.Lock()
	c.nextID++
	id := c.nextID
	c.pending[id] = at
	c.pmu.Unlock()
	e.sent.Add(1)
	if err := c.writeCall(id, e.callHead, e.callTail); err != nil {
		c.pmu.Lock()
		delete(c.pending, id)
		c.pmu.Unlock()
		if !e.closing.Load() && !e.dead[i].Swap(true) {
			e.errs.add(errKind("call", err), 1)
		}
	}
}

// run is the phase after connecting: nothing (connect), a hold (idle), or
// the calls (call), starting at the shared instant start.
func (e *engine) run(ctx context.Context, start time.Time) {
	end := start.Add(e.o.Duration)
	switch e.o.Mode {
	case ModeConnect:
		return
	case ModeIdle:
		sleepUntil(ctx, end)
		return
	}
	cpu0, _ := processCPUSecs()
	defer func() {
		cpu1, _ := processCPUSecs()
		e.runCPU = cpu1 - cpu0
	}()
	ph := &callPhase{start: monoAt(start)}
	ph.end = ph.start + int64(e.o.Duration)
	ph.perSec = make([]atomic.Int64, int((e.o.Duration+time.Second-1)/time.Second))
	e.phase.Store(ph)
	defer context.AfterFunc(ctx, func() { ph.stopped.Store(true) })()
	stopSweep := make(chan struct{})
	sweepDone := make(chan struct{})
	if e.ev != nil {
		close(sweepDone) // the loops sweep their own connections
		e.ev.run(ctx, ph, start, end)
	} else {
		var live []int
		for i, c := range e.conns {
			if c != nil && !e.dead[i].Load() {
				live = append(live, i)
			}
		}
		go e.sweep(ph, stopSweep, sweepDone)
		if e.closedLoop {
			if sleepUntil(ctx, start) {
				for _, i := range live {
					for range e.o.Inflight {
						e.send(i, e.conns[i], mono())
					}
				}
				sleepUntil(ctx, end)
			}
		} else {
			e.runPacers(ph, live, &ph.stopped)
		}
	}
	// Drain: answers to calls already sent still count, up to --timeout
	// (half a second when interrupted).
	drain := e.o.Timeout
	if ctx.Err() != nil {
		drain = min(drain, 500*time.Millisecond)
	}
	for drainEnd := time.Now().Add(drain); time.Now().Before(drainEnd) && e.inFlight() > 0; {
		time.Sleep(5 * time.Millisecond)
	}
	close(stopSweep)
	<-sweepDone
	kind := "call/timeout"
	if ctx.Err() != nil {
		kind = "call/unanswered at interruption"
	}
	e.errs.add(kind, int64(e.clearPending()))
}

// clearPending forgets the calls still unanswered and returns how many there
// were; an answer arriving later is then a "late answer", not a second error.
func (e *engine) clearPending() int {
	if e.ev != nil {
		return e.ev.clearPending()
	}
	n := 0
	for _, c := range e.conns {
		if c != nil {
			c.pmu.Lock()
			n += len(c.pending)
			clear(c.pending)
			c.pmu.Unlock()
		}
	}
	return n
}

// runPacers splits the live connections over --pacers sending threads.
func (e *engine) runPacers(ph *callPhase, live []int, stop *atomic.Bool) {
	p := min(e.o.Pacers, max(len(live), 1))
	// A pacer wakes from nanosleep needing a P; when the readers hold every
	// P it waits for one, and that wait is counted as latency. One spare P
	// per pacer (unless the user set GOMAXPROCS) keeps that wait short.
	if os.Getenv("GOMAXPROCS") == "" {
		defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(runtime.NumCPU() + p))
	}
	groups := make([][]int, p)
	for k, i := range live {
		groups[k%p] = append(groups[k%p], i)
	}
	var wg sync.WaitGroup
	for _, grp := range groups {
		idx := make([]int, len(grp))
		for k, i := range grp {
			idx[k] = e.first + i
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			pace(idx, e.total, e.o.Rate, ph.start, ph.end, stop, func(pos int, at int64) {
				i := grp[pos]
				e.send(i, e.conns[i], at)
			})
		}()
	}
	wg.Wait()
}

func (e *engine) inFlight() int {
	if e.ev != nil {
		return e.ev.inFlight()
	}
	n := 0
	for _, c := range e.conns {
		if c != nil {
			c.pmu.Lock()
			n += len(c.pending)
			c.pmu.Unlock()
		}
	}
	return n
}

// sweep expires calls older than --timeout; in closed loop each expired
// call is replaced so that the connection keeps its --inflight.
func (e *engine) sweep(ph *callPhase, stop <-chan struct{}, done chan<- struct{}) {
	defer close(done)
	tk := time.NewTicker(100 * time.Millisecond)
	defer tk.Stop()
	for {
		select {
		case <-stop:
			return
		case <-tk.C:
		}
		now := mono()
		limit := int64(e.o.Timeout)
		for i, c := range e.conns {
			if c == nil {
				continue
			}
			expired := 0
			c.pmu.Lock()
			for id, at := range c.pending {
				if now-at > limit {
					delete(c.pending, id)
					expired++
				}
			}
			c.pmu.Unlock()
			if expired == 0 {
				continue
			}
			e.errs.add("call/timeout", int64(expired))
			if e.closedLoop && now < ph.end && !ph.stopped.Load() {
				for range expired {
					e.send(i, c, mono())
				}
			}
		}
	}
}

// finish closes every connection and returns what this process measured.
func (e *engine) finish() *Partial {
	e.closing.Store(true)
	if e.ev != nil {
		e.ev.close()
	}
	for _, c := range e.conns {
		if c != nil {
			c.closeNow()
		}
	}
	done := make(chan struct{})
	go func() { e.readers.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
	}
	p := &Partial{
		Attempted:   e.attempted.Load(),
		Established: e.established.Load(),
		Lost:        e.lost.Load(),
		Sent:        e.sent.Load(),
		Completed:   e.completed.Load(),
		Notices:     e.notices.Load(),
		ConnectSecs: e.connectSecs,
		CPUSecs:     e.runCPU,
		Engine:      e.engineName(),
		Errors:      e.errs.snapshot(),
		Hists:       make(map[string]Hist),
	}
	for name, r := range e.hists {
		if h := r.merged(); h.TotalCount() > 0 {
			p.Hists[name] = Hist{h}
		}
	}
	if ph := e.phase.Load(); ph != nil {
		p.PerSecond = make([]int64, len(ph.perSec))
		for i := range ph.perSec {
			p.PerSecond[i] = ph.perSec[i].Load()
		}
	}
	return p
}

// live returns the counters for the progress line.
func (e *engine) live() liveCounts {
	return liveCounts{
		Attempted:   e.attempted.Load(),
		Established: e.established.Load(),
		Sent:        e.sent.Load(),
		Completed:   e.completed.Load(),
		Errors:      e.errs.total(),
	}
}

// liveCounts are the running totals shown on the progress line.
type liveCounts struct {
	Attempted   int64 `json:"attempted"`
	Established int64 `json:"established"`
	Sent        int64 `json:"sent"`
	Completed   int64 `json:"completed"`
	Errors      int64 `json:"errors"`
}

func (l *liveCounts) add(o liveCounts) {
	l.Attempted += o.Attempted
	l.Established += o.Established
	l.Sent += o.Sent
	l.Completed += o.Completed
	l.Errors += o.Errors
}
