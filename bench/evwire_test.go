package bench

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/gobwas/ws"
)

type gotMsg struct {
	op ws.OpCode
	p  string
}

// serverFrame encodes one frame as a server would (unmasked unless mask).
func serverFrame(op ws.OpCode, fin bool, p []byte, mask bool) []byte {
	f := ws.NewFrame(op, fin, append([]byte(nil), p...))
	if mask {
		f = ws.MaskFrameInPlace(f)
	}
	b, err := ws.CompileFrame(f)
	if err != nil {
		panic(err)
	}
	return b
}

// The inbox must give the same messages whatever the reads' boundaries:
// byte by byte, mid-header, mid-payload, or everything at once.
func TestInboxPartialReads(t *testing.T) {
	big := strings.Repeat("b", 70_000) // 64-bit length, larger than the shared buffer below
	mid := strings.Repeat("m", 300)    // 16-bit length
	var stream []byte
	add := func(b []byte) { stream = append(stream, b...) }
	add(serverFrame(ws.OpText, true, []byte(`{"id":1}`), false))
	add(serverFrame(ws.OpText, true, []byte(mid), false))
	add(serverFrame(ws.OpPing, true, []byte("hi"), false))
	add(serverFrame(ws.OpText, false, []byte(`{"id":`), false)) // fragmented, a ping in between
	add(serverFrame(ws.OpPing, true, nil, false))
	add(serverFrame(ws.OpContinuation, true, []byte(`2}`), false))
	add(serverFrame(ws.OpText, true, []byte(big), false))
	add(serverFrame(ws.OpBinary, true, []byte{1, 2}, false))
	add(serverFrame(ws.OpText, true, []byte(`masked`), true))
	add(serverFrame(ws.OpClose, true, ws.NewCloseFrameBody(1008, "bye"), false))
	want := []gotMsg{
		{ws.OpText, `{"id":1}`}, {ws.OpText, mid}, {ws.OpPing, "hi"}, {ws.OpPing, ""},
		{ws.OpText, `{"id":2}`}, {ws.OpText, big}, {ws.OpBinary, "\x01\x02"}, {ws.OpText, "masked"},
		{ws.OpClose, string(ws.NewCloseFrameBody(1008, "bye"))},
	}
	for _, chunk := range []int{1, 2, 3, 5, 7, 64, 1000, 4096, 65536, len(stream)} {
		var x inbox
		shared := make([]byte, 8192)
		var got []gotMsg
		fn := func(op ws.OpCode, p []byte) error {
			got = append(got, gotMsg{op, string(p)})
			return nil
		}
		for off := 0; off < len(stream); {
			sp := x.space(shared)
			n := copy(sp[:min(len(sp), chunk)], stream[off:])
			off += n
			if err := x.feed(shared, n, fn); err != nil {
				t.Fatalf("chunk %d: %v", chunk, err)
			}
		}
		if !slices.Equal(got, want) {
			t.Fatalf("chunk %d: got %d messages, want %d: %.60q", chunk, len(got), len(want), got)
		}
		if len(x.buf) != 0 || len(x.msg) != 0 {
			t.Fatalf("chunk %d: left over %d+%d bytes", chunk, len(x.buf), len(x.msg))
		}
	}
}

