package frame

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/gobwas/ws"
)

const testLimit = 1 << 16

func next(t *testing.T, rd *Reader, in []byte, limit int64) (Event, int, *CloseError) {
	t.Helper()
	ev, n, err := rd.Next(in, limit)
	if err == nil {
		return ev, n, nil
	}
	var ce *CloseError
	if !errors.As(err, &ce) {
		t.Fatalf(
			"Next error %T %v, want *CloseError",
			err, err,
		)
	}
	if n != 0 {
		t.Fatalf(
			"Next returned n=%d with error %v",
			n, err,
		)
	}
	return ev, n, ce
}

func wantCode(t *testing.T, ce *CloseError, code ws.StatusCode) {
	t.Helper()
	if ce == nil {
		t.Fatalf(
			"no error, want close %d",
			code,
		)
	}
	if ce.Code != code {
		t.Fatalf(
			"close %d %q, want %d",
			ce.Code, ce.Reason, code,
		)
	}
	if ce.Reason == "" || len(ce.Reason) > 123 {
		t.Fatalf(
			"reason %q: want a short non-empty one",
			ce.Reason,
		)
	}
	if code == ws.StatusProtocolError && !strings.HasPrefix(ce.Reason, "Protocol error: ") {
		t.Fatalf(
			"reason %q, want \"Protocol error: ...\"",
			ce.Reason,
		)
	}
}

func TestTextUnfragmentedIsZeroCopy(t *testing.T) {
	for _, bits := range []int{0, 16, 64} {
		msg := `{"jsonrpc":"2.0","id":1,"method":"ping"} – ünïcødé`
		in := cf{op: ws.OpText, lenBits: bits, payload: []byte(msg)}.bytes()
		hn := len(in) - len(msg)
		in = append(in, 0x81) // the start of the next frame: must be left alone
		var rd Reader
		ev, n, ce := next(t, &rd, in, testLimit)
		if ce != nil {
			t.Fatal(ce)
		}
		if n != len(in)-1 || ev.Kind != Text || string(ev.Payload) != msg {
			t.Fatalf(
				"bits %d: n=%d kind=%v payload=%q",
				bits, n, ev.Kind, ev.Payload,
			)
		}
		if &ev.Payload[0] != &in[hn] {
			t.Fatalf(
				"bits %d: payload does not alias the input",
				bits,
			)
		}
		if cap(ev.Payload) != len(ev.Payload) {
			t.Fatalf(
				"bits %d: payload capacity reaches into the next frame",
				bits,
			)
		}
		if rd.buf != nil || rd.fragmented {
			t.Fatalf(
				"bits %d: reader kept state: %+v",
				bits, rd,
			)
		}
	}
}

func TestEmptyAndBinary(t *testing.T) {
	res := feed(t, cat(
		text(""),
		cf{op: ws.OpBinary, payload: []byte{0, 0xff, 0xfe}},
		cf{op: ws.OpBinary, notFin: true, payload: []byte{1}},
		cf{op: ws.OpContinuation, payload: []byte{0xff}},
	), nil, testLimit, nil)
	want := []Event{
		{Kind: Text},
		{Kind: Binary, Payload: []byte{0, 0xff, 0xfe}},
		{Kind: None},
		{Kind: Binary, Payload: []byte{1, 0xff}},
	}
	if res.err != nil || !sameResult(res, result{events: want, consumed: res.consumed}) {
		t.Fatalf(
			"got %+v, want events %+v",
			res, want,
		)
	}
}

