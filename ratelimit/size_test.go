package ratelimit

import "unsafe"

func unsafeSizeof(w Window) uintptr { return unsafe.Sizeof(w) }
