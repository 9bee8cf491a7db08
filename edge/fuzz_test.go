package edge

import (
	"encoding/binary"

	"net/netip"
	"testing"
)

// FuzzParseProxyHeader checks, on any input, the properties the reactor
// relies on: no panic; n within the input and the cap; "need more" never
// returned once MaxHeaderLen bytes are in; the header alone parses the same;
// every proper prefix of a header asks for more bytes; a prefix never
// contradicts the full input; the source, re-encoded, parses back.
// Seeds: f.Add below plus testdata/fuzz/FuzzParseProxyHeader.
func FuzzParseProxyHeader(f *testing.F) {
	for _, s := range []string{
		"PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\n",
		"PROXY TCP6 2001:db8::1 2001:db8::2 65535 443\r\nGET /",
		"PROXY UNKNOWN\r\n",
		"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n",
		"GET / HTTP/1.1\r\n",
		"\x16\x03\x01\x02\x00\x01",
	} {
		f.Add([]byte(s))
	}
	f.Add(v2(0x21, 0x11, v4body("203.0.113.7", "10.0.0.1", 40000, 443)))
	f.Add(v2(0x21, 0x21, append(v6body("2001:db8::7", "::1", 1, 443), tlv(0x04, []byte("x"))...)))
	f.Add(v2(0x20, 0x00, nil))
	f.Fuzz(func(t *testing.T, b []byte) {
		src, n, err := ParseProxyHeader(b)
		if n < 0 || n > len(b) || n > MaxHeaderLen {
			t.Fatalf("n=%d for %d bytes", n, len(b))
		}
		if err != nil && (n != 0 || src.IsValid()) {
			t.Fatalf("error with n=%d src=%v", n, src)
		}
		if err == nil && n == 0 {
			if len(b) >= MaxHeaderLen {
				t.Fatalf("need more at %d bytes", len(b))
			}
			if src.IsValid() {
				t.Fatal("src without a header")
			}
		}
		// A prefix either needs more, or agrees with the full input.
		for _, k := range []int{len(b) / 2, len(b) - 1, 16, 107} {
			if k < 0 || k >= len(b) {
				continue
			}
			ps, pn, perr := ParseProxyHeader(b[:k])
			if pn == 0 && perr == nil {
				continue
			}
			if (perr != nil) != (err != nil) || pn != n || ps != src {
				t.Fatalf("prefix %d: (%v %d %v), full: (%v %d %v)", k, ps, pn, perr, src, n, err)
			}
		}
		if err != nil || n == 0 {
			return
		}
		if s2, n2, err2 := ParseProxyHeader(b[:n]); err2 != nil || n2 != n || s2 != src {
			t.Fatalf("header alone: %v %d %v", s2, n2, err2)
		}
		if s3, n3, err3 := ParseProxyHeader(b[:n-1]); err3 != nil || n3 != 0 || s3.IsValid() {
			t.Fatalf("header minus one byte: %v %d %v", s3, n3, err3)
		}
		if src.IsValid() {
			if src.Addr().Is4In6() || src.Addr().Zone() != "" {
				t.Fatalf("src %v not normalised", src)
			}
			for _, h := range encode(src) {
				if s4, n4, err4 := ParseProxyHeader(h); err4 != nil || n4 != len(h) || s4 != src {
					t.Fatalf("re-encoded %q: %v %d %v", h, s4, n4, err4)
				}
			}
		}
	})
}

// encode writes src as a v1 and a v2 header.
func encode(src netip.AddrPort) [][]byte {
	a := src.Addr()
	if a.Is4() {
		return [][]byte{
			[]byte("PROXY TCP4 " + a.String() + " 127.0.0.1 " + itoa(src.Port()) + " 443\r\n"),
			v2(0x21, 0x11, v4body(a.String(), "127.0.0.1", src.Port(), 443)),
		}
	}
	b := a.As16()
	body := append(b[:], make([]byte, 16)...)
	body = binary.BigEndian.AppendUint16(body, src.Port())
	body = binary.BigEndian.AppendUint16(body, 443)
	return [][]byte{
		[]byte("PROXY TCP6 " + a.String() + " ::1 " + itoa(src.Port()) + " 443\r\n"),
		v2(0x21, 0x21, body),
	}
}

func itoa(p uint16) string {
	if p == 0 {
		return "0"
	}
	var b []byte
	for ; p > 0; p /= 10 {
		b = append([]byte{byte('0' + p%10)}, b...)
	}
	return string(b)
}