func TestProtocolErrors(t *testing.T) {
	start := cf{op: ws.OpText, notFin: true, payload: []byte("a")}
	cases := []struct {
		name   string
		stream []byte
	}{
		{
			name:   "unmasked text",
			stream: cf{op: ws.OpText, unmask: true, payload: []byte("hi")}.bytes(),
		},
		{
			name:   "unmasked ping",
			stream: cf{op: ws.OpPing, unmask: true}.bytes(),
		},
		{
			name:   "rsv1",
			stream: cf{op: ws.OpText, rsv: 4, payload: []byte("hi")}.bytes(),
		},
		{
			name:   "rsv2",
			stream: cf{op: ws.OpText, rsv: 2}.bytes(),
		},
		{
			name:   "rsv3 on a ping",
			stream: cf{op: ws.OpPing, rsv: 1}.bytes(),
		},
		{
			name:   "ping over 125 bytes",
			stream: cf{op: ws.OpPing, payload: make([]byte, 126)}.bytes(),
		},
		{
			name:   "close over 125 bytes, header only",
			stream: cf{op: ws.OpClose, declare: 1 << 31}.bytes(),
		},
		{
			name:   "fragmented ping",
			stream: cf{op: ws.OpPing, notFin: true}.bytes(),
		},
		{
			name:   "fragmented pong inside a message",
			stream: cat(start, cf{op: ws.OpPong, notFin: true}),
		},
		{
			name:   "continuation without a start",
			stream: cf{op: ws.OpContinuation, payload: []byte("x")}.bytes(),
		},
		{
			name:   "continuation after a finished message",
			stream: cat(text("a"), cf{op: ws.OpContinuation}),
		},
		{
			name:   "text inside a fragmented text",
			stream: cat(start, text("b")),
		},
		{
			name:   "binary inside a fragmented text",
			stream: cat(start, cf{op: ws.OpBinary, notFin: true}),
		},
		{
			name:   "length with the most significant bit set",
			stream: []byte{0x81, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 1, 1, 2, 3, 4},
		},
		{
			name:   "most significant bit, only 3 header bytes present",
			stream: []byte{0x81, 0xff, 0x80},
		},
		{
			name:   "close with a 1-byte payload",
			stream: cf{op: ws.OpClose, payload: []byte{3}}.bytes(),
		},
	}
	for op := ws.OpCode(3); op <= 0xf; op++ {
		if op == ws.OpClose || op == ws.OpPing || op == ws.OpPong {
			continue
		}
		cases = append(cases, struct {
			name   string
			stream []byte
		}{
			name:   "reserved opcode " + string("0123456789abcdef"[op]),
			stream: cf{op: op, payload: []byte("x")}.bytes(),
		})
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			res := feed(t, tc.stream, nil, testLimit, nil)
			wantCode(t, res.err, ws.StatusProtocolError)
		})
	}
}

func TestParseHeaderNeedsMore(t *testing.T) {
	full := cf{op: ws.OpBinary, lenBits: 64, payload: []byte("xyz")}.bytes()
	for i := range 14 {
		h, n, err := ParseHeader(full[:i])
		if n != 0 || err != nil || h != (ws.Header{}) {
			t.Fatalf(
				"%d bytes: n=%d err=%v h=%+v, want need-more",
				i, n, err, h,
			)
		}
	}
	h, n, err := ParseHeader(full)
	want := ws.Header{Fin: true, OpCode: ws.OpBinary, Masked: true, Mask: testMask, Length: 3}
	if n != 14 || err != nil || h != want {
		t.Fatalf(
			"n=%d err=%v h=%+v, want 14, %+v",
			n, err, h, want,
		)
	}
}

// A partial header waits untouched; a data frame whose payload is not all
// here is streamed into a buffer of exactly its size, reserved in the budget
// until Release.
func TestPartialPayloadStreams(t *testing.T) {
	in := text("hello, world").bytes()
	orig := bytes.Clone(in)
	const hdr = 6 // 2 + mask
	b := NewBudget(1 << 20)
	rd := Reader{Budget: b}
	for i := range hdr {
		_, n, ce := next(t, &rd, in[:i], testLimit)
		if n != 0 || ce != nil || !bytes.Equal(in, orig) {
			t.Fatalf("%d header bytes: n=%d err=%v, or modified", i, n, ce)
		}
	}
	ev, n, ce := next(t, &rd, in[:hdr+3], testLimit)
	if ce != nil || n != hdr+3 || ev.Kind != None || !rd.Open() || !rd.InFrame() {
		t.Fatalf("header and 3 bytes: n=%d err=%v ev=%+v open=%v", n, ce, ev, rd.Open())
	}
	if cap(rd.buf) != 12 || b.Used() != 12 {
		t.Fatalf("buffer cap %d, budget used %d, want 12 (the declared size)", cap(rd.buf), b.Used())
	}
	ev, n, ce = next(t, &rd, in[hdr+3:hdr+5], testLimit)
	if ce != nil || n != 2 || ev.Kind != None {
		t.Fatalf("2 more bytes: n=%d err=%v ev=%+v", n, ce, ev)
	}
	if _, n, _ := next(t, &rd, nil, testLimit); n != 0 {
		t.Fatalf("no bytes: n=%d", n)
	}
	ev, n, ce = next(t, &rd, in[hdr+5:], testLimit)
	if ce != nil || n != len(in)-hdr-5 || ev.Kind != Text || string(ev.Payload) != "hello, world" {
		t.Fatalf("rest: n=%d err=%v ev=%+v", n, ce, ev)
	}
	if rd.Open() || rd.InFrame() {
		t.Fatal("message still open")
	}
	rd.Release()
	if b.Used() != 0 {
		t.Fatalf("budget used %d after Release", b.Used())
	}
}

