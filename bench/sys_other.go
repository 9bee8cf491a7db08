//go:build !linux

package bench

import (
	"syscall"
	"time"
)

func bindNoPort(network, address string, c syscall.RawConn) error { return nil }

func lockPacerThread() {}

func preciseSleep(d time.Duration) { time.Sleep(d) }

// processCPUSecs is not measured here: no generator CPU figure.
func processCPUSecs() (float64, bool) { return 0, false }
