package ratelimit

import (
	"math/rand/v2"
	"testing"
	"time"
)

// Add records events whatever the limit; Count holds every event of the
// last W (and at most one bucket, W/15, more; with units of several
// messages, each bucket rounded up to whole units); Buckets gives them back by
// bucket, each ending after its events and at most W/15 after them, and
// together they are Count. Checked against the raw event times, for small
// limits (unit 1) and large ones (units of many messages).
func TestWindowRecord(t *testing.T) {
	for _, limit := range []int{100, 1000, 200000} {
		const W = int64(2 * time.Second)
		b := bucketLen(W)
		rng := rand.New(rand.NewPCG(uint64(limit), 7))
		var w Window
		var at []int64
		now := int64(1) << 40
		for range 3000 {
			now += rng.Int64N(W / 50)
			n := 1 + rng.IntN(5)
			w.Add(now, n, limit, W)
			for range n {
				at = append(at, now)
			}
			inW, inSpan := 0, 0
			for _, x := range at {
				if x > now-W {
					inW++
				}
				if x/b >= now/b-subWindows {
					inSpan++
				}
			}
			got := w.Count(now, limit, W)
			u := unitOf(limit)
			if got < inW || got > inSpan+Slots*(u-1) { // each bucket rounds up to whole units
				t.Fatalf("limit %d: Count %d; %d events in the last W, %d in the span", limit, got, inW, inSpan)
			}
			sum := 0
			w.Buckets(now, limit, W, func(end int64, k int) {
				sum += k
				if end <= now-W-b {
					t.Fatalf("limit %d: a bucket ending %v before now is past the span", limit, time.Duration(now-end))
				}
			})
			if sum != got {
				t.Fatalf("limit %d: Buckets sum to %d, Count %d", limit, sum, got)
			}
		}
		// Every event recorded at or before a bucket's end: a bucket
		// ending at e holds no event after e.
		var late int
		w.Buckets(now, limit, W, func(end int64, k int) {
			if end < now-W && k > 0 {
				for _, x := range at {
					if x >= end && x/b == end/b-1 {
						late++
					}
				}
			}
		})
		if late > 0 {
			t.Fatalf("limit %d: %d events after their bucket's end", limit, late)
		}
	}
}

// Add saturates a bucket rather than wrap, and a window that Add filled
// refuses AllowN as if it had admitted them.
func TestWindowAddSaturates(t *testing.T) {
	var w Window
	const W = int64(time.Second)
	w.Add(0, 1<<20, 100, W)
	if c := w.Count(0, 100, W); c != maxCount {
		t.Fatalf("Count after a saturating Add: %d, want %d", c, maxCount)
	}
	var v Window
	v.Add(0, 100, 100, W)
	if ok, _ := v.AllowN(1, 1, 100, W); ok {
		t.Fatal("a window filled by Add admitted one more")
	}
	if ok, _ := v.AllowN(Slots*bucketLen(W), 100, 100, W); !ok {
		t.Fatal("a window filled by Add refused once its bucket left the span")
	}
}
