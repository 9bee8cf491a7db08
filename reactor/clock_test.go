package reactor

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// Every deadline, window and duration the reactor keeps is on package
// clock's monotonic scale: a wall-clock step must neither close every
// connection as idle nor stretch auth deadlines (clock's
// TestWallStepChangesNothing shows the scale ignores steps). This test
// fails if a wall reading creeps back in as a number.
func TestNoWallClockNumbers(t *testing.T) {
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	bad := regexp.MustCompile(`\.UnixNano\(\)|\.UnixMilli\(\)|time\.Unix\(`)
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for i, line := range strings.Split(string(b), "\n") {
			if code, _, _ := strings.Cut(line, "//"); bad.MatchString(code) {
				t.Errorf("%s:%d reads the wall clock as a number: %s", f, i+1, strings.TrimSpace(line))
			}
		}
	}
}
