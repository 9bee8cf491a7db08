package tlsconn

import (
	"bytes"
	"crypto/tls"
	"reflect"
	"sync"
	"unsafe"
)

// crypto/tls never shrinks a connection's input buffers: rawInput (the
// ciphertext of the record being read) and hand (handshake messages) keep
// the capacity of the largest record they ever held, and input (the
// decrypted record being served) keeps a slice of rawInput's array alive.
// The ClientHello sets both high-water marks: with Go's default hybrid key
// share (X25519MLKEM768) it is a ~1.4 KiB record, so every established
// connection held ~3.5 KiB it would never use again (heap profile of
// 10,000 idle TLS connections: bytes.growSlice under readClientHello, 49 %
// of the heap), and a single 16 KiB record pinned 16 KiB for the
// connection's life.
//
// There is no API to release them, so this file reaches the three fields
// by name through reflection (offsets found once, types checked) and, only
// when all of them are empty, drops them: the hand buffer for good (it is
// used again only for post-handshake messages, rare), rawInput back to a
// pool, and lends a pooled buffer to rawInput before each Read, so that a
// busy connection allocates nothing and an idle one holds nothing. If a
// future Go renames or retypes a field, bufferFields.ok is false, nothing
// is touched, and TestBufferFieldsFound fails.
//
// Only the loop's goroutine calls lend and reclaim, between two Reads: the
// fields belong to the read side (guarded by tls.Conn's input lock, which
// Read takes and releases), never touched by Write or by the handshake
// once it has completed.
var bufferFields = func() (f struct {
	ok                    bool
	rawInput, hand, input uintptr
}) {
	t := reflect.TypeFor[tls.Conn]()
	off := func(name string, want reflect.Type) (uintptr, bool) {
		sf, ok := t.FieldByName(name)
		if !ok || sf.Type != want || len(sf.Index) != 1 {
			return 0, false
		}
		return sf.Offset, true
	}
	buf, rdr := reflect.TypeFor[bytes.Buffer](), reflect.TypeFor[bytes.Reader]()
	var ok1, ok2, ok3 bool
	f.rawInput, ok1 = off("rawInput", buf)
	f.hand, ok2 = off("hand", buf)
	f.input, ok3 = off("input", rdr)
	f.ok = ok1 && ok2 && ok3
	return f
}()

// rawChunk is the size of the lent rawInput buffers: a record of up to
// ~3.5 KiB fits (crypto/tls grows rawInput by the record's length plus
// bytes.MinRead); larger records make crypto/tls grow its own, which is
// pooled too on return when not oversized.
const (
	rawChunk = 4096
	rawMax   = 64 << 10
)

var rawPool = sync.Pool{New: func() any { b := make([]byte, 0, rawChunk); return &b }}

func (c *Conn) fields() (raw, hand *bytes.Buffer, in *bytes.Reader) {
	p := unsafe.Pointer(c.tc)
	return (*bytes.Buffer)(unsafe.Add(p, bufferFields.rawInput)),
		(*bytes.Buffer)(unsafe.Add(p, bufferFields.hand)),
		(*bytes.Reader)(unsafe.Add(p, bufferFields.input))
}

// lend gives rawInput a pooled buffer when it has none, before a Read.
func (c *Conn) lend() {
	if !bufferFields.ok {
		return
	}
	raw, _, _ := c.fields()
	if raw.Cap() == 0 {
		c.rawBuf = rawPool.Get().(*[]byte)
		*raw = *bytes.NewBuffer((*c.rawBuf)[:0])
	}
}

// reclaim drops the input buffers once all of them are empty, after a Read
// that found no complete record.
func (c *Conn) reclaim() {
	if !bufferFields.ok {
		return
	}
	raw, hand, in := c.fields()
	if hand.Len() == 0 && hand.Cap() > 0 {
		*hand = bytes.Buffer{}
	}
	if raw.Len() != 0 || in.Len() != 0 || raw.Cap() == 0 {
		return
	}
	raw.Reset() // off = 0: Bytes is the whole array
	b := raw.Bytes()
	*raw = bytes.Buffer{}
	in.Reset(nil) // it may still point into b
	// Back to the pool in the slice header it came in (no allocation),
	// holding whatever array crypto/tls ended up with.
	if p := c.rawBuf; p != nil {
		c.rawBuf = nil
		if cap(b) >= rawChunk && cap(b) <= rawMax {
			*p = b
			rawPool.Put(p)
		}
	}
}

// feedDirect appends ciphertext of an established connection straight to
// crypto/tls's record buffer (rawInput), on the loop, when the adapter
// holds none that came before it. crypto/tls then finds whole records
// where it looks first and never calls the adapter: one copy instead of
// two, no adapter lock, and none of readFromUntil's allocations. It
// reports false, and the adapter keeps the bytes as before, when the
// fields are unknown or b does not fit the lent buffer: rawInput must not
// grow a heap array per large read (the adapter's pooled 64 KiB buffers
// serve those).
func (c *Conn) feedDirect(b []byte) bool {
	if !bufferFields.ok {
		return false
	}
	c.lend()
	raw, _, in := c.fields()
	if raw.Available() < len(b) {
		// Slide the unread bytes to the front, which crypto/tls does
		// too, but never under decrypted bytes still to be served: they
		// live in the same array.
		pending := raw.Bytes()
		if in.Len() > 0 || len(pending)+len(b) > raw.Cap() {
			return false
		}
		raw.Reset()
		arr := raw.AvailableBuffer()[:len(pending)]
		copy(arr, pending)
		*raw = *bytes.NewBuffer(arr)
	}
	raw.Write(b)
	return true
}

// idle reports that a Read could only end in ErrWouldBlock: no decrypted
// bytes left to serve and no ciphertext, in rawInput or in the adapter.
// (A partial record still goes to crypto/tls, which judges its header at
// once: a bad type or an oversized length fails there, not after the
// bytes it claims have arrived.)
func (c *Conn) idle() bool {
	if !bufferFields.ok {
		return false
	}
	raw, _, in := c.fields()
	if in.Len() > 0 || raw.Len() > 0 {
		return false
	}
	r := &c.raw
	r.mu.Lock()
	n := r.pendingLocked()
	r.mu.Unlock()
	return n == 0
}
