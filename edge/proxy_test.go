package edge

import (
	"encoding/binary"
	"errors"
	"net/netip"
	"strings"
	"testing"
)

// v2 builds a PROXY v2 header: verCmd 0x21 (PROXY) or 0x20 (LOCAL), fam
// 0x11 TCP4, 0x21 TCP6, ...
func v2(verCmd, fam byte, body []byte) []byte {
	h := append([]byte(nil), v2Sig...)
	h = append(h, verCmd, fam, 0, 0)
	binary.BigEndian.PutUint16(h[14:], uint16(len(body)))
	return append(h, body...)
}

func v4body(src, dst string, sport, dport uint16) []byte {
	s, d := netip.MustParseAddr(src).As4(), netip.MustParseAddr(dst).As4()
	b := append(s[:], d[:]...)
	b = binary.BigEndian.AppendUint16(b, sport)
	return binary.BigEndian.AppendUint16(b, dport)
}

func v6body(src, dst string, sport, dport uint16) []byte {
	s, d := netip.MustParseAddr(src).As16(), netip.MustParseAddr(dst).As16()
	b := append(s[:], d[:]...)
	b = binary.BigEndian.AppendUint16(b, sport)
	return binary.BigEndian.AppendUint16(b, dport)
}

func tlv(typ byte, val []byte) []byte {
	b := []byte{typ, 0, 0}
	binary.BigEndian.PutUint16(b[1:], uint16(len(val)))
	return append(b, val...)
}

func TestParseValid(t *testing.T) {
	after := []byte("\x16\x03\x01 rest of stream")
	cases := []struct {
		name string
		hdr  []byte
		src  string // "" for the zero AddrPort
	}{
		{"v1 TCP4", []byte("PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\n"), "192.0.2.1:56324"},
		{"v1 TCP6", []byte("PROXY TCP6 2001:db8::1 2001:db8::2 65535 443\r\n"), "[2001:db8::1]:65535"},
		{"v1 TCP6 mapped", []byte("PROXY TCP6 ::ffff:192.0.2.9 ::1 0 443\r\n"), "192.0.2.9:0"},
		{"v1 UNKNOWN", []byte("PROXY UNKNOWN\r\n"), ""},
		{"v1 UNKNOWN with addresses", []byte("PROXY UNKNOWN ffff:f...f:ffff ffff:f...f:ffff 65535 65535\r\n"), ""},
		{"v1 longest", []byte("PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n"),
			"[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535"},
		{"v2 TCP4", v2(0x21, 0x11, v4body("203.0.113.7", "10.0.0.1", 40000, 443)), "203.0.113.7:40000"},
		{"v2 TCP6", v2(0x21, 0x21, v6body("2001:db8::7", "2001:db8::1", 1, 443)), "[2001:db8::7]:1"},
		{"v2 TCP6 mapped", v2(0x21, 0x21, v6body("::ffff:203.0.113.8", "::1", 2, 443)), "203.0.113.8:2"},
		{"v2 TCP4 with TLVs", v2(0x21, 0x11, append(v4body("203.0.113.7", "10.0.0.1", 1234, 443),
			append(tlv(0xEA, []byte("\x01vpce-0123456789abcdef")), tlv(0x04, nil)...)...)), "203.0.113.7:1234"},
		{"v2 LOCAL", v2(0x20, 0x00, nil), ""},
		{"v2 LOCAL with TCP4 block", v2(0x20, 0x11, v4body("1.2.3.4", "5.6.7.8", 1, 2)), ""},
		{"v2 PROXY UNSPEC", v2(0x21, 0x00, nil), ""},
		{"v2 UDP4", v2(0x21, 0x12, v4body("1.2.3.4", "5.6.7.8", 1, 2)), ""},
		{"v2 UNIX", v2(0x21, 0x31, make([]byte, 216)), ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			in := append(append([]byte(nil), tc.hdr...), after...)
			src, n, err := ParseProxyHeader(in)
			if err != nil || n != len(tc.hdr) {
				t.Fatalf("n=%d err=%v, want n=%d", n, err, len(tc.hdr))
			}
			if tc.src == "" {
				if src.IsValid() {
					t.Fatalf("src %v, want none", src)
				}
			} else if src != netip.MustParseAddrPort(tc.src) {
				t.Fatalf("src %v, want %s", src, tc.src)
			}
			if !HasSignature(in) {
				t.Fatal("HasSignature false")
			}
			// Every proper prefix asks for more bytes.
			for k := 0; k < len(tc.hdr); k++ {
				if s, n, err := ParseProxyHeader(tc.hdr[:k]); n != 0 || err != nil || s.IsValid() {
					t.Fatalf("prefix %d: %v %d %v", k, s, n, err)
				}
			}
		})
	}
}

