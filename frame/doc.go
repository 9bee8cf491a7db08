/*
Package frame owns the RFC 6455 framing of the gateway's WebSocket connections,
server side: reading client frames out of the bytes the reactor has peeked from
its inbound buffer, and appending server frames to an outbound buffer.

It owns every framing decision of SPEC 4.4: which frames are protocol errors
(close 1002), which messages are too big (1009, decided from the header and the
running total of fragments before any payload is buffered), and which text is
not UTF-8 (1007). It does not own what a message means, nor the connection: it
never reads from or writes to a socket.

The wire format (RFC 6455, section 5.2):

	 0                   1                   2                   3
	 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
	+-+-+-+-+-------+-+-------------+-------------------------------+
	|F|R|R|R| opcode|M| Payload len |    Extended payload length    |
	|I|S|S|S|  (4)  |A|     (7)     |             (16/64)           |
	|N|V|V|V|       |S|             |   (if payload len==126/127)   |
	| |1|2|3|       |K|             |                               |
	+-+-+-+-+-------+-+-------------+ - - - - - - - - - - - - - - - +
	|     Extended payload length continued, if payload len == 127  |
	+ - - - - - - - - - - - - - - - +-------------------------------+
	|                               |Masking-key, if MASK set to 1  |
	+-------------------------------+-------------------------------+
	| Masking-key (continued)       |          Payload Data         |
	+-------------------------------- - - - - - - - - - - - - - - - +
	:                     Payload Data continued ...                :
	+ - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - +
	|                     Payload Data continued ...                |
	+---------------------------------------------------------------+

A header is 2 to 14 bytes. Client frames are always masked; server frames never
are, so a server header is 2, 4 or 10 bytes (MaxHeaderLen).

Reading is zero-copy and never blocks. The reactor hands Next everything it has
buffered; Next either consumes bytes (n > 0: a whole frame, or the header and
payload so far of a data frame still arriving, which it streams into the
message buffer), or asks for more (n == 0: part of a header or of a control
frame), or fails with a *CloseError naming the close code to send:

	for {
		ev, n, err := rd.Next(in, limit)
		if err != nil {
			// err.(*frame.CloseError): send close(Code, Reason), close.
		}
		if n == 0 {
			break // keep the bytes buffered
		}
		in = in[n:]
		consumed += n
		switch ev.Kind {
		case frame.None: // a fragment or part of a payload: nothing yet
		case frame.Text: // ev.Payload
		case frame.Ping: // answer with AppendPong(out, ev.Payload)
		case frame.Close: // ev.CloseCode, ev.CloseReason
		}
	}
	c.Discard(consumed)

Next unmasks a payload in place, and only in bytes it consumes, so bytes it
leaves buffered are never modified: the reactor may peek them again, even from
a fresh copy (gnet copies data that wraps its ring buffer).

Memory for messages that have not all arrived is bounded twice: a message
buffer is sized from the header (exactly, for a message of one frame; by a
quarter more each time, for a fragmented one), never doubled; and when the
Reader has a Budget, every buffer is reserved in it first, so all
connections together hold at most Budget.Max bytes. A reservation that would
pass it fails with close 1013 "Try again later" (SPEC 10).

The functions here never call ws.ReadFrame or wsutil.ReadMessage: those
allocate the length the peer declares, uncapped.
*/
package frame
