package frame

import "sync/atomic"

// Budget bounds the memory every Reader sharing it holds for partially
// received messages (SPEC 10, limits.max_buffered_bytes). A Reader reserves
// a buffer's whole capacity before it allocates it and gives it back when it
// drops the buffer; a reservation that would pass the maximum fails the
// message with close 1013 "Try again later". It is safe for concurrent use:
// Readers of every event loop share one.
type Budget struct {
	max  int64
	used atomic.Int64
}

// NewBudget returns a budget of max bytes (max > 0).
func NewBudget(max int64) *Budget { return &Budget{max: max} }

// Used is the number of bytes reserved now.
func (b *Budget) Used() int64 { return b.used.Load() }

// Max is the budget's size.
func (b *Budget) Max() int64 { return b.max }

// reserve takes n bytes, or nothing if that would pass the maximum. A nil
// budget has no bound.
func (b *Budget) reserve(n int64) bool {
	if b == nil || n <= 0 {
		return true
	}
	if b.used.Add(n) > b.max {
		b.used.Add(-n)
		return false
	}
	return true
}

func (b *Budget) release(n int64) {
	if b != nil && n > 0 {
		b.used.Add(-n)
	}
}
