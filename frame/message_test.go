package frame

import (
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/gobwas/ws"
)

// Message-level rules: UTF-8, close frames, fragments and control frames
// interleaved, and delivery in arbitrary pieces.

func TestInvalidUTF8(t *testing.T) {
	euro := "€" // e2 82 ac
	cases := []struct {
		name   string
		frames []cf
		events int // events before the failure
	}{
		{
			name:   "unfragmented",
			frames: []cf{text("ok \xff")},
		},
		{
			name:   "overlong",
			frames: []cf{text("\xc0\x80")},
		},
		{
			name:   "surrogate",
			frames: []cf{text("\xed\xa0\x80")},
		},
		{
			name:   "truncated at the end",
			frames: []cf{text("ab" + euro[:2])},
		},
		{
			name: "truncated at the end of the last fragment",
			frames: []cf{
				{op: ws.OpText, notFin: true, payload: []byte("ab")},
				{op: ws.OpContinuation, payload: []byte(euro[:2])},
			},
			events: 1,
		},
		{
			name: "fails fast on the bad fragment",
			frames: []cf{
				{op: ws.OpText, notFin: true, payload: []byte("ab")},
				{op: ws.OpContinuation, notFin: true, payload: []byte("c\xffd")},
				{op: ws.OpContinuation, payload: []byte("e")},
			},
			events: 1,
		},
		{
			name: "impossible continuation of a split rune fails fast",
			frames: []cf{
				{op: ws.OpText, notFin: true, payload: []byte(euro[:1])},
				{op: ws.OpContinuation, notFin: true, payload: []byte("a")},
				{op: ws.OpContinuation, payload: []byte("b")},
			},
			events: 1,
		},
		{
			name:   "close reason",
			frames: []cf{{op: ws.OpClose, payload: closeBody(1000, "bye\xfe")}},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			res := feed(t, cat(tc.frames...), nil, testLimit, nil)
			wantCode(t, res.err, ws.StatusInvalidFramePayloadData)
			if res.err.Reason != "Invalid UTF-8" || len(res.events) != tc.events {
				t.Fatalf(
					"reason %q after %d events, want %d",
					res.err.Reason, len(res.events), tc.events,
				)
			}
		})
	}
}

func TestFragmentedTextSplitRuneWithPing(t *testing.T) {
	msg := "héllo 🌍!"
	cut := strings.Index(msg, "🌍") + 2 // inside the 4-byte rune
	stream := cat(
		cf{op: ws.OpText, notFin: true, payload: []byte(msg[:3])}, // inside "é"
		cf{op: ws.OpPing, payload: []byte("are you there")},
		cf{op: ws.OpContinuation, notFin: true, payload: []byte(msg[3:cut])},
		cf{op: ws.OpPong},
		cf{op: ws.OpContinuation, notFin: true},
		cf{op: ws.OpContinuation, payload: []byte(msg[cut:])},
		text("next"),
	)
	res := feed(t, stream, nil, testLimit, nil)
	want := []Event{
		{Kind: None},
		{Kind: Ping, Payload: []byte("are you there")},
		{Kind: None},
		{Kind: Pong},
		{Kind: None},
		{Kind: Text, Payload: []byte(msg)},
		{Kind: Text, Payload: []byte("next")},
	}
	if !sameResult(res, result{events: want, consumed: len(stream)}) {
		t.Fatalf(
			"got %+v err %v, want %+v",
			res.events, res.err, want,
		)
	}
}

