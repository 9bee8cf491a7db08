// Package tlsconn serves TLS with Go's standard crypto/tls on an event loop
// (gnet), without a goroutine per connection once the handshake is done.
//
// # How it works
//
// Each [Conn] wraps a [crypto/tls.Conn] whose underlying net.Conn is an
// in-memory adapter. The reactor hands it the ciphertext it received with
// [Conn.Feed]; the adapter serves those bytes to crypto/tls and, when it has
// none left, answers with [ErrWouldBlock], a net.Error whose Temporary() is
// true. crypto/tls (Go 1.26, conn.go) treats such an error as retryable:
// readRecordOrCCS only makes an error sticky (halfConn.setErrorLocked) when it
// is not a net.Error with Temporary() true, and readFromUntil appends to
// c.rawInput through bytes.Buffer.ReadFrom, which keeps the bytes it got
// before the error. So the loop can call [Conn.Read] whenever ciphertext
// arrives and decrypt whatever complete records there are.
//
// Once established, a small Feed skips the adapter: the bytes go straight
// into crypto/tls's record buffer (buffers.go, the same fields the memory
// trim reaches), where crypto/tls looks before it reads, and Read does not
// ask crypto/tls at all when nothing is buffered. A small record then costs
// one copy and no allocation (TestReadAllocs); larger feeds and anything
// fed before the handshake completes still go through the adapter.
//
// The handshake cannot be driven that way: tls.Conn stores the first
// handshake error in handshakeErr and returns it forever. It runs instead on
// a goroutine of its own, reading from the same adapter in blocking mode. A
// connection gets that goroutine only once its ClientHello is complete
// (hello.go reads the record and handshake headers as Feed gathers them):
// until then it holds only its buffered bytes, and [Config.HelloTimeout] ends
// it, so clients that send half a ClientHello and stall cost no goroutine.
// At most [Config.MaxHandshakes] handshakes compute at once: a goroutine
// holds a slot while crypto/tls works and gives it back while it waits for
// its client, so busy or slow clients cannot leave the server's CPU idle
// (a slot held across the client's round trips was what capped the rate of
// a reconnect storm). At most MaxHandshakes+[Config.MaxQueued] handshakes
// are in flight; beyond, Feed refuses with [ErrBusy]. Every handshake is
// capped by [Config.HandshakeTimeout] counted from [Server.NewConn]. When the
// handshake succeeds, the adapter switches to non-blocking mode and the
// goroutine exits.
//
// Ciphertext going out is passed to the reactor's out function, one call per
// write that crypto/tls makes (a record, or a buffered handshake flight),
// in the order crypto/tls produced them, with a slice out may keep, and with
// whether the write comes from the connection's loop ([Conn.LoopWrite],
// [Conn.Read], [Conn.CloseNotify]) or from another goroutine ([Conn.Write],
// the handshake). The loop's records may go straight to the socket, so that
// a close which follows them on the loop cannot overtake them.
//
// # Goroutines
//
// Feed, Read, LoopWrite, Close and CloseNotify belong to the connection's
// event loop. Write may be called from any goroutine, concurrently. The onHandshake
// callback runs on a handshake goroutine or a timer goroutine, never inside a
// Conn method, so the reactor must hop back to the loop (gnet Execute) before
// touching the connection.
//
// # Integration with gnet
//
//   - OnOpen: c := srv.NewConn(out, onHandshake); c.SetAddrs(...). Keep c in
//     the connection's context.
//   - OnTraffic: b, _ := gc.Peek(-1); err := c.Feed(b); gc.Discard(len(b));
//     on error close. Then, if c.Established(), Read until ErrWouldBlock and
//     hand the plaintext to the HTTP/WebSocket layer (which keeps its own
//     partial-frame buffer: Read returns whatever records completed).
//     Apply the reactor's inbound cap to the plaintext side too.
//   - onHandshake(err): Execute on the loop; if the connection is gone, do
//     nothing; on error close (a tls.RecordHeaderError whose Conn is set is a
//     plaintext client: a 400 may be written raw before closing); on success
//     Read until ErrWouldBlock, since the first request may already be in.
//   - out(b, loop): must deliver in call order; b is lent for the call
//     (copy what is queued). When loop is true and nothing of this
//     connection is queued, the bytes may go to the socket at once;
//     otherwise queue them for the loop. Close the socket only after the
//     queue is written. Count queued bytes for the slow-reader cut, as for
//     plaintext. (The reactor's queue is reactor/outq.go.)
//   - Writes on the loop: c.LoopWrite(frame).
//   - Writes from workers: c.Write(frame); the records go out through out.
//   - Closing: c.CloseNotify() (optional), then close the socket; OnClose:
//     c.Close(). The handshake timer is ours, no sweep is needed for it.
//
// # Memory
//
// An idle established connection holds no goroutine, no timer and no
// buffer: the adapter's inbound buffer goes back to a pool as soon as
// crypto/tls has consumed it, and so do crypto/tls's own input buffers
// (rawInput, the handshake buffer), which it would otherwise keep at their
// high-water mark for the connection's life (buffers.go explains how). What
// remains is the tls.Conn itself and its two AEADs: about 3.2 KiB of heap
// per connection (TestIdleMemory), 7.2 KiB of gateway RSS at 10,000.
package tlsconn
