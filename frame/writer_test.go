package frame

import (
	"bytes"
	"encoding/binary"
	"io"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/gobwas/ws"
)

// readServerFrame parses a server frame with ws itself, as a client would.
func readServerFrame(t *testing.T, b []byte) (ws.Header, []byte) {
	t.Helper()
	r := bytes.NewReader(b)
	h, err := ws.ReadHeader(r)
	if err != nil {
		t.Fatal(err)
	}
	if err := ws.CheckHeader(h, ws.StateClientSide); err != nil {
		t.Fatalf(
			"client would reject %+v: %v",
			h, err,
		)
	}
	p, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	if int64(len(p)) != h.Length {
		t.Fatalf(
			"declared %d, carries %d",
			h.Length, len(p),
		)
	}
	return h, p
}

func TestAppendFrameLengths(t *testing.T) {
	for _, n := range []int{0, 1, 125, 126, 0xffff, 0x10000, 200000} {
		payload := bytes.Repeat([]byte{'x'}, n)
		prefix := []byte("kept")
		out := AppendFrame(bytes.Clone(prefix), ws.OpBinary, n%2 == 0, payload)
		if !bytes.HasPrefix(out, prefix) {
			t.Fatal("dst prefix lost")
		}
		out = out[len(prefix):]
		if len(out) != MaxHeaderLen(n)+n {
			t.Fatalf(
				"%d bytes: frame is %d, want %d",
				n, len(out), MaxHeaderLen(n)+n,
			)
		}
		h, p := readServerFrame(t, out)
		if h.OpCode != ws.OpBinary || h.Fin != (n%2 == 0) || h.Masked || h.Rsv != 0 || !bytes.Equal(p, payload) {
			t.Fatalf(
				"%d bytes: %+v",
				n, h,
			)
		}
	}
}

func TestMaxHeaderLen(t *testing.T) {
	for n, want := range map[int]int{0: 2, 125: 2, 126: 4, 0xffff: 4, 0x10000: 10, 1 << 40: 10} {
		if got := MaxHeaderLen(n); got != want {
			t.Fatalf(
				"MaxHeaderLen(%d) = %d, want %d",
				n, got, want,
			)
		}
	}
}

func TestAppendTextPingPong(t *testing.T) {
	out := AppendText(nil, []byte("héllo"))
	out = AppendPing(out, []byte("p"))
	out = AppendPong(out, bytes.Repeat([]byte{'q'}, 300))
	want := []struct {
		op ws.OpCode
		n  int
	}{
		{
			op: ws.OpText,
			n:  len("héllo"),
		},
		{
			op: ws.OpPing,
			n:  1,
		},
		{
			op: ws.OpPong,
			n:  125,
		},
	}
	r := bytes.NewReader(out)
	for _, w := range want {
		h, err := ws.ReadHeader(r)
		if err != nil || h.OpCode != w.op || h.Length != int64(w.n) || !h.Fin || h.Masked {
			t.Fatalf(
				"%+v %v, want op %v length %d",
				h, err, w.op, w.n,
			)
		}
		if err := ws.CheckHeader(h, ws.StateClientSide); err != nil {
			t.Fatal(err)
		}
		if _, err := r.Seek(h.Length, io.SeekCurrent); err != nil {
			t.Fatal(err)
		}
	}
}

func TestAppendClose(t *testing.T) {
	h, p := readServerFrame(t, AppendClose(nil, ws.StatusMessageTooBig, "Message too big"))
	if h.OpCode != ws.OpClose || binary.BigEndian.Uint16(p) != 1009 || string(p[2:]) != "Message too big" {
		t.Fatalf(
			"%+v %q",
			h, p,
		)
	}
	for _, code := range []ws.StatusCode{0, ws.StatusNoStatusRcvd} {
		if _, p := readServerFrame(t, AppendClose(nil, code, "ignored")); len(p) != 0 {
			t.Fatalf(
				"code %d: payload %q, want none",
				code, p,
			)
		}
	}
	// Reasons over 123 bytes are cut at a rune boundary, whatever the rune
	// width and alignment.
	for _, unit := range []string{"a", "é", "€", "🌍"} {
		for pad := range 4 {
			reason := strings.Repeat("x", pad) + strings.Repeat(unit, 200)
			_, p := readServerFrame(t, AppendClose(nil, ws.StatusGoingAway, reason))
			got := p[2:]
			if len(p) > 125 || len(got) < 120 || !utf8.Valid(got) || !strings.HasPrefix(reason, string(got)) {
				t.Fatalf(
					"unit %q pad %d: %d bytes, valid %v",
					unit, pad, len(p), utf8.Valid(got),
				)
			}
		}
	}
	// What we send, our reader accepts.
	in := AppendClose(nil, 4000, strings.Repeat("€", 50))
	in[1] |= 0x80
	in = append(in[:2], append([]byte{0, 0, 0, 0}, in[2:]...)...)
	var rd Reader
	ev, n, err := rd.Next(in, 0)
	if err != nil || n != len(in) || ev.CloseCode != 4000 || !utf8.Valid(ev.CloseReason) {
		t.Fatalf(
			"%+v n=%d err=%v",
			ev, n, err,
		)
	}
}

func TestZeroAllocs(t *testing.T) {
	frame := cf{op: ws.OpText, mask: asciiMask, payload: []byte(benchJSON)}.bytes()
	var rd Reader
	if a := testing.AllocsPerRun(100, func() {
		if _, n, err := rd.Next(frame, testLimit); n != len(frame) || err != nil {
			panic(err)
		}
	}); a != 0 {
		t.Fatalf(
			"Next: %v allocs",
			a,
		)
	}
	if a := testing.AllocsPerRun(100, func() { _, _, _ = ParseHeader(frame) }); a != 0 {
		t.Fatalf(
			"ParseHeader: %v allocs",
			a,
		)
	}
	dst := make([]byte, 0, MaxHeaderLen(len(benchJSON))+len(benchJSON))
	if a := testing.AllocsPerRun(100, func() { dst = AppendText(dst[:0], []byte(benchJSON)) }); a != 0 {
		t.Fatalf(
			"AppendText: %v allocs",
			a,
		)
	}
	// A fragmented message reuses its buffer once it has grown.
	frag := cat(
		cf{op: ws.OpText, notFin: true, mask: asciiMask, payload: []byte(benchJSON[:50])},
		cf{op: ws.OpContinuation, mask: asciiMask, payload: []byte(benchJSON[50:])},
	)
	if a := testing.AllocsPerRun(100, func() {
		in := frag
		for len(in) > 0 {
			_, n, err := rd.Next(in, testLimit)
			if err != nil || n == 0 {
				panic(err)
			}
			in = in[n:]
		}
	}); a != 0 {
		t.Fatalf(
			"fragmented Next: %v allocs",
			a,
		)
	}
}

func TestTextInPlace(t *testing.T) {
	for _, n := range []int{0, 1, 125, 126, 1000, 65535, 65536, 70000} {
		payload := make([]byte, n)
		for i := range payload {
			payload[i] = byte(i)
		}
		buf := append(make([]byte, MaxHeaderSize), payload...)
		got := TextInPlace(buf, MaxHeaderSize)
		if want := AppendText(nil, payload); string(got) != string(want) {
			t.Fatalf("payload %d: header % x, want % x", n, got[:min(len(got), 10)], want[:min(len(want), 10)])
		}
		if &got[len(got)-1] != &buf[len(buf)-1] {
			t.Fatalf("payload %d: not framed in place", n)
		}
	}
}