func TestClose(t *testing.T) {
	valid := []ws.StatusCode{1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 3999, 4000, 4999}
	for _, code := range valid {
		res := feed(t, cf{op: ws.OpClose, payload: closeBody(code, "bye ✓")}.bytes(), nil, testLimit, nil)
		want := Event{Kind: Close, CloseCode: code, CloseReason: []byte("bye ✓")}
		if res.err != nil || len(res.events) != 1 || !sameEvent(res.events[0], want) {
			t.Fatalf(
				"code %d: %+v, want %+v",
				code, res, want,
			)
		}
	}
	invalid := []ws.StatusCode{0, 999, 1004, 1005, 1006, 1012, 1013, 1014, 1015, 1016, 1100, 2000, 2999, 5000, 65535}
	for _, code := range invalid {
		res := feed(t, cf{op: ws.OpClose, payload: closeBody(code, "")}.bytes(), nil, testLimit, nil)
		wantCode(t, res.err, ws.StatusProtocolError)
	}

	var rd Reader
	ev, _, ce := next(t, &rd, cf{op: ws.OpClose}.bytes(), testLimit)
	if ce != nil || ev.Kind != Close || ev.CloseCode != ws.StatusNoStatusRcvd || len(ev.CloseReason) != 0 {
		t.Fatalf(
			"empty close: %+v %v",
			ev, ce,
		)
	}
	// A close between fragments is returned as well.
	res := feed(t, cat(
		cf{op: ws.OpText, notFin: true, payload: []byte("a")},
		cf{op: ws.OpClose, payload: closeBody(1001, "")},
	), nil, testLimit, nil)
	if res.err != nil || len(res.events) != 2 || res.events[1].CloseCode != 1001 {
		t.Fatalf(
			"close inside a message: %+v",
			res,
		)
	}
}

// randomStream builds a legal stream of messages: fragmented or not, text
// with runes split anywhere, binary, and control frames between fragments,
// with assorted length encodings.
func randomStream(rng *rand.Rand) []byte {
	words := []string{"a", "é", "€", "🌍", `{"id":1}`, " ", "ünï"}
	var frames []cf
	for range 1 + rng.IntN(20) {
		var sb strings.Builder
		for range rng.IntN(30) {
			sb.WriteString(words[rng.IntN(len(words))])
		}
		msg := []byte(sb.String())
		op := ws.OpText
		if rng.IntN(5) == 0 {
			op = ws.OpBinary
		}
		parts := 1 + rng.IntN(4)
		for i := range parts {
			lo, hi := len(msg)*i/parts, len(msg)*(i+1)/parts
			f := cf{
				op:      op,
				notFin:  i < parts-1,
				lenBits: []int{0, 0, 16, 64}[rng.IntN(4)],
				payload: msg[lo:hi],
			}
			if i > 0 {
				f.op = ws.OpContinuation
			}
			f.mask = [4]byte{byte(rng.Uint32()), byte(rng.Uint32()), 1, 2}
			frames = append(frames, f)
			if rng.IntN(3) == 0 {
				frames = append(frames, cf{op: []ws.OpCode{ws.OpPing, ws.OpPong}[rng.IntN(2)], payload: msg[:min(len(msg), 125)]})
			}
		}
	}
	frames = append(frames, cf{op: ws.OpClose, payload: closeBody(1000, "done")})
	return cat(frames...)
}

// Delivering a stream byte by byte, or in random chunks, gives the same events
// as delivering it all at once.
func TestPartialDeliveryProperty(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range 300 {
		stream := randomStream(rng)
		whole := feed(t, stream, nil, testLimit, nil)
		if whole.err != nil || whole.consumed != len(stream) {
			t.Fatalf(
				"stream %d: %v, consumed %d of %d",
				i, whole.err, whole.consumed, len(stream),
			)
		}
		byByte := feed(t, stream, []int{1}, testLimit, nil)
		chunks := []int{1 + rng.IntN(7), 1 + rng.IntN(40), 1 + rng.IntN(300)}
		chunked := feed(t, stream, chunks, testLimit, nil)
		if !sameResult(whole, byByte) || !sameResult(whole, chunked) {
			t.Fatalf(
				"stream %d: deliveries differ:\nwhole   %+v\nby byte %+v\nchunked %+v",
				i, whole, byByte, chunked,
			)
		}
	}
}
