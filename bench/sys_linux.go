package bench

import (
	"runtime"
	"syscall"
	"time"
)

// ipBindAddressNoPort is IP_BIND_ADDRESS_NO_PORT (linux/in.h): with it, bind()
// to a source address leaves the port to connect(), which then only needs the
// 4-tuple to be unique instead of reserving the port for every destination.
const ipBindAddressNoPort = 24

// prSetTimerslack is PR_SET_TIMERSLACK (linux/prctl.h).
const prSetTimerslack = 29

func bindNoPort(network, address string, c syscall.RawConn) error {
	var serr error
	err := c.Control(func(fd uintptr) {
		serr = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_IP, ipBindAddressNoPort, 1)
	})
	if err != nil {
		return err
	}
	if serr != nil && serr != syscall.ENOPROTOOPT {
		return serr
	}
	return nil
}

// lockPacerThread pins the calling goroutine to its own thread with a 1 ns
// timer slack, so that preciseSleep wakes within tens of microseconds: the Go
// scheduler's timers wake about 1 ms late on this kernel, and every
// microsecond of lateness counts as latency in an open-loop run. The
// goroutine exits still locked, so the runtime discards the altered thread.
func lockPacerThread() {
	runtime.LockOSThread()
	syscall.Syscall(syscall.SYS_PRCTL, prSetTimerslack, 1, 0)
}

// preciseSleep blocks the (locked) thread in nanosleep.
func preciseSleep(d time.Duration) {
	if d <= 0 {
		return
	}
	ts := syscall.NsecToTimespec(int64(d))
	for {
		var rem syscall.Timespec
		if err := syscall.Nanosleep(&ts, &rem); err != syscall.EINTR {
			return
		}
		ts = rem
	}
}

// processCPUSecs is this process's CPU time so far, user + system, all
// threads: the generator's own cost, reported next to the server's.
func processCPUSecs() (float64, bool) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0, false
	}
	return tvSecs(ru.Utime) + tvSecs(ru.Stime), true
}

func tvSecs(tv syscall.Timeval) float64 { return float64(tv.Sec) + float64(tv.Usec)/1e6 }
