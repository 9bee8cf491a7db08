package bench

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"
)

// isTerminal reports whether w is a character device (a terminal): progress
// is drawn there and nowhere else, so pipes and CI logs stay clean.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// progress redraws one status line every 250 ms until stopped.
type progress struct {
	w       io.Writer
	mu      sync.Mutex
	phase   string
	phaseT0 time.Time
	phaseD  time.Duration // length of a timed phase; 0 = the bar follows connections
	t0      time.Time
	stop    chan struct{}
	done    chan struct{}
}

// startProgress draws on w when enabled; otherwise it is a no-op.
func startProgress(w io.Writer, enabled bool, target int, counts func() liveCounts) *progress {
	p := &progress{w: w, t0: time.Now(), stop: make(chan struct{}), done: make(chan struct{})}
	if !enabled {
		close(p.done)
		return p
	}
	go func() {
		defer close(p.done)
		tk := time.NewTicker(250 * time.Millisecond)
		defer tk.Stop()
		var lastDone int64
		last := time.Now()
		for {
			select {
			case <-p.stop:
				fmt.Fprint(p.w, "\r\x1b[K")
				return
			case <-tk.C:
			}
			c := counts()
			now := time.Now()
			rate := float64(c.Completed-lastDone) / now.Sub(last).Seconds()
			lastDone, last = c.Completed, now
			p.mu.Lock()
			phase, frac := p.phase, float64(c.Attempted)/float64(max(target, 1))
			if p.phaseD > 0 {
				frac = float64(now.Sub(p.phaseT0)) / float64(p.phaseD)
			}
			p.mu.Unlock()
			fmt.Fprintf(p.w, "\r\x1b[K%-10s %s %6.1fs  conns %d/%d  calls %d (%.0f/s)  errors %d",
				phase, bar(frac, 20), now.Sub(p.t0).Seconds(), c.Established, target, c.Completed, rate, c.Errors)
		}
	}()
	return p
}

// set names the current phase; d > 0 makes the bar follow its time.
func (p *progress) set(phase string, d time.Duration) {
	p.mu.Lock()
	p.phase, p.phaseT0, p.phaseD = phase, time.Now(), d
	p.mu.Unlock()
}

// bar draws frac (0..1) as [####------].
func bar(frac float64, width int) string {
	n := int(min(max(frac, 0), 1) * float64(width))
	return "[" + strings.Repeat("#", n) + strings.Repeat("-", width-n) + "]"
}

// end erases the line and waits for the drawing goroutine.
func (p *progress) end() {
	select {
	case <-p.done:
		return
	default:
	}
	close(p.stop)
	<-p.done
}
