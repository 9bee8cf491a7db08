// Package e2e holds the gateway's black-box tests: they build the gateway
// binary, run it as users do (`gateway serve -c`) on free loopback ports, and
// check the wire contract of SPEC sections 4 and 5 with raw sockets, real
// clients (Node ws, the MCP TypeScript SDK, coder/websocket), real peers
// (server-everything, Redis, HAProxy) and a real browser (Chromium).
//
// The wire rows of SPEC 4.1-4.4 run over every transport of the contract
// (ws, wss, ws-haproxy, wss-haproxy; conformance/wsraw.Transports): each is
// written once inside eachTransport and becomes one subtest per transport,
// e.g. TestAfterAuth/wss-haproxy/binary_message (see matrix_test.go).
package e2e
