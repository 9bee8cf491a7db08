package tlsconn

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"testing"
)

// TestFeedSplits: ciphertext fed in random pieces (a byte to more than a
// gnet read), read back with random buffer sizes and sometimes left unread
// across Feeds (the reactor's decrypted-input cap), comes out as the
// plaintext sent, whichever way each Feed went (straight to crypto/tls's
// record buffer, or through the adapter).
func TestFeedSplits(t *testing.T) {
	for _, ver := range versions() {
		t.Run(ver.name, func(t *testing.T) {
			for seed := range uint64(20) {
				rng := rand.New(rand.NewPCG(seed, 7))
				srvConn, cc, p, _ := benchPair(t, ver.v)
				var recs [][]byte
				p.tap = &recs
				var want []byte
				for range 60 {
					n := 1 + rng.IntN(200)
					if rng.IntN(8) == 0 {
						n = 1 + rng.IntN(40000)
					}
					msg := make([]byte, n)
					for i := range msg {
						msg[i] = byte(rng.Uint32())
					}
					if _, err := cc.Write(msg); err != nil {
						t.Fatal(err)
					}
					want = append(want, msg...)
				}
				p.tap = nil
				stream := bytes.Join(recs, nil)

				var got []byte
				rbuf := make([]byte, 5000)
				read := func(limit int) {
					for i := 0; limit < 0 || i < limit; i++ {
						n, err := srvConn.Read(rbuf[:1+rng.IntN(len(rbuf))])
						got = append(got, rbuf[:n]...)
						if errors.Is(err, ErrWouldBlock) {
							return
						}
						if err != nil {
							t.Fatalf("seed %d: %v", seed, err)
						}
					}
				}
				for len(stream) > 0 {
					n := 1 + rng.IntN(300)
					switch rng.IntN(4) {
					case 0:
						n = 1 + rng.IntN(70000)
					case 1:
						n = 4000 + rng.IntN(200)
					}
					n = min(n, len(stream))
					// The caller's slice is reused at once, as gnet's is.
					chunk := append([]byte(nil), stream[:n]...)
					stream = stream[n:]
					if err := srvConn.Feed(chunk); err != nil {
						t.Fatalf("seed %d: feed: %v", seed, err)
					}
					clear(chunk)
					if rng.IntN(3) == 0 {
						read(rng.IntN(3))
					} else {
						read(-1)
					}
				}
				read(-1)
				if !bytes.Equal(got, want) {
					t.Fatalf("seed %d: got %d bytes, want %d (equal prefix %d)", seed, len(got), len(want), prefix(got, want))
				}
				if b := srvConn.Buffered(); b != 0 {
					t.Fatalf("seed %d: %d bytes still buffered", seed, b)
				}
			}
		})
	}
}

func prefix(a, b []byte) int {
	i := 0
	for i < len(a) && i < len(b) && a[i] == b[i] {
		i++
	}
	return i
}

// TestReadAllocs: a small record fed and read as the loop does (Feed, then
// Read until ErrWouldBlock) allocates nothing: crypto/tls finds the record
// in its buffer and is not asked again once it is empty.
func TestReadAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts differ under -race")
	}
	for _, ver := range versions() {
		t.Run(ver.name, func(t *testing.T) {
			srvConn, cc, p, _ := benchPair(t, ver.v)
			var recs [][]byte
			p.tap = &recs
			msg := make([]byte, 64)
			const runs = 200
			for range runs + 1 {
				if _, err := cc.Write(msg); err != nil {
					t.Fatal(err)
				}
			}
			p.tap = nil
			rbuf := make([]byte, 4096)
			i := 0
			allocs := testing.AllocsPerRun(runs, func() {
				if err := srvConn.Feed(recs[i]); err != nil {
					t.Fatal(err)
				}
				i++
				for {
					_, err := srvConn.Read(rbuf)
					if errors.Is(err, ErrWouldBlock) {
						return
					}
					if err != nil {
						t.Fatal(err)
					}
				}
			})
			if allocs != 0 {
				t.Fatalf("%.1f allocations per small record read, want 0", allocs)
			}
		})
	}
}
