// Package conformance is an RFC 6455 conformance suite for the gateway,
// modelled on the server sections of the Autobahn Testsuite (1 framing,
// 2 pings and pongs, 3 reserved bits, 4 opcodes, 5 fragmentation, 6 UTF-8,
// 7 close handling, 9 limits). The Testsuite itself needs Python 2 or
// Docker, so its cases are re-expressed here in Go against the gateway
// binary, with one difference: the gateway is not an echo server, so every
// text payload is a JSON-RPC message the builtin MCP server answers (an
// echo tool call or a ping), and "echoed" means the answer carries the sent
// text back.
//
// Every case runs over each transport of the wire contract
// (wsraw.Transports: ws, wss, ws-haproxy, wss-haproxy), as a subtest of
// TestConformance named by the transport and the case id:
//
//	go test ./conformance -run 'TestConformance/^wss$/6\.'
//
// With CONFORMANCE_WRITE=1 a full run rewrites docs/conformance.md, the
// table of cases with their expected and observed behaviour; TestDocCurrent
// checks that the committed table lists exactly the current cases.
package conformance
