package conformance

import (
	"bytes"
	"fmt"
	"time"

	"github.com/mcpgate/gateway/conformance/wsraw"
)

// kosme is "κόσμε", Autobahn's UTF-8 sample (2- and 3-byte sequences).
var kosme = []byte{0xce, 0xba, 0xe1, 0xbd, 0xb9, 0xcf, 0x83, 0xce, 0xbc, 0xce, 0xb5}

type utf8Sample struct {
	desc string
	b    []byte
}

func hexb(b ...byte) []byte { return b }

// Valid UTF-8: every one is echoed exactly.
var validUTF8 = []utf8Sample{
	{"ASCII and Latin-1 supplement (\"Hello-µ@ßöäüàá-UTF-8!!\")", []byte("Hello-µ@ßöäüàá-UTF-8!!")},
	{"\"κόσμε\" (2- and 3-byte sequences)", kosme},
	{"first code point of each length: U+0080, U+0800, U+10000", hexb(0xc2, 0x80, 0xe0, 0xa0, 0x80, 0xf0, 0x90, 0x80, 0x80)},
	{"last code point of each length: U+007F, U+07FF, U+FFFF, U+10FFFF", hexb(0x7f, 0xdf, 0xbf, 0xef, 0xbf, 0xbf, 0xf4, 0x8f, 0xbf, 0xbf)},
	{"around the surrogates: U+D7FF, U+E000, U+FFFD", hexb(0xed, 0x9f, 0xbf, 0xee, 0x80, 0x80, 0xef, 0xbf, 0xbd)},
	{"noncharacters U+FFFE, U+FDD0, U+1FFFF (valid UTF-8)", hexb(0xef, 0xbf, 0xbe, 0xef, 0xb7, 0x90, 0xf0, 0x9f, 0xbf, 0xbf)},
	{"emoji and CJK (\"😀 你好\")", []byte("😀 你好")},
}

// Invalid UTF-8, grouped as the table shows them; each fails with 1007.
var invalidUTF8 = [][]utf8Sample{
	{ // 6.3 malformed sequences
		{"lone continuation byte 0x80", hexb(0x80)},
		{"lone continuation byte 0xBF", hexb(0xbf)},
		{"all 64 continuation bytes 0x80..0xBF", seq(0x80, 0xbf)},
		{"2-byte start 0xC2 followed by a space", hexb(0xc2, 0x20)},
		{"3-byte sequence missing its last byte (E0 A0)", hexb(0xe0, 0xa0)},
		{"4-byte sequence missing its last byte (F0 9F 98)", hexb(0xf0, 0x9f, 0x98)},
		{"byte 0xFE", hexb(0xfe)},
		{"byte 0xFF", hexb(0xff)},
		{"bytes FE FE FF FF", hexb(0xfe, 0xfe, 0xff, 0xff)},
		{"\"κόσμε\" with its last byte cut (ends in CE)", kosme[:len(kosme)-1]},
	},
	{ // 6.4 overlong encodings
		{"overlong '/' in 2 bytes (C0 AF)", hexb(0xc0, 0xaf)},
		{"overlong '/' in 3 bytes (E0 80 AF)", hexb(0xe0, 0x80, 0xaf)},
		{"overlong '/' in 4 bytes (F0 80 80 AF)", hexb(0xf0, 0x80, 0x80, 0xaf)},
		{"largest overlong 2-byte (C1 BF)", hexb(0xc1, 0xbf)},
		{"largest overlong 3-byte (E0 9F BF)", hexb(0xe0, 0x9f, 0xbf)},
		{"largest overlong 4-byte (F0 8F BF BF)", hexb(0xf0, 0x8f, 0xbf, 0xbf)},
		{"overlong NUL (C0 80)", hexb(0xc0, 0x80)},
		{"overlong '/' in 5 bytes (F8 80 80 80 AF)", hexb(0xf8, 0x80, 0x80, 0x80, 0xaf)},
	},
	{ // 6.5 UTF-16 surrogates
		{"high surrogate U+D800 (ED A0 80)", hexb(0xed, 0xa0, 0x80)},
		{"high surrogate U+DB7F (ED AD BF)", hexb(0xed, 0xad, 0xbf)},
		{"low surrogate U+DC00 (ED B0 80)", hexb(0xed, 0xb0, 0x80)},
		{"low surrogate U+DFFF (ED BF BF)", hexb(0xed, 0xbf, 0xbf)},
		{"surrogate pair U+D800 U+DC00 as CESU-8 (ED A0 80 ED B0 80)", hexb(0xed, 0xa0, 0x80, 0xed, 0xb0, 0x80)},
		{"\"κόσμε\" + ED A0 80 + \"edited\" (Autobahn 6.3.1)", cat(kosme, hexb(0xed, 0xa0, 0x80), []byte("edited"))},
	},
	{ // 6.6 beyond U+10FFFF
		{"U+110000 (F4 90 80 80)", hexb(0xf4, 0x90, 0x80, 0x80)},
		{"U+1FFFFF (F7 BF BF BF)", hexb(0xf7, 0xbf, 0xbf, 0xbf)},
		{"start byte F5 (F5 80 80 80)", hexb(0xf5, 0x80, 0x80, 0x80)},
		{"5-byte sequence (F8 88 80 80 80)", hexb(0xf8, 0x88, 0x80, 0x80, 0x80)},
		{"6-byte sequence (FC 84 80 80 80 80)", hexb(0xfc, 0x84, 0x80, 0x80, 0x80, 0x80)},
	},
}

