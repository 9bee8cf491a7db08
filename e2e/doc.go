// Package e2e holds the gateway's black-box tests: they build the gateway
// binary, run it as users do (`gateway serve -c`) on free loopback ports, and
// check the wire contract of SPEC sections 4 and 5 with raw sockets, real
// clients (Node ws, the MCP TypeScript SDK, coder/websocket), real peers
// (server-everything, Redis, HAProxy) and a real browser (Chromium).
package e2e
