package bench

import (
	"os"
	"testing"
)

// TestMain lets the test binary serve as a worker process: a run split over
// workers re-executes os.Executable(), which under `go test` is this binary.
func TestMain(m *testing.M) {
	if os.Getenv(workerEnv) == "1" {
		os.Exit(Main([]string{"--worker"}, os.Stdout, os.Stderr))
	}
	os.Exit(m.Run())
}
