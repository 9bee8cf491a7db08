package tlsconn

import (
	"crypto/tls"
	"errors"
	"testing"
)

// benchPair returns an established server Conn (no echo) and its client.
func benchPair(b testing.TB, v uint16) (*Conn, *tls.Conn, *memPipe, *memSink) {
	b.Helper()
	ca := newCA(b)
	srv, _, _ := newTestServer(b, ca, "1.2", Config{})
	p, sink, hs := newMemPipe(srv)
	p.echo = false
	c := tls.Client(p, clientConfig(ca, v, v))
	if err := c.Handshake(); err != nil {
		b.Fatal(err)
	}
	if err := <-hs; err != nil {
		b.Fatal(err)
	}
	return p.srv, c, p, sink
}

// BenchmarkRead: Feed one small record, Read until ErrWouldBlock, as the
// loop does per OnTraffic. The client's encryption is outside the timer: its
// records are tapped in batches instead of being fed.
func BenchmarkRead(b *testing.B) {
	for _, ver := range versions() {
		b.Run(ver.name+"/64B", func(b *testing.B) {
			srvConn, cc, p, _ := benchPair(b, ver.v)
			var recs [][]byte
			msg := make([]byte, 64)
			rbuf := make([]byte, 4096)
			b.SetBytes(64)
			b.ReportAllocs()
			b.ResetTimer()
			for done := 0; done < b.N; {
				b.StopTimer()
				k := min(b.N-done, 10000)
				recs = recs[:0]
				p.tap = &recs
				for range k {
					if _, err := cc.Write(msg); err != nil {
						b.Fatal(err)
					}
				}
				p.tap = nil
				b.StartTimer()
				for _, rec := range recs {
					if err := srvConn.Feed(rec); err != nil {
						b.Fatal(err)
					}
					for {
						_, err := srvConn.Read(rbuf)
						if errors.Is(err, ErrWouldBlock) {
							break
						}
						if err != nil {
							b.Fatal(err)
						}
					}
				}
				done += k
			}
		})
	}
}

// BenchmarkWrite: one 64-byte record written from another goroutine
// (Write) and from the loop (LoopWrite); either way the record is lent to
// out, which here copies the queued one and writes the loop's at once.
func BenchmarkWrite(b *testing.B) {
	for _, ver := range versions() {
		for _, loop := range []bool{false, true} {
			name := ver.name + "/64B/queued"
			if loop {
				name = ver.name + "/64B/loop"
			}
			b.Run(name, func(b *testing.B) {
				c, _, _, sink := benchPair(b, ver.v)
				sink.p.Store(nil)
				write := c.Write
				if loop {
					write = c.LoopWrite
				}
				msg := make([]byte, 64)
				b.SetBytes(64)
				b.ReportAllocs()
				b.ResetTimer()
				for range b.N {
					if _, err := write(msg); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

// BenchmarkWriteParallel: several goroutines writing to one connection.
func BenchmarkWriteParallel(b *testing.B) {
	c, _, _, sink := benchPair(b, tls.VersionTLS13)
	sink.p.Store(nil)
	b.SetBytes(64)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		msg := make([]byte, 64)
		for pb.Next() {
			if _, err := c.Write(msg); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkHandshake: full handshakes through the pool, client and server
// in the same process (both sides' CPU is in the figure).
func BenchmarkHandshake(b *testing.B) {
	for _, ver := range versions() {
		b.Run(ver.name, func(b *testing.B) {
			ca := newCA(b)
			srv, _, _ := newTestServer(b, ca, "1.2", Config{})
			cfg := clientConfig(ca, ver.v, ver.v)
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					c, err := idleConn(srv, cfg.Clone())
					if err != nil {
						b.Error(err)
						return
					}
					c.Close()
				}
			})
		})
	}
}
