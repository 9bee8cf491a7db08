//go:build unix

package config

import "syscall"

// softNOFILE returns the soft limit on open files of this process.
func softNOFILE() (uint64, bool) {
	var r syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &r); err != nil {
		return 0, false
	}
	return uint64(r.Cur), true
}