func seq(from, to byte) []byte {
	var b []byte
	for c := int(from); c <= int(to); c++ {
		b = append(b, byte(c))
	}
	return b
}

func cat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

// Section 6: UTF-8 handling.
func utf8Cases() []testCase {
	var cs []testCase
	for i, s := range validUTF8 {
		s := s
		cs = append(cs, testCase{ID: fmt.Sprintf("6.1.%d", i+1), Desc: "valid: " + s.desc, Expect: "echoed",
			Run: func(x *cx) {
				id := x.id()
				x.send(wsraw.Frame(true, 0, wsraw.OpText, echoReq(id, s.b)))
				x.expectEcho(id, s.b)
				x.alive()
			}})
	}
	cs = append(cs, testCase{ID: "6.2.1", Desc: "all valid samples of 6.1, each frame written byte by byte", Expect: "all echoed",
		Run: func(x *cx) {
			for _, s := range validUTF8 {
				id := x.id()
				x.sendChunked(7, wsraw.Frame(true, 0, wsraw.OpText, echoReq(id, s.b)))
				x.expectEcho(id, s.b)
			}
		}})
	for g, group := range invalidUTF8 {
		for i, s := range group {
			s := s
			cs = append(cs, testCase{ID: fmt.Sprintf("6.%d.%d", g+3, i+1), Desc: "invalid: " + s.desc, Expect: "close 1007",
				Run: func(x *cx) {
					x.send(wsraw.Frame(true, 0, wsraw.OpText, echoReq(x.id(), s.b)))
					x.expectClose(1007)
				}})
		}
	}
	// Valid sequences split across fragments.
	split := func(desc string, msg []byte, cut int) testCase {
		return testCase{Desc: desc, Expect: "echoed", Run: func(x *cx) {
			id := x.id()
			req := echoReq(id, msg)
			at := len(echoReq(id, nil)) - 4 + cut
			x.send(fragments(req, at)...)
			x.expectEcho(id, msg)
			x.alive()
		}}
	}
	frag := []testCase{
		split("2-byte U+00E9 split between its bytes (C3 | A9)", hexb(0xc3, 0xa9), 1),
		split("3-byte U+20AC split after its first byte (E2 | 82 AC)", hexb(0xe2, 0x82, 0xac), 1),
		split("3-byte U+20AC split after its second byte (E2 82 | AC)", hexb(0xe2, 0x82, 0xac), 2),
		split("4-byte U+1F600 split 1 | 3 (F0 | 9F 98 80)", hexb(0xf0, 0x9f, 0x98, 0x80), 1),
		split("4-byte U+1F600 split 2 | 2 (F0 9F | 98 80)", hexb(0xf0, 0x9f, 0x98, 0x80), 2),
		split("4-byte U+1F600 split 3 | 1 (F0 9F 98 | 80)", hexb(0xf0, 0x9f, 0x98, 0x80), 3),
		{Desc: "\"κόσμε\" split into 2 fragments at each of its byte offsets (12 messages)", Expect: "all echoed",
			Run: func(x *cx) {
				for cut := 0; cut <= len(kosme); cut++ {
					id := x.id()
					req := echoReq(id, kosme)
					x.send(fragments(req, len(echoReq(id, nil))-4+cut)...)
					x.expectEcho(id, kosme)
				}
			}},
		{Desc: "message with 2-, 3- and 4-byte sequences in 1-byte fragments", Expect: "echoed",
			Run: func(x *cx) {
				id := x.id()
				msg := []byte("κόσμε € 😀 ok")
				req := echoReq(id, msg)
				x.send(fragments(req, everyN(req, 1)...)...)
				x.expectEcho(id, msg)
			}},
	}
	for i := range frag {
		frag[i].ID = fmt.Sprintf("6.7.%d", i+1)
	}
	cs = append(cs, frag...)
	// Invalid sequences split across fragments; closing as soon as the
	// prefix cannot be completed (fail-fast) is allowed, closing when the
	// message ends is required.
	bad := []struct {
		desc  string
		parts [][]byte
		chunk int
	}{
		{"\"κόσμε\" + F4 | 90 80 80 (U+110000 split across fragments) + \"edited\" (Autobahn 6.4.1)",
			[][]byte{cat(kosme, hexb(0xf4)), hexb(0x90, 0x80, 0x80), []byte("edited")}, 0},
		{"\"κόσμε\" + F4 90 | 80 80 + \"edited\": first fragment already invalid (Autobahn 6.4.2)",
			[][]byte{cat(kosme, hexb(0xf4, 0x90)), hexb(0x80, 0x80), []byte("edited")}, 0},
		{"surrogate split across fragments (ED | A0 80)", [][]byte{hexb(0xed), hexb(0xa0, 0x80)}, 0},
		{"overlong split across fragments (E0 | 80 AF)", [][]byte{hexb(0xe0), hexb(0x80, 0xaf)}, 0},
		{"2-byte start at the end of a fragment, next fragment starts with ASCII (C2 | \"x\")", [][]byte{hexb(0xc2), []byte("x")}, 0},
		{"overlong sequence in the first of 2 fragments (C0 AF | \"rest\")", [][]byte{hexb(0xc0, 0xaf), []byte("rest")}, 0},
		{"Autobahn 6.4.1 with every frame written byte by byte", [][]byte{cat(kosme, hexb(0xf4)), hexb(0x90, 0x80, 0x80), []byte("edited")}, 1},
	}
	for i, b := range bad {
		b := b
		cs = append(cs, testCase{ID: fmt.Sprintf("6.8.%d", i+1), Desc: b.desc, Expect: "close 1007 (at the latest when the message ends)",
			Run: func(x *cx) { badFragments(x, b.parts, b.chunk) }})
	}
	cs = append(cs, testCase{ID: fmt.Sprintf("6.8.%d", len(bad)+1),
		Desc: "final fragment ends inside a 3-byte sequence (... | E2 82 at the end of the message)", Expect: "close 1007",
		Run: func(x *cx) {
			req := echoReq(x.id(), nil)
			x.send(wsraw.Frame(false, 0, wsraw.OpText, req), wsraw.Frame(true, 0, wsraw.OpContinuation, hexb(0xe2, 0x82)))
			x.expectClose(1007)
		}})
	return cs
}

