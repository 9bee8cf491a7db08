package tlsconn

// TLS record and handshake framing (RFC 8446 5.1 and 4): enough to tell when
// a ClientHello has fully arrived, so that the handshake pool only ever gets
// a connection it can work on at once.
const (
	recordHeaderLen    = 5
	recordTypeHS       = 22 // handshake
	hsHeaderLen        = 4
	hsTypeClientHello  = 1
	maxRecordPlaintext = 16384 + 2048 // TLSCiphertext may exceed TLSPlaintext by 2048
)

// helloReady reports whether b holds a complete ClientHello, or holds
// something crypto/tls should see at once because it will never become one
// (not a TLS handshake record: a plaintext HTTP request, garbage, an
// oversized record). It reports false only while b is a proper prefix of a
// ClientHello, which may span several handshake records.
func helloReady(b []byte) bool {
	need := -1 // handshake message bytes still expected; -1 until its header is in
	var hdr [hsHeaderLen]byte
	got := 0 // bytes of the handshake header gathered so far
	for len(b) > 0 {
		if len(b) < recordHeaderLen {
			return b[0] != recordTypeHS // a partial header: wait, unless it cannot be one
		}
		if b[0] != recordTypeHS || b[1] != 3 {
			return true
		}
		n := int(b[3])<<8 | int(b[4])
		if n == 0 || n > maxRecordPlaintext {
			return true
		}
		frag := b[recordHeaderLen:]
		if len(frag) > n {
			frag = frag[:n]
		}
		for len(frag) > 0 {
			if need < 0 {
				k := copy(hdr[got:], frag)
				got += k
				frag = frag[k:]
				if got < hsHeaderLen {
					continue
				}
				if hdr[0] != hsTypeClientHello {
					return true
				}
				need = int(hdr[1])<<16 | int(hdr[2])<<8 | int(hdr[3])
			}
			k := min(need, len(frag))
			need -= k
			frag = frag[k:]
			if need == 0 {
				return true
			}
		}
		if len(b) < recordHeaderLen+n {
			return false // the record itself is still arriving
		}
		b = b[recordHeaderLen+n:]
	}
	return false
}