// A partial frame is carried over, and the buffer grows to hold the frame
// in progress so that it completes in few reads.
func TestInboxCarryAndGrow(t *testing.T) {
	f := serverFrame(ws.OpText, true, bytes.Repeat([]byte("z"), 20_000), false)
	var x inbox
	shared := make([]byte, 100)
	n := copy(x.space(shared), f)
	if err := x.feed(shared, n, func(ws.OpCode, []byte) error { t.Fatal("message too early"); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(x.buf) != 100 {
		t.Fatalf("carried %d bytes, want 100", len(x.buf))
	}
	sp := x.space(shared)
	if len(sp) < len(f)-100 {
		t.Fatalf("room %d for the rest %d", len(sp), len(f)-100)
	}
	done := false
	n = copy(sp, f[100:])
	if err := x.feed(shared, n, func(op ws.OpCode, p []byte) error { done = len(p) == 20_000; return nil }); err != nil || !done {
		t.Fatalf("second read: %v %v", err, done)
	}
}

func TestInboxLimits(t *testing.T) {
	var x inbox
	long := serverFrame(ws.OpPing, true, bytes.Repeat([]byte("p"), 126), false)
	if err := x.feed(long, len(long), func(ws.OpCode, []byte) error { return nil }); !errors.Is(err, errControlTooLong) {
		t.Fatalf("long ping: %v", err)
	}
	huge := []byte{0x81, 127, 0, 0, 0, 1, 0, 0, 0, 0} // 4 GiB
	x = inbox{}
	if err := x.feed(huge, len(huge), func(ws.OpCode, []byte) error { return nil }); !errors.Is(err, errMessageTooLarge) {
		t.Fatalf("huge: %v", err)
	}
	// A handler's error (a close frame) stops the parsing.
	x = inbox{}
	two := append(serverFrame(ws.OpClose, true, nil, false), serverFrame(ws.OpText, true, []byte("x"), false)...)
	calls := 0
	stop := errors.New("stop")
	if err := x.feed(two, len(two), func(ws.OpCode, []byte) error { calls++; return stop }); err != stop || calls != 1 {
		t.Fatalf("after close: %v, %d calls", err, calls)
	}
}

// fakeSock takes at most budget bytes, then says EAGAIN (a full socket).
type fakeSock struct {
	out    []byte
	budget int
	err    error
	writes int
}

func (s *fakeSock) write(p []byte) (int, error) {
	s.writes++
	if s.err != nil {
		return 0, s.err
	}
	if s.budget == 0 {
		return 0, syscall.EAGAIN
	}
	n := min(len(p), s.budget)
	s.budget -= n
	s.out = append(s.out, p[:n]...)
	return n, nil
}

func TestOutboxBackPressure(t *testing.T) {
	s := &fakeSock{budget: 10}
	var o outbox
	var sent []byte
	frame := func(k int) []byte { return []byte(fmt.Sprintf("<frame %02d>", k)) } // 10 bytes
	pending, err := o.write(frame(0), s.write)
	sent = append(sent, frame(0)...)
	if pending || err != nil || o.queued() != 0 {
		t.Fatalf("whole write: %v %v %d", pending, err, o.queued())
	}
	s.budget = 4 // the socket takes part of the next frame
	pending, err = o.write(frame(1), s.write)
	sent = append(sent, frame(1)...)
	if !pending || err != nil || o.queued() != 6 {
		t.Fatalf("partial write: %v %v queued %d", pending, err, o.queued())
	}
	// While bytes wait, new frames queue behind them, in order.
	for k := 2; k < 6; k++ {
		pending, err = o.write(frame(k), s.write)
		sent = append(sent, frame(k)...)
		if !pending || err != nil {
			t.Fatalf("queued write %d: %v %v", k, pending, err)
		}
	}
	if o.queued() != 46 {
		t.Fatalf("queued %d", o.queued())
	}
	s.budget = 20 // writable again, but not for everything
	if pending, err = o.flush(s.write); !pending || err != nil || o.queued() != 26 {
		t.Fatalf("flush 1: %v %v %d", pending, err, o.queued())
	}
	s.budget = 1 << 20
	if pending, err = o.flush(s.write); pending || err != nil || o.queued() != 0 {
		t.Fatalf("flush 2: %v %v %d", pending, err, o.queued())
	}
	if !bytes.Equal(s.out, sent) {
		t.Fatalf("stream differs:\n%q\n%q", s.out, sent)
	}
	// Bounded: a socket that never drains does not grow the queue without end.
	s.budget = 0
	big := make([]byte, 1<<20)
	full := false
	for range 2 * maxOutbox / len(big) {
		if _, err := o.write(big, s.write); err == errOutboxFull {
			full = true
			break
		}
	}
	if !full || o.queued() > maxOutbox {
		t.Fatalf("queue not bounded: %d", o.queued())
	}
	// Any other error is the caller's.
	s.err = syscall.EPIPE
	if _, err := o.flush(s.write); err != syscall.EPIPE {
		t.Fatalf("error %v", err)
	}
}

// The pulled schedule is the pushed one, call for call.
func TestPacerMatchesSchedule(t *testing.T) {
	for _, tc := range []struct {
		idx   []int
		conns int
		rate  float64
	}{{[]int{0, 1, 2}, 3, 1000}, {[]int{1, 4, 9}, 10, 3333}, {[]int{5}, 7, 70}, {nil, 3, 100}, {[]int{0}, 1, 0}} {
		start, end := int64(1e9), int64(1e9+5e8)
		var wantPos []int
		var wantAt []int64
		schedule(tc.idx, tc.conns, tc.rate, start, end, func(pos int, at int64) bool {
			wantPos, wantAt = append(wantPos, pos), append(wantAt, at)
			return true
		})
		var gotPos []int
		var gotAt []int64
		for p := newPacer(tc.idx, tc.conns, tc.rate, start, end); !p.done; p.next() {
			gotPos, gotAt = append(gotPos, p.pos), append(gotAt, p.at)
		}
		if !slices.Equal(gotPos, wantPos) || !slices.Equal(gotAt, wantAt) {
			t.Fatalf("%+v: %d calls, want %d", tc, len(gotAt), len(wantAt))
		}
	}
}

func TestLoopWait(t *testing.T) {
	const now = int64(1e9)
	cases := []struct {
		deadlines []int64
		want      int64
	}{
		{nil, maxLoopWait},
		{[]int64{now + 1234}, 1234}, // sub-millisecond: kept to the nanosecond
		{[]int64{now + 5e9, now + 2e6}, 2e6},
		{[]int64{now - 5}, 0}, // overdue: do not block
		{[]int64{now + 10*maxLoopWait}, maxLoopWait},
	}
	for _, c := range cases {
		if got := loopWait(now, c.deadlines...); got != c.want {
			t.Errorf("loopWait(%v) = %d, want %d", c.deadlines, got, c.want)
		}
	}
	if ms, sleep := splitWait(2_500_000); ms != 2 || sleep != 0 {
		t.Errorf("2.5 ms: %d ms + %d", ms, sleep)
	}
	if ms, sleep := splitWait(400_000); ms != 0 || sleep != 400_000 {
		t.Errorf("0.4 ms: %d ms + %d", ms, sleep)
	}
}
