package frame

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"unicode/utf8"

	"github.com/gobwas/ws"
)

// FuzzReader feeds arbitrary bytes, cut into arbitrary chunks (each byte of
// cuts is a chunk size less one; none means all at once), under an arbitrary
// limit. Next must not panic, must keep its buffer within the limit, must only
// return what it promises, and the cuts must not change the outcome.
func FuzzReader(f *testing.F) {
	f.Fuzz(func(t *testing.T, data, cuts []byte, limit uint16) {
		lim := int64(limit)
		var chunks []int
		for _, c := range cuts {
			chunks = append(chunks, int(c)+1)
		}
		each := func(r *Reader, in []byte, ev Event, n int, err error) {
			if len(r.buf) > cap(r.buf) || int64(cap(r.buf)) > lim {
				t.Fatalf(
					"limit %d: buffer len %d cap %d",
					lim, len(r.buf), cap(r.buf),
				)
			}
			if err != nil || n == 0 {
				return
			}
			switch ev.Kind {
			case Text:
				if !utf8.Valid(ev.Payload) {
					t.Fatalf(
						"invalid UTF-8 text returned: %q",
						ev.Payload,
					)
				}
				fallthrough
			case Binary:
				if int64(len(ev.Payload)) > lim {
					t.Fatalf(
						"message of %d bytes over limit %d",
						len(ev.Payload), lim,
					)
				}
			case Ping, Pong:
				if len(ev.Payload) > 125 {
					t.Fatalf(
						"control payload of %d bytes",
						len(ev.Payload),
					)
				}
			case Close:
				if ev.CloseCode != ws.StatusNoStatusRcvd && !validReceivedCode(ev.CloseCode) {
					t.Fatalf(
						"close code %d returned",
						ev.CloseCode,
					)
				}
				if !utf8.Valid(ev.CloseReason) {
					t.Fatalf(
						"invalid close reason %q returned",
						ev.CloseReason,
					)
				}
			}
		}
		got := feed(t, data, chunks, lim, each)
		whole := feed(t, data, nil, lim, nil)
		if !sameResult(got, whole) {
			t.Fatalf(
				"chunks %v change the outcome:\nchunked %+v\nwhole   %+v",
				chunks, got, whole,
			)
		}
	})
}

// FuzzParseHeader checks ParseHeader against ws.ReadHeader, which reads from an
// io.Reader: same header, same bytes consumed, and need-more exactly where
// ReadHeader runs out of input.
func FuzzParseHeader(f *testing.F) {
	f.Fuzz(func(t *testing.T, b []byte) {
		h, n, err := ParseHeader(b)
		br := bytes.NewReader(b)
		rh, rerr := ws.ReadHeader(br)

		if err != nil {
			var ce *CloseError
			if !errors.As(err, &ce) || ce.Code != ws.StatusProtocolError || n != 0 {
				t.Fatalf(
					"error %v with n=%d",
					err, n,
				)
			}
			if len(b) < 3 || b[1]&0x7f != 127 || b[2]&0x80 == 0 {
				t.Fatalf(
					"error %v on %x",
					err, b,
				)
			}
			// ReadHeader needs the whole header to see it; ParseHeader fails
			// as soon as the byte is there.
			if rerr != ws.ErrHeaderLengthMSB && rerr != io.ErrUnexpectedEOF {
				t.Fatalf(
					"ReadHeader: %v",
					rerr,
				)
			}
			return
		}
		if n == 0 {
			if rerr != io.EOF && rerr != io.ErrUnexpectedEOF {
				t.Fatalf(
					"need-more on %x, but ReadHeader: %+v %v",
					b, rh, rerr,
				)
			}
			return
		}
		if rerr != nil || rh != h || br.Len() != len(b)-n {
			t.Fatalf(
				"on %x: %+v n=%d, ReadHeader %+v consumed %d err %v",
				b, h, n, rh, len(b)-br.Len(), rerr,
			)
		}
		want := 2 + map[byte]int{126: 2, 127: 8}[b[1]&0x7f]
		if h.Masked {
			want += 4
		}
		if n != want {
			t.Fatalf(
				"n=%d, want %d",
				n, want,
			)
		}
		for i := range n {
			ph, pn, perr := ParseHeader(b[:i])
			if pn != 0 || perr != nil || ph != (ws.Header{}) {
				t.Fatalf(
					"prefix of %d: %+v n=%d err=%v",
					i, ph, pn, perr,
				)
			}
		}
	})
}

