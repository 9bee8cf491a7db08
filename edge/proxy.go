// Package edge decides who the client is when the gateway runs behind
// trusted load balancers: PROXY protocol v1/v2 headers, X-Forwarded-For, and
// the trusted-peer check that gates both.
//
// The PROXY parser is our own rather than github.com/pires/go-proxyproto's:
// that library reads from a *bufio.Reader and reports a short read as one of
// several errors, while the reactor works on peeked bytes and must tell "need
// more bytes" from "garbage" without consuming anything. The formats are
// small (haproxy's proxy-protocol.txt), the parser is strict, allocation-free
// and fuzzed (FuzzParseProxyHeader), and it adds no dependency.
package edge

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net/netip"
)

// MaxHeaderLen caps a PROXY header. v1 is at most 107 bytes by definition;
// v2 may carry TLVs up to 64 KiB, but load balancers send at most a few
// hundred bytes (AWS VPC endpoint id, Azure link id, haproxy SSL info), and a
// header we must buffer before anything else is a cost we bound.
const MaxHeaderLen = 2048

const v1MaxLen = 107 // "PROXY TCP6 " + 2*39 + 2*5 + 3 spaces + CRLF, per the spec

var v2Sig = []byte("\r\n\r\n\x00\r\nQUIT\n")

var v1Prefix = []byte("PROXY ")

// Errors from ParseProxyHeader. All mean: close the connection.
var (
	ErrNotProxy    = errors.New("edge: not a PROXY protocol header")
	ErrTooLong     = errors.New("edge: PROXY header too long")
	ErrMalformedV1 = errors.New("edge: malformed PROXY v1 header")
	ErrMalformedV2 = errors.New("edge: malformed PROXY v2 header")
)

// ParseProxyHeader parses a PROXY protocol v1 or v2 header at the start of
// b, the bytes peeked from a connection of a trusted peer.
//
//   - n > 0, err == nil: the header is b[:n]; discard it. src is the client's
//     address, or the zero AddrPort (!src.IsValid()) for a v1 UNKNOWN, a v2
//     LOCAL (the balancer's own health check), or a v2 address family we do
//     not use (UNSPEC, UNIX, a datagram transport): keep the peer's address.
//   - n == 0, err == nil: b is a prefix of a header; wait for more bytes.
//     Never returned once len(b) >= MaxHeaderLen.
//   - err != nil: not a header, or a bad one.
//
// IPv4-mapped IPv6 sources are unmapped, so that per-IP limits see one
// address per client.
func ParseProxyHeader(b []byte) (src netip.AddrPort, n int, err error) {
	if len(b) == 0 {
		return src, 0, nil
	}
	switch b[0] {
	case 'P':
		return parseV1(b)
	case '\r':
		return parseV2(b)
	}
	return src, 0, ErrNotProxy
}

// HasSignature reports whether b starts with a complete PROXY v1 or v2
// signature. It lets the reactor refuse, and log, a PROXY header sent by a
// peer outside the trusted ranges instead of reading it as TLS or HTTP.
func HasSignature(b []byte) bool {
	return bytes.HasPrefix(b, v1Prefix) || bytes.HasPrefix(b, v2Sig)
}

// isPrefix reports whether b and p agree on their common length.
func isPrefix(b, p []byte) bool {
	k := min(len(b), len(p))
	return bytes.Equal(b[:k], p[:k])
}

func parseV1(b []byte) (netip.AddrPort, int, error) {
	var zero netip.AddrPort
	if !isPrefix(b, v1Prefix) {
		return zero, 0, ErrNotProxy
	}
	lim := b[:min(len(b), v1MaxLen)]
	end := bytes.IndexByte(lim, '\n')
	if end < 0 {
		// Fail early on what can never become a header, rather than
		// waiting for 107 bytes.
		for i, c := range lim {
			if (c < 0x20 || c > 0x7e) && !(c == '\r' && i == len(b)-1) {
				return zero, 0, ErrMalformedV1
			}
		}
		if len(b) >= v1MaxLen {
			return zero, 0, ErrTooLong
		}
		return zero, 0, nil
	}
	if end < 1 || b[end-1] != '\r' {
		return zero, 0, ErrMalformedV1
	}
	line := b[len(v1Prefix) : end-1]
	n := end + 1

	proto, rest, _ := cut(line)
	switch string(proto) {
	case "UNKNOWN":
		// The rest of the line may be anything printable; the receiver must
		// ignore it. Keep it free of control bytes anyway.
		for _, c := range rest {
			if c < 0x20 || c > 0x7e {
				return zero, 0, ErrMalformedV1
			}
		}
		return zero, n, nil
	case "TCP4", "TCP6":
	default:
		return zero, 0, ErrMalformedV1
	}
	srcS, rest, ok1 := cut(rest)
	dstS, rest, ok2 := cut(rest)
	sportS, dportS, ok3 := cut(rest)
	if !ok1 || !ok2 || !ok3 {
		return zero, 0, ErrMalformedV1
	}
	srcA, err1 := parseV1Addr(srcS, proto[3] == '4')
	_, err2 := parseV1Addr(dstS, proto[3] == '4')
	sport, ok4 := parsePort(sportS)
	_, ok5 := parsePort(dportS)
	if err1 != nil || err2 != nil || !ok4 || !ok5 {
		return zero, 0, ErrMalformedV1
	}
	return netip.AddrPortFrom(srcA.Unmap(), sport), n, nil
}

