package reactor

import (
	"sync/atomic"
	"time"
)

// logSampler lets one log line through per interval, across every loop,
// and counts the ones it held back: a flood of denials (a subject over its
// limit sends thousands of requests a second) must not become a flood of
// log lines, yet the operator sees that it happens, who, and how often.
type logSampler struct {
	every   int64        // clock.Now nanoseconds between two lines
	next    atomic.Int64 // clock.Now at which the next line may go
	dropped atomic.Int64 // lines held back since the last one
}

// denialLogEvery is the per-subject denial log's rate: one line a second.
const denialLogEvery = time.Second

// allow reports whether a line may be written now, and how many were held
// back before it (to be logged with it).
func (l *logSampler) allow(now int64) (bool, int64) {
	n := l.next.Load()
	if now < n || !l.next.CompareAndSwap(n, now+l.every) {
		l.dropped.Add(1)
		return false, 0
	}
	return true, l.dropped.Swap(0)
}
