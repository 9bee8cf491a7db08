package upstream

import (
	"math/bits"
	"sync"
	"unsafe"
)

// Size classes are powers of two from 512 B to 1 MiB (the default
// max_message_bytes). Larger buffers are allocated directly and left to the GC:
// pooling them would pin large blocks for rare messages.
const (
	minClassBits = 9  // 512 B
	maxClassBits = 20 // 1 MiB
	numClasses   = maxClassBits - minClassBits + 1
)

// The pools hold the buffers' data pointers, not slices: a pointer stored in
// an interface does not allocate, while a slice header (or a new *[]byte for
// every Put) would, on every message. The class gives the length back.
var pools [numClasses]sync.Pool

func class(n int) int {
	if n <= 1<<minClassBits {
		return 0
	}
	return bits.Len(uint(n-1)) - minClassBits
}

// GetBuffer returns a []byte of length n whose contents are undefined. Its
// capacity is n rounded up to a size class (n up to 1 MiB); larger buffers
// are allocated exactly. Give it back with PutBuffer when done.
func GetBuffer(n int) []byte {
	if n < 0 {
		n = 0
	}
	if n > 1<<maxClassBits {
		return make([]byte, n)
	}
	c := class(n)
	size := 1 << (c + minClassBits)
	if p, ok := pools[c].Get().(unsafe.Pointer); ok {
		return unsafe.Slice((*byte)(p), size)[:n]
	}
	return make([]byte, n, size)
}

// PutBuffer returns b to the pool. Only buffers whose capacity is exactly a
// size class are kept (every buffer from GetBuffer up to 1 MiB); others are
// dropped. b must not be used after the call.
func PutBuffer(b []byte) {
	c := cap(b)
	if c < 1<<minClassBits || c > 1<<maxClassBits || c&(c-1) != 0 {
		return
	}
	pools[class(c)].Put(unsafe.Pointer(unsafe.SliceData(b[:c])))
}
