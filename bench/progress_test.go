package bench

import (
	"bytes"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
)

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func TestProgressLine(t *testing.T) {
	var out syncBuf
	p := startProgress(&out, true, 10, func() liveCounts { return liveCounts{Attempted: 5, Established: 4, Completed: 7} })
	p.set("calling", time.Second)
	time.Sleep(600 * time.Millisecond)
	p.end()
	p.end() // idempotent
	s := out.b.String()
	if !strings.Contains(s, "\r\x1b[Kcalling") || !strings.Contains(s, "conns 4/10") || !strings.HasSuffix(s, "\r\x1b[K") {
		t.Fatalf("progress output %q", s)
	}
	if bar(0.5, 10) != "[#####-----]" || bar(2, 4) != "[####]" || bar(-1, 2) != "[--]" {
		t.Error("bar")
	}

	var quiet syncBuf
	q := startProgress(&quiet, false, 10, func() liveCounts { return liveCounts{} })
	q.end()
	if quiet.b.Len() != 0 {
		t.Error("disabled progress wrote")
	}
	if isTerminal(&quiet) {
		t.Error("a buffer is no terminal")
	}
	if f, err := os.CreateTemp(t.TempDir(), "x"); err == nil {
		if isTerminal(f) {
			t.Error("a file is no terminal")
		}
		f.Close()
	}
}
