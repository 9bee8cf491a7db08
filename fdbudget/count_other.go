//go:build !linux

package fdbudget

import "errors"

var errNoProc = errors.New("fdbudget: no /proc/self/fd")

// Without /proc the budget relies on its tracked counts alone (plus the
// headroom).
func openFDDir() (int, error) { return -1, errNoProc }

func countFDs(int, []byte) (int, error) { return 0, errNoProc }
