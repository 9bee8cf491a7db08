// Package abuse attacks the gateway binary the way a hostile client would,
// each attack bounded in time, and checks the gateway cuts it as SPEC
// section 4 says while it stays up for everyone else:
//
//   - an upgrade trickled 1 byte per second: dropped at handshake_timeout;
//   - 15,000 connections that upgrade and never authenticate: all closed
//     1008 at the auth deadline, the gateway's memory back near its baseline
//     afterwards (skipped with -short);
//   - a message flood: closed 1008 "Rate limit exceeded";
//   - endless 1-byte continuation frames: closed 1009 at max_message_bytes;
//   - one 1 MiB header line: 431 after reading at most max_header_bytes;
//   - a ping flood: answered or cut, never fatal, other clients unaffected;
//   - permessage-deflate offered: never accepted.
//
// Every attack but the 15,000-connection horde runs over each transport of
// the wire contract (ws, wss, ws-haproxy, wss-haproxy), as subtests named by
// the transport (TestMessageFlood/wss); the horde runs over ws:// (see
// TestUnauthenticatedHorde for why).
//
// The tests print the figures they measure (close timing, RSS per
// unauthenticated connection, bytes read) with -v. The gateway is always
// built without -race here: the figures are memory figures, and a race
// build multiplies them.
package abuse