// A message whose buffer would pass the budget gets 1013; Free gives back
// what an open message held.
func TestBudgetRefuses(t *testing.T) {
	b := NewBudget(100)
	// Next unmasks what it consumes: each reader gets its own copy.
	frame := func() []byte { return cf{op: ws.OpText, payload: bytes.Repeat([]byte("a"), 80)}.bytes() }
	big := frame()
	one := Reader{Budget: b}
	if _, n, ce := next(t, &one, big[:20], testLimit); n != 20 || ce != nil {
		t.Fatalf("first: n=%d err=%v", n, ce)
	}
	two := Reader{Budget: b}
	_, _, ce := next(t, &two, frame()[:20], testLimit)
	wantCode(t, ce, StatusTryAgainLater)
	if ce.Reason != "Try again later" || b.Used() != 80 {
		t.Fatalf("reason %q, used %d", ce.Reason, b.Used())
	}
	one.Free()
	if b.Used() != 0 || one.Open() {
		t.Fatalf("after Free: used %d, open %v", b.Used(), one.Open())
	}
	three := Reader{Budget: b}
	big = frame()
	if ev, n, ce := next(t, &three, big, testLimit); n != len(big) || ce != nil || ev.Kind != Text {
		t.Fatalf("whole frame after Free: n=%d err=%v", n, ce)
	}
	// A whole frame is returned in place: nothing reserved.
	if b.Used() != 0 {
		t.Fatalf("used %d for an in-place message", b.Used())
	}
}

// Fragments grow the buffer by a quarter at least, never doubling.
func TestFragmentGrowth(t *testing.T) {
	b := NewBudget(1 << 30)
	rd := Reader{Budget: b}
	part := bytes.Repeat([]byte("a"), 1000)
	f := cf{op: ws.OpText, notFin: true, payload: part}.bytes()
	if _, n, ce := next(t, &rd, f, 1<<20); n != len(f) || ce != nil {
		t.Fatalf("first: n=%d err=%v", n, ce)
	}
	held := 1000
	for range 50 {
		f := cf{op: ws.OpContinuation, notFin: true, payload: part}.bytes()
		if _, n, ce := next(t, &rd, f, 1<<20); n != len(f) || ce != nil {
			t.Fatalf("fragment: n=%d err=%v", n, ce)
		}
		held += 1000
		if c := cap(rd.buf); float64(c) > 1.25*float64(held)+1000 || int64(c) != b.Used() {
			t.Fatalf("held %d: cap %d, budget %d", held, c, b.Used())
		}
	}
}

func TestTooBigFromHeader(t *testing.T) {
	const limit = 100
	var rd Reader
	// At the limit: accepted, and waited for.
	at := cf{op: ws.OpText, payload: bytes.Repeat([]byte("a"), limit)}.bytes()
	if _, n, ce := next(t, &rd, at[:10], limit); n != 10 || ce != nil {
		t.Fatalf(
			"limit-sized frame, partial: n=%d err=%v",
			n, ce,
		)
	}
	if _, n, ce := next(t, &rd, at[10:], limit); n != len(at)-10 || ce != nil {
		t.Fatalf(
			"limit-sized frame: n=%d err=%v",
			n, ce,
		)
	}
	// One over: refused with the header alone.
	over := cf{op: ws.OpText, payload: bytes.Repeat([]byte("a"), limit+1)}.bytes()
	_, _, ce := next(t, &rd, over[:8], limit)
	wantCode(t, ce, ws.StatusMessageTooBig)
	if ce.Reason != "Message too big" {
		t.Fatalf(
			"reason %q",
			ce.Reason,
		)
	}
	// Binary counts too.
	rd = Reader{}
	_, _, ce = next(t, &rd, cf{op: ws.OpBinary, declare: limit + 1}.bytes(), limit)
	wantCode(t, ce, ws.StatusMessageTooBig)
}

func TestTwoGiBHeaderRefusedUnbuffered(t *testing.T) {
	for _, tc := range []struct {
		name   string
		before []cf
		op     ws.OpCode
	}{
		{
			name: "text",
			op:   ws.OpText,
		},
		{
			name: "binary",
			op:   ws.OpBinary,
		},
		{
			name:   "continuation",
			before: []cf{{op: ws.OpText, notFin: true, payload: []byte("start")}},
			op:     ws.OpContinuation,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var rd Reader
			in := cat(tc.before...)
			for len(in) > 0 {
				_, n, ce := next(t, &rd, in, testLimit)
				if ce != nil || n == 0 {
					t.Fatalf(
						"setup: n=%d err=%v",
						n, ce,
					)
				}
				in = in[n:]
			}
			hdr := cf{op: tc.op, lenBits: 64, declare: 2 << 30}.bytes()
			if len(hdr) != 14 {
				t.Fatalf(
					"header is %d bytes",
					len(hdr),
				)
			}
			before := cap(rd.buf)
			_, _, ce := next(t, &rd, hdr, testLimit)
			wantCode(t, ce, ws.StatusMessageTooBig)
			if cap(rd.buf) != before {
				t.Fatalf(
					"buffer grew from %d to %d",
					before, cap(rd.buf),
				)
			}
			if tc.before == nil && rd.buf != nil {
				t.Fatal("buffer allocated for a refused message")
			}
		})
	}
}