func TestParseInvalid(t *testing.T) {
	long := "PROXY TCP4 " + strings.Repeat("1", 100)
	cases := []struct {
		name string
		in   []byte
		want error
	}{
		{"http", []byte("GET / HTTP/1.1\r\n"), ErrNotProxy},
		{"tls", []byte{0x16, 0x03, 0x01, 0x02, 0x00, 0x01}, ErrNotProxy},
		{"P but not PROXY", []byte("POST / HTTP/1.1\r\n"), ErrNotProxy},
		{"lowercase", []byte("proxy TCP4 1.2.3.4 1.2.3.4 1 2\r\n"), ErrNotProxy},
		{"v1 no CRLF within 107", []byte(long), ErrTooLong},
		{"v1 LF without CR", []byte("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n"), ErrMalformedV1},
		{"v1 CR then junk", []byte("PROXY TCP4 1.2.3.4\rX"), ErrMalformedV1},
		{"v1 NUL", []byte("PROXY TCP4 \x00"), ErrMalformedV1},
		{"v1 double space", []byte("PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n"), ErrMalformedV1},
		{"v1 missing port", []byte("PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n"), ErrMalformedV1},
		{"v1 extra field", []byte("PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n"), ErrMalformedV1},
		{"v1 port too big", []byte("PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n"), ErrMalformedV1},
		{"v1 port leading zero", []byte("PROXY TCP4 1.2.3.4 5.6.7.8 080 2\r\n"), ErrMalformedV1},
		{"v1 port sign", []byte("PROXY TCP4 1.2.3.4 5.6.7.8 +80 2\r\n"), ErrMalformedV1},
		{"v1 v6 in TCP4", []byte("PROXY TCP4 ::1 ::1 1 2\r\n"), ErrMalformedV1},
		{"v1 v4 in TCP6", []byte("PROXY TCP6 1.2.3.4 1.2.3.4 1 2\r\n"), ErrMalformedV1},
		{"v1 zone", []byte("PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n"), ErrMalformedV1},
		{"v1 octal", []byte("PROXY TCP4 01.2.3.4 5.6.7.8 1 2\r\n"), ErrMalformedV1},
		{"v1 hostname", []byte("PROXY TCP4 example.com 5.6.7.8 1 2\r\n"), ErrMalformedV1},
		{"v1 UDP4", []byte("PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n"), ErrMalformedV1},
		{"v1 empty", []byte("PROXY \r\n"), ErrMalformedV1},
		{"v2 version 1", v2(0x11, 0x11, v4body("1.2.3.4", "5.6.7.8", 1, 2)), ErrMalformedV2},
		{"v2 command 2", v2(0x22, 0x11, v4body("1.2.3.4", "5.6.7.8", 1, 2)), ErrMalformedV2},
		{"v2 family 4", v2(0x21, 0x41, v4body("1.2.3.4", "5.6.7.8", 1, 2)), ErrMalformedV2},
		{"v2 protocol 3", v2(0x21, 0x13, v4body("1.2.3.4", "5.6.7.8", 1, 2)), ErrMalformedV2},
		{"v2 TCP4 short block", v2(0x21, 0x11, make([]byte, 11)), ErrMalformedV2},
		{"v2 TCP6 short block", v2(0x21, 0x21, make([]byte, 35)), ErrMalformedV2},
		{"v2 truncated TLV", v2(0x21, 0x11, append(v4body("1.2.3.4", "5.6.7.8", 1, 2), 0x04, 0x00)), ErrMalformedV2},
		{"v2 TLV overruns", v2(0x21, 0x11, append(v4body("1.2.3.4", "5.6.7.8", 1, 2), 0x04, 0x00, 0x05, 1)), ErrMalformedV2},
		{"v2 bad signature", append([]byte("\r\n\r\n\x00\r\nQUIT\r"), 0x21, 0x11, 0, 0), ErrNotProxy},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			src, n, err := ParseProxyHeader(tc.in)
			if !errors.Is(err, tc.want) || n != 0 || src.IsValid() {
				t.Fatalf("got %v %d %v, want %v", src, n, err, tc.want)
			}
		})
	}
}