// TestWriteSeedCorpus regenerates testdata/fuzz/*. It runs only when asked:
//
//	FRAME_WRITE_CORPUS=1 go test -run TestWriteSeedCorpus ./frame/
func TestWriteSeedCorpus(t *testing.T) {
	if os.Getenv("FRAME_WRITE_CORPUS") == "" {
		t.Skip("set FRAME_WRITE_CORPUS=1 to rewrite testdata/fuzz")
	}
	long := func(n int) []byte { return bytes.Repeat([]byte("a"), n) }
	rng := rand.New(rand.NewPCG(3, 4))
	start := cf{op: ws.OpText, notFin: true, payload: []byte("h\xc3")}
	var ones []cf
	ones = append(ones, cf{op: ws.OpBinary, notFin: true, payload: []byte{1}})
	for range 40 {
		ones = append(ones, cf{op: ws.OpContinuation, notFin: true, payload: []byte{1}})
	}
	reader := []struct {
		name  string
		data  []byte
		cuts  []byte
		limit uint16
	}{
		{"text", text(`{"jsonrpc":"2.0","id":1,"method":"ping"}`).bytes(), nil, 4096},
		{"text-16bit-len", cf{op: ws.OpText, lenBits: 16, payload: []byte("hi")}.bytes(), []byte{0}, 100},
		{"text-64bit-len", cf{op: ws.OpText, lenBits: 64, payload: []byte("hi")}.bytes(), []byte{2, 5}, 100},
		{"fragmented-split-rune-ping", cat(start, cf{op: ws.OpPing, payload: []byte("p")},
			cf{op: ws.OpContinuation, payload: []byte("\xa9!")}), []byte{0, 3}, 64},
		{"random-stream-1", randomStream(rng), []byte{7, 0, 30}, 4096},
		{"random-stream-2", randomStream(rng), nil, 200},
		{"two-gib-header", cf{op: ws.OpText, lenBits: 64, declare: 2 << 30}.bytes(), nil, 65535},
		{"msb-length", []byte{0x82, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 0}, []byte{1}, 100},
		{"over-limit", cf{op: ws.OpBinary, payload: long(300)}.bytes(), []byte{20}, 299},
		{"endless-continuations", cat(ones...), []byte{5}, 30},
		{"invalid-utf8", text("bad \xff").bytes(), nil, 100},
		{"close-valid", cf{op: ws.OpClose, payload: closeBody(1000, "bye")}.bytes(), nil, 10},
		{"close-bad-code", cf{op: ws.OpClose, payload: closeBody(1005, "")}.bytes(), nil, 10},
		{"close-one-byte", cf{op: ws.OpClose, payload: []byte{3}}.bytes(), nil, 10},
		{"unmasked", cf{op: ws.OpText, unmask: true, payload: []byte("x")}.bytes(), nil, 10},
		{"rsv", cf{op: ws.OpText, rsv: 4, payload: []byte("x")}.bytes(), nil, 10},
		{"reserved-opcode", cf{op: 0xb}.bytes(), nil, 10},
		{"continuation-without-start", cf{op: ws.OpContinuation}.bytes(), nil, 10},
		{"ping-126", cf{op: ws.OpPing, lenBits: 16, payload: long(126)}.bytes(), nil, 1000},
	}
	dir := filepath.Join("testdata", "fuzz", "FuzzReader")
	for _, s := range reader {
		body := "go test fuzz v1\n[]byte(" + strconv.Quote(string(s.data)) + ")\n[]byte(" +
			strconv.Quote(string(s.cuts)) + ")\nuint16(" + strconv.Itoa(int(s.limit)) + ")\n"
		writeSeed(t, dir, s.name, body)
	}
	headers := map[string][]byte{
		"short":      {0x81},
		"small":      text("hi").bytes()[:6],
		"len16":      cf{op: ws.OpBinary, lenBits: 16}.bytes(),
		"len64":      cf{op: ws.OpBinary, lenBits: 64, declare: 1 << 40}.bytes(),
		"msb":        {0x82, 0xff, 0x80, 1, 2, 3, 4, 5, 6, 7, 1, 2, 3, 4},
		"unmasked64": {0x82, 0x7f, 0, 0, 0, 0, 0, 0, 0, 1},
	}
	dir = filepath.Join("testdata", "fuzz", "FuzzParseHeader")
	for name, b := range headers {
		writeSeed(t, dir, name, "go test fuzz v1\n[]byte("+strconv.Quote(string(b))+")\n")
	}
}

func writeSeed(t *testing.T, dir, name, body string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
}