func TestEndlessContinuationsHitLimit(t *testing.T) {
	const limit = 1000
	var rd Reader
	in := cf{op: ws.OpText, notFin: true, payload: []byte("x")}.bytes()
	one := cf{op: ws.OpContinuation, notFin: true, payload: []byte("y")}.bytes()
	total := 1
	for {
		_, n, ce := next(t, &rd, in, limit)
		if ce != nil {
			wantCode(t, ce, ws.StatusMessageTooBig)
			if total-1 != limit {
				t.Fatalf(
					"refused with %d bytes buffered, want %d",
					total-1, limit,
				)
			}
			break
		}
		if n != len(in) {
			t.Fatalf(
				"n=%d",
				n,
			)
		}
		if cap(rd.buf) > limit || len(rd.buf) != total {
			t.Fatalf(
				"buffer len %d cap %d, total %d",
				len(rd.buf), cap(rd.buf), total,
			)
		}
		in = bytes.Clone(one)
		total++
	}
}

func TestFragmentTotalCounts(t *testing.T) {
	res := feed(t, cat(
		cf{op: ws.OpText, notFin: true, payload: make([]byte, 60)},
		cf{op: ws.OpContinuation, payload: make([]byte, 41)},
	), nil, 100, nil)
	wantCode(t, res.err, ws.StatusMessageTooBig)
	if len(res.events) != 1 || res.events[0].Kind != None {
		t.Fatalf(
			"events %+v",
			res.events,
		)
	}
}

func TestReleaseDropsBuffer(t *testing.T) {
	var rd Reader
	in := cat(
		cf{op: ws.OpText, notFin: true, payload: []byte("part one, ")},
		cf{op: ws.OpContinuation, payload: []byte("part two")},
	)
	ev, n, ce := next(t, &rd, in, testLimit)
	if ce != nil || ev.Kind != None || rd.buf == nil {
		t.Fatalf(
			"first fragment: %+v %v buf=%v",
			ev, ce, rd.buf,
		)
	}
	rd.Release() // mid-message: must keep the bytes
	ev, _, ce = next(t, &rd, in[n:], testLimit)
	if ce != nil || ev.Kind != Text || string(ev.Payload) != "part one, part two" {
		t.Fatalf(
			"final: %+v %v",
			ev, ce,
		)
	}
	if rd.buf == nil {
		t.Fatal("buffer dropped before Release")
	}
	rd.Release()
	if rd.buf != nil || rd.fragmented || rd.checked != 0 {
		t.Fatalf(
			"after Release: %+v",
			rd,
		)
	}
}

func TestBufferNeverExceedsLimit(t *testing.T) {
	for _, limit := range []int64{0, 1, 7, 511, 512, 513, 3000} {
		var frames []cf
		frames = append(frames, cf{op: ws.OpBinary, notFin: true})
		for range 5000 {
			frames = append(frames, cf{op: ws.OpContinuation, notFin: true, payload: []byte{'z'}})
		}
		res := feed(t, cat(frames...), nil, limit, func(r *Reader, _ []byte, _ Event, _ int, _ error) {
			if int64(cap(r.buf)) > limit {
				t.Fatalf(
					"limit %d: buffer cap %d",
					limit, cap(r.buf),
				)
			}
		})
		wantCode(t, res.err, ws.StatusMessageTooBig)
		if int64(len(res.events)) != limit+1 {
			t.Fatalf(
				"limit %d: refused after %d frames",
				limit, len(res.events),
			)
		}
	}
}

func TestSmallerLimitDropsBiggerBuffer(t *testing.T) {
	var rd Reader
	big := cat(
		cf{op: ws.OpText, notFin: true, payload: make([]byte, 900)},
		cf{op: ws.OpContinuation, payload: make([]byte, 100)},
	)
	for len(big) > 0 {
		_, n, ce := next(t, &rd, big, 1000)
		if ce != nil {
			t.Fatal(ce)
		}
		big = big[n:]
	}
	if _, _, ce := next(t, &rd, cf{op: ws.OpText, notFin: true, payload: []byte("a")}.bytes(), 10); ce != nil {
		t.Fatal(ce)
	}
	if cap(rd.buf) > 10 {
		t.Fatalf(
			"cap %d over the new limit",
			cap(rd.buf),
		)
	}
}

func TestCloseErrorMessage(t *testing.T) {
	var err error = &CloseError{Code: 1009, Reason: "Message too big"}
	if got := err.Error(); got != "frame: close 1009: Message too big" {
		t.Fatalf(
			"Error() = %q",
			got,
		)
	}
	if Text.String() != "Text" || Kind(9).String() != "Kind(9)" {
		t.Fatal("Kind.String")
	}
}