func TestParseOversizedV2(t *testing.T) {
	// The declared length alone decides: no need to wait for 64 KiB.
	hdr := append([]byte(nil), v2Sig...)
	hdr = append(hdr, 0x21, 0x11, 0xff, 0xff)
	if _, n, err := ParseProxyHeader(hdr); !errors.Is(err, ErrTooLong) || n != 0 {
		t.Fatalf("n=%d err=%v", n, err)
	}
	// Just under the cap is fine.
	body := append(v4body("1.2.3.4", "5.6.7.8", 1, 2), tlv(0x04, make([]byte, MaxHeaderLen-16-12-3))...)
	if src, n, err := ParseProxyHeader(v2(0x21, 0x11, body)); err != nil || n != MaxHeaderLen || src.Port() != 1 {
		t.Fatalf("at the cap: %v %d %v", src, n, err)
	}
	body = append(body, 0x04, 0, 0)
	if _, _, err := ParseProxyHeader(v2(0x21, 0x11, body)); !errors.Is(err, ErrTooLong) {
		t.Fatalf("over the cap: %v", err)
	}
}

func TestParseNeedMore(t *testing.T) {
	for _, in := range []string{"", "P", "PROXY", "PROXY TCP4 1.2.3.4", "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r",
		"\r", "\r\n\r\n\x00\r\nQUIT\n", "\r\n\r\n\x00\r\nQUIT\n\x21\x11\x00"} {
		if src, n, err := ParseProxyHeader([]byte(in)); n != 0 || err != nil || src.IsValid() {
			t.Fatalf("%q: %v %d %v", in, src, n, err)
		}
	}
	if HasSignature([]byte("PROXY")) || HasSignature([]byte("\r\n\r\n")) || HasSignature([]byte("GET /")) {
		t.Fatal("HasSignature on a partial or foreign prefix")
	}
	// A header longer than any PROXY v1 line is refused once 107 bytes are in.
	b := []byte("PROXY UNKNOWN " + strings.Repeat("x", 200))
	if _, _, err := ParseProxyHeader(b[:106]); err != nil {
		t.Fatalf("106 bytes: %v", err)
	}
	if _, _, err := ParseProxyHeader(b[:107]); !errors.Is(err, ErrTooLong) {
		t.Fatalf("107 bytes: %v", err)
	}
}

func TestParseDoesNotAllocate(t *testing.T) {
	in := v2(0x21, 0x21, v6body("2001:db8::7", "2001:db8::1", 1, 443))
	in1 := []byte("PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\n")
	if a := testing.AllocsPerRun(100, func() { ParseProxyHeader(in) }); a != 0 {
		t.Fatalf("v2: %v allocs", a)
	}
	// v1 converts the address text for netip.ParseAddr.
	if a := testing.AllocsPerRun(100, func() { ParseProxyHeader(in1) }); a > 2 {
		t.Fatalf("v1: %v allocs", a)
	}
}

func BenchmarkParseProxyHeader(b *testing.B) {
	for _, tc := range []struct {
		name string
		in   []byte
	}{
		{"v1", []byte("PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\n")},
		{"v2", v2(0x21, 0x11, v4body("203.0.113.7", "10.0.0.1", 40000, 443))},
	} {
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			for range b.N {
				ParseProxyHeader(tc.in)
			}
		})
	}
}
