package builtin

import (
	"errors"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/mcpgate/gateway/upstream"
)

// fakeSink records what it is given; when gate is set, Deliver signals
// entered and waits on gate.
type fakeSink struct {
	mu      sync.Mutex
	got     []string
	entered chan struct{}
	gate    chan struct{}
}

func (f *fakeSink) Fail(uint16, string) {}
func (f *fakeSink) Subject() string     { return "" }

func (f *fakeSink) Deliver(msg []byte) {
	if f.gate != nil {
		f.entered <- struct{}{}
		<-f.gate
	}
	f.mu.Lock()
	f.got = append(f.got, string(msg)) // copy: msg is only valid during the call
	f.mu.Unlock()
}

func (f *fakeSink) messages() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.got...)
}

func (f *fakeSink) wait(t *testing.T, n int) []string {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if m := f.messages(); len(m) >= n {
			return m
		}
		time.Sleep(time.Millisecond)
	}
	t.Fatalf("got %d messages, want %d", len(f.messages()), n)
	return nil
}

func send(t *testing.T, ss upstream.Session, msg string) error {
	t.Helper()
	b := upstream.GetBuffer(len(msg))
	copy(b, msg)
	err := ss.Send(b)
	if err != nil {
		upstream.PutBuffer(b) // on error the caller keeps the buffer
	}
	return err
}

func TestDeliver(t *testing.T) {
	s := New("demo", 2, 16)
	defer s.Close()
	if s.Name() != "demo" {
		t.Fatalf("Name %q", s.Name())
	}
	sink := &fakeSink{}
	ss, err := s.Open(sink)
	if err != nil {
		t.Fatal(err)
	}
	if err := send(t, ss, `{"jsonrpc":"2.0","id":"x","method":"tools/call","params":{"name":"echo","arguments":{"message":"hi"}}}`); err != nil {
		t.Fatal(err)
	}
	got := sink.wait(t, 1)
	want := `{"jsonrpc":"2.0","id":"x","result":{"content":[{"type":"text","text":"Echo: hi"}]}}`
	if got[0] != want {
		t.Fatalf("got %s", got[0])
	}
	// A notification gets no Deliver; a later request still does.
	if err := send(t, ss, `{"jsonrpc":"2.0","method":"notifications/initialized"}`); err != nil {
		t.Fatal(err)
	}
	if err := send(t, ss, `{"jsonrpc":"2.0","id":2,"method":"ping"}`); err != nil {
		t.Fatal(err)
	}
	got = sink.wait(t, 2)
	time.Sleep(20 * time.Millisecond)
	if got = sink.messages(); len(got) != 2 || got[1] != `{"jsonrpc":"2.0","id":2,"result":{}}` {
		t.Fatalf("got %q", got)
	}
}

func TestSessionsAreSeparate(t *testing.T) {
	s := New("demo", 4, 1024)
	defer s.Close()
	const n = 200
	sinks := make([]*fakeSink, 4)
	var wg sync.WaitGroup
	for i := range sinks {
		sinks[i] = &fakeSink{}
		ss, err := s.Open(sinks[i])
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; j < n; j++ {
				msg := `{"jsonrpc":"2.0","id":"` + string(rune('a'+i)) + `","method":"ping"}`
				for send(t, ss, msg) == upstream.ErrBusy {
					runtime.Gosched()
				}
			}
		}()
	}
	wg.Wait()
	for i, sink := range sinks {
		for _, m := range sink.wait(t, n) {
			if want := `{"jsonrpc":"2.0","id":"` + string(rune('a'+i)) + `","result":{}}`; m != want {
				t.Fatalf("session %d got %s", i, m)
			}
		}
	}
}

func TestSendBusy(t *testing.T) {
	s := New("demo", 1, 1)
	sink := &fakeSink{entered: make(chan struct{}), gate: make(chan struct{})}
	ss, _ := s.Open(sink)
	ping := `{"jsonrpc":"2.0","id":1,"method":"ping"}`
	if err := send(t, ss, ping); err != nil {
		t.Fatal(err)
	}
	<-sink.entered // the only worker is now held in Deliver
	if err := send(t, ss, ping); err != nil {
		t.Fatalf("queue of 1 refused its first message: %v", err)
	}
	if err := send(t, ss, ping); !errors.Is(err, upstream.ErrBusy) {
		t.Fatalf("full queue: err %v, want ErrBusy", err)
	}
	close(sink.gate) // let both through
	go func() {
		for range sink.entered {
		}
	}()
	sink.wait(t, 2)
	if err := send(t, ss, ping); err != nil {
		t.Fatalf("drained queue: %v", err)
	}
	sink.wait(t, 3)
	s.Close()
	close(sink.entered)
}

func TestSessionClose(t *testing.T) {
	s := New("demo", 1, 8)
	defer s.Close()
	sink := &fakeSink{}
	ss, _ := s.Open(sink)
	ss.Close()
	if err := send(t, ss, `{"jsonrpc":"2.0","id":1,"method":"ping"}`); !errors.Is(err, upstream.ErrClosed) {
		t.Fatalf("Send after Close: %v", err)
	}
	ss.Close() // twice is fine
	time.Sleep(10 * time.Millisecond)
	if m := sink.messages(); len(m) != 0 {
		t.Fatalf("delivered after Close: %q", m)
	}
}

func TestCloseStopsWorkers(t *testing.T) {
	before := runtime.NumGoroutine()
	s := New("demo", 8, 64)
	if n := runtime.NumGoroutine(); n < before+8 {
		t.Fatalf("%d goroutines after New(8 workers), %d before", n, before)
	}
	sink := &fakeSink{}
	ss, _ := s.Open(sink)
	for range 10 {
		_ = send(t, ss, `{"jsonrpc":"2.0","id":1,"method":"ping"}`)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	_ = s.Close() // idempotent
	deadline := time.Now().Add(2 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before {
		t.Fatalf("%d goroutines after Close, %d before", n, before)
	}
	delivered := len(sink.messages())
	if err := send(t, ss, `{"jsonrpc":"2.0","id":1,"method":"ping"}`); !errors.Is(err, upstream.ErrClosed) {
		t.Fatalf("Send after server Close: %v", err)
	}
	if _, err := s.Open(sink); !errors.Is(err, upstream.ErrClosed) {
		t.Fatalf("Open after Close: %v", err)
	}
	time.Sleep(10 * time.Millisecond)
	if len(sink.messages()) != delivered {
		t.Fatal("Deliver after Close returned")
	}
}

func TestDefaults(t *testing.T) {
	s := New("d", 0, 0)
	defer s.Close()
	if cap(s.jobs) != 4096 {
		t.Fatalf("queue depth %d", cap(s.jobs))
	}
	var _ upstream.Upstream = s
}
