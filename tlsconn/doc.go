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
// The handshake cannot be driven that way: tls.Conn stores the first
// handshake error in handshakeErr and returns it forever. It runs instead on a
// bounded pool of goroutines ([Config.MaxHandshakes]), reading from the same
// adapter in blocking mode; connections beyond the pool wait in a bounded FIFO
// ([Config.MaxQueued]) or are refused with [ErrBusy]. Every handshake,
// queued or running, is capped by [Config.HandshakeTimeout] counted from
// [Server.NewConn]. When the handshake succeeds, the adapter switches to
// non-blocking mode and the goroutine returns to the pool (or exits).
//
// Ciphertext going out is passed to the reactor's out function, one call per
// write that crypto/tls makes (a record, or a buffered handshake flight),
// in the order crypto/tls produced them, with a slice out may keep.
//
// # Goroutines
//
// Feed, Read, Close and CloseNotify belong to the connection's event loop.
// Write may be called from any goroutine, concurrently. The onHandshake
// callback runs on a handshake goroutine or a timer goroutine, never inside a
// Conn method, so the reactor must hop back to the loop (gnet Execute) before
// touching the connection.
//
// # Memory
//
// An idle established connection holds no goroutine and no timer; the
// adapter's inbound buffer is returned to a pool as soon as crypto/tls has
// consumed it. What remains is the tls.Conn and its internal buffers
// (rawInput and the handshake buffer), which crypto/tls never shrinks: a
// connection that once received a 16 KiB record keeps a buffer of that size.
package tlsconn
