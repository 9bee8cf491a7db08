package upstream

import (
	"runtime"
	"sync"
	"testing"
)

func TestGetBufferSizes(t *testing.T) {
	for _, tt := range []struct{ n, cap int }{
		{-1, 512}, {0, 512}, {1, 512}, {512, 512}, {513, 1024}, {4000, 4096},
		{1 << 20, 1 << 20}, {1<<20 + 1, 1<<20 + 1},
	} {
		b := GetBuffer(tt.n)
		want := max(tt.n, 0)
		if len(b) != want || cap(b) != tt.cap {
			t.Errorf("GetBuffer(%d): len %d cap %d, want %d %d", tt.n, len(b), cap(b), want, tt.cap)
		}
		PutBuffer(b)
	}
	PutBuffer(nil)
	PutBuffer(make([]byte, 10, 700)) // not a class: dropped, no panic
}

func TestBufferReuse(t *testing.T) {
	// Reuse is not guaranteed by sync.Pool; check what comes back is sound.
	for i := 0; i < 1000; i++ {
		b := GetBuffer(1000)
		for j := range b {
			b[j] = byte(i)
		}
		PutBuffer(b[:10]) // any length: the capacity decides the class
	}
	b := GetBuffer(1024)
	if len(b) != 1024 || cap(b) != 1024 {
		t.Fatalf("len %d cap %d", len(b), cap(b))
	}
}

func TestBufferConcurrentGC(t *testing.T) {
	var wg sync.WaitGroup
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; i < 2000; i++ {
				n := 1 << (9 + (i+g)%12)
				b := GetBuffer(n)
				b[0], b[n-1] = byte(g), byte(i)
				if i%500 == 0 {
					runtime.GC()
				}
				if b[0] != byte(g) || b[n-1] != byte(i) {
					t.Error("buffer shared between goroutines")
					return
				}
				PutBuffer(b)
			}
		}(g)
	}
	wg.Wait()
}

func TestBufferAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("sync.Pool drops items under the race detector")
	}
	PutBuffer(GetBuffer(2048))
	n := testing.AllocsPerRun(1000, func() { PutBuffer(GetBuffer(2000)) })
	if n > 0.01 {
		t.Fatalf("Get/Put allocates %v times", n)
	}
}

func BenchmarkGetPutBuffer(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		PutBuffer(GetBuffer(1500))
	}
}
