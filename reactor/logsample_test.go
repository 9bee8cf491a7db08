package reactor

import (
	"sync"
	"testing"
	"time"
)

// TestLogSampler: one line per interval whatever the rate and however many
// goroutines ask, and every held-back line is counted in the next one.
func TestLogSampler(t *testing.T) {
	l := &logSampler{every: int64(time.Second)}
	base := int64(1) << 40
	var mu sync.Mutex
	logged, reported := 0, int64(0)
	var wg sync.WaitGroup
	const perG, gs = 2500, 4
	for g := range gs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range perG {
				// 10 s of calls, spread evenly: 10,000 over 4 goroutines.
				now := base + int64(i*gs+g)*int64(time.Millisecond)
				if ok, held := l.allow(now); ok {
					mu.Lock()
					logged++
					reported += held
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	// The goroutines' clocks interleave, so a line may go a little early
	// or late, but not more than once per second of the span and its end.
	if logged < 5 || logged > 11 {
		t.Fatalf("%d lines for 10 s of denials, want about 10", logged)
	}
	if total := int64(logged) + reported + l.dropped.Load(); total != perG*gs {
		t.Fatalf("logged %d + reported held %d + still held %d = %d, want %d", logged, reported, l.dropped.Load(), total, perG*gs)
	}
}