// badFragments sends an echo request whose message is parts joined, one
// fragment per part (the JSON prefix goes with the first part, the suffix
// with the last), and expects 1007. After each non-final fragment it looks
// for an early close and notes where the gateway failed.
func badFragments(x *cx, parts [][]byte, chunk int) {
	x.t.Helper()
	id := x.id()
	prefix := echoReq(id, nil)
	suffix := prefix[len(prefix)-4:]
	prefix = prefix[:len(prefix)-4]
	for i, p := range parts {
		op := wsraw.OpContinuation
		if i == 0 {
			op = wsraw.OpText
			p = cat(prefix, p)
		}
		last := i == len(parts)-1
		if last {
			p = cat(p, suffix)
		}
		f := wsraw.Frame(last, 0, op, p)
		var err error
		if chunk > 0 {
			err = x.c.WriteChunked(f, chunk, time.Millisecond)
		} else {
			err = x.c.Write(f)
		}
		if err != nil { // closed while we wrote: the close frame is in
			x.note("gateway closed during fragment %d of %d", i+1, len(parts))
			break
		}
		if last {
			x.note("at message end")
			break
		}
		if got, err := x.c.ReadFrame(150 * time.Millisecond); err == nil {
			code, _ := wsraw.ParseClose(got.Payload)
			if got.Op != wsraw.OpClose || code != 1007 {
				x.fail("after fragment %d: %s", i+1, got)
			}
			x.note("fail-fast after fragment %d of %d", i+1, len(parts))
			x.note("%s", got)
			if _, err := x.c.WaitEOF(3 * time.Second); err != nil {
				x.fail("after the close: %v", err)
			}
			x.note("TCP closed")
			return
		} else if !wsraw.IsTimeout(err) {
			x.fail("after fragment %d: connection ended (%v)", i+1, err)
		}
	}
	x.expectClose(1007)
}