// cut splits at the first space; ok is false when there is none or when the
// field before it is empty (the spec allows exactly one space).
func cut(b []byte) (field, rest []byte, ok bool) {
	i := bytes.IndexByte(b, ' ')
	if i < 0 {
		return b, nil, false
	}
	return b[:i], b[i+1:], i > 0
}

var errAddr = errors.New("bad address")

func parseV1Addr(b []byte, v4 bool) (netip.Addr, error) {
	if len(b) == 0 || len(b) > 39 {
		return netip.Addr{}, errAddr
	}
	for _, c := range b { // no zones, no spaces: digits, hex, dots, colons
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F' || c == '.' || c == ':') {
			return netip.Addr{}, errAddr
		}
	}
	a, err := netip.ParseAddr(string(b))
	if err != nil || a.Is4() != v4 {
		return netip.Addr{}, errAddr
	}
	return a, nil
}

// parsePort accepts 1 to 5 decimal digits up to 65535 ("0" included, no
// sign, no leading zeros).
func parsePort(b []byte) (uint16, bool) {
	if len(b) == 0 || len(b) > 5 || (len(b) > 1 && b[0] == '0') {
		return 0, false
	}
	v := 0
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		v = v*10 + int(c-'0')
	}
	if v > 65535 {
		return 0, false
	}
	return uint16(v), true
}

func parseV2(b []byte) (netip.AddrPort, int, error) {
	var zero netip.AddrPort
	if !isPrefix(b, v2Sig) {
		return zero, 0, ErrNotProxy
	}
	if len(b) < 16 {
		return zero, 0, nil
	}
	verCmd, fam := b[12], b[13]
	if verCmd>>4 != 2 {
		return zero, 0, ErrMalformedV2
	}
	cmd := verCmd & 0x0f
	if cmd > 1 {
		return zero, 0, ErrMalformedV2
	}
	af, proto := fam>>4, fam&0x0f
	if af > 3 || proto > 2 {
		return zero, 0, ErrMalformedV2
	}
	total := 16 + int(binary.BigEndian.Uint16(b[14:16]))
	if total > MaxHeaderLen {
		return zero, 0, ErrTooLong
	}
	if len(b) < total {
		return zero, 0, nil
	}
	body := b[16:total]
	// Address blocks by family; a LOCAL header's body is ignored, but it
	// must still be long enough for the family it names.
	need := [4]int{0, 12, 36, 216}[af]
	if len(body) < need {
		return zero, 0, ErrMalformedV2
	}
	if err := checkTLVs(body[need:]); err != nil {
		return zero, 0, err
	}
	if cmd == 0 || proto != 1 { // LOCAL, or not a stream: use the peer
		return zero, total, nil
	}
	switch af {
	case 1:
		a := netip.AddrFrom4([4]byte(body[0:4]))
		return netip.AddrPortFrom(a, binary.BigEndian.Uint16(body[8:10])), total, nil
	case 2:
		a := netip.AddrFrom16([16]byte(body[0:16])).Unmap()
		return netip.AddrPortFrom(a, binary.BigEndian.Uint16(body[32:34])), total, nil
	}
	return zero, total, nil // UNSPEC or UNIX
}

// checkTLVs only checks that the TLVs tile the rest of the header: we use
// none of them, but a header whose lengths disagree is not to be trusted.
func checkTLVs(b []byte) error {
	for len(b) > 0 {
		if len(b) < 3 {
			return ErrMalformedV2
		}
		l := 3 + int(binary.BigEndian.Uint16(b[1:3]))
		if l > len(b) {
			return ErrMalformedV2
		}
		b = b[l:]
	}
	return nil
}
