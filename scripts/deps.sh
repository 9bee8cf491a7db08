#!/usr/bin/env bash
# Installs what the test suite needs on a fresh machine (Debian, root): the
# Debian packages named as arguments (redis-server, haproxy, chromium, iproute2,
# python3-websockets) and the npm packages pinned under test/*/. Idempotent
# and quiet when everything is there already.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
for pkg in "$@"; do
	dpkg -s "$pkg" >/dev/null 2>&1 || need_apt+=("$pkg")
done
if [ ${#need_apt[@]} -gt 0 ]; then
	echo "deps: apt-get install ${need_apt[*]}"
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

if ! command -v node >/dev/null; then
	echo "deps: node is required (Node 20)" >&2
	exit 1
fi
# Every npm-pinned test folder (real clients, MCP peers, peer gateways).
for lock in test/*/package-lock.json; do
	dir=$(dirname "$lock")
	if [ ! -d "$dir/node_modules" ] || [ "$lock" -nt "$dir/node_modules" ]; then
		echo "deps: npm ci --prefix $dir"
		npm ci --prefix "$dir" --no-audit --no-fund --loglevel=error
		touch "$dir/node_modules"
	fi
done
