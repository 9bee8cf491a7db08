package frame

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// Large message buffers live outside the Go heap (SPEC 10, issue 15). A
// partly received message is held for as long as its client takes to send
// the rest, and the garbage collector lets the heap grow to twice what is
// live before it collects: 100 clients each holding 256 KiB made the heap
// hold twice their 25 MiB, and the RSS kept it after they left until a
// collection that an idle gateway never starts. A buffer of offMin bytes
// or more is mapped instead (only the pages its bytes reach cost RSS, a
// page at most more than the budget reserved) and unmapped the moment the
// Reader drops it, so the memory is the operating system's again at once.
//
// The contract of Event.Payload makes this safe: a message in the buffer
// is valid only until the next Next, Release or Free, and the reactor
// copies what it keeps (the request it relays, a close reason) before it
// calls Release. A buffer that could not be mapped comes from the heap.
const offMin = 64 << 10

var pageSize = unix.Getpagesize()

// allocBuf returns a buffer of length n and capacity c, and where its
// mapping starts (0: on the heap; give a mapping back with freeBuf).
func allocBuf(n, c int) ([]byte, uintptr) {
	if c < offMin {
		return make([]byte, n, c), 0
	}
	size := mapSize(c)
	p, err := unix.MmapPtr(-1, 0, nil, uintptr(size), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return make([]byte, n, c), 0
	}
	return unsafe.Slice((*byte)(p), size)[:n:c], uintptr(p)
}

// freeBuf unmaps the mapping of a buffer of capacity c made by allocBuf at
// base. Nothing may use the buffer afterwards.
func freeBuf(base uintptr, c int) {
	_, _, _ = unix.Syscall(unix.SYS_MUNMAP, base, uintptr(mapSize(c)), 0)
}

func mapSize(c int) int { return (c + pageSize - 1) &^ (pageSize - 1) }
