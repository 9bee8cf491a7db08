#!/usr/bin/env bash
# Installs what the test suite needs on a fresh machine (Debian, root):
# the npm packages of the real-client tests. Idempotent and quiet when
# everything is there already.
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
if [ ! -d test/node/node_modules ] || [ test/node/package-lock.json -nt test/node/node_modules ]; then
	echo "deps: npm ci --prefix test/node"
	npm ci --prefix test/node --no-audit --no-fund --loglevel=error
	touch test/node/node_modules
fi
