#!/usr/bin/env bash
# tools/call echo at 100 connections (closed loop, 10 s each), four paths in
# one run: the gateway to its builtin server, to a stdio pool of 2
# server-everything workers in request mode, to server-everything over
# Streamable HTTP, and supergateway (ws mode) fronting server-everything.
# Server CPU includes child processes. Loopback only; everything it starts is
# stopped on exit. Needs: scripts/deps.sh (test/peers, test/peers-seed).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
work=$(mktemp -d)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true; pkill -P $$ 2>/dev/null || true; rm -rf "$work"' EXIT
cd "$work"
(cd "$root" && go build -o "$work/gw" ./cmd/gateway)
entry=$root/test/peers/node_modules/@modelcontextprotocol/server-everything/dist/index.js
sg=$root/test/peers-seed/node_modules/.bin/supergateway
token=bench-token-0123456789abcdef
echo "$(printf %s $token | sha256sum | cut -d' ' -f1) bench" > tokens.txt
cat > gw.yaml <<YAML
listen: "127.0.0.1:9500"
auth: {static_tokens_file: tokens.txt}
limits: {max_connections_per_ip: 100000, max_pending_auth: 100000}
ratelimit:
  handshakes_per_ip: {count: 1000000, window: 10s}
  per_connection: {messages: 10000000, window: 10s}
  frames_per_connection: {count: 10000000, window: 10s}
  per_subject: {messages: 100000000, window: 10s}
upstreams:
  - {name: demo, type: builtin}
  - {name: everything, type: stdio, command: ["node", "$entry", "stdio"], min_idle: 2, max: 2}
  - {name: remote, type: http, urls: ["http://127.0.0.1:9510/mcp"]}
routes:
  - {path: /builtin, upstream: demo}
  - {path: /stdio, upstream: everything}
  - {path: /http, upstream: remote}
admin: {listen: "127.0.0.1:9501"}
log: {level: warn}
YAML
PORT=9510 node "$entry" streamableHttp > http.log 2>&1 & httppid=$!; pids+=($httppid)
"$sg" --stdio "node $entry stdio" --outputTransport ws --port 9520 > sg.log 2>&1 & sgpid=$!; pids+=($sgpid)
sleep 4
./gw serve -c gw.yaml > gw.log 2>&1 & gwpid=$!; pids+=($gwpid)
sleep 3
run() { # name url server-pids extra-flags...
	local name=$1 url=$2 spid=$3; shift 3
	./gw bench --mode call --rate 0 --conns 100 --duration 10s --url "$url" --server-pid "$spid" --quiet "$@" > "$name.txt" 2>&1
	printf '%-22s %s\n' "$name" "$(grep -E 'calls:' "$name.txt" | sed 's/.*: //')"
	grep -E '^ +call ' "$name.txt" | awk '{printf "%-22s p50 %s ms  p99 %s ms\n", "", $3, $5}'
	grep -E 'µs/call' "$name.txt" | sed 's/.*: /                       server CPU /'
}
run gateway-builtin ws://127.0.0.1:9500/builtin "$gwpid" --token $token
run gateway-stdio-request ws://127.0.0.1:9500/stdio "$gwpid" --token $token --no-init
run gateway-http ws://127.0.0.1:9500/http "$gwpid,$httppid" --token $token --no-init
run supergateway ws://127.0.0.1:9520/message "$sgpid" --auth none
