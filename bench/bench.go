// Package bench is the load generator behind `gateway bench` (SPEC 7).
package bench

import (
	"fmt"
	"io"
)

// Main runs `gateway bench` with its arguments and returns the exit code.
func Main(args []string, stdout, stderr io.Writer) int {
	fmt.Fprintln(stderr, "gateway bench: not built yet")
	return 1
}
