#!/usr/bin/env bash
# Fuzzes every parser, one target after another.
#   scripts/fuzz.sh            5 minutes per target
#   FUZZTIME=30s scripts/fuzz.sh
# A crasher is written by `go test` under the package's testdata/fuzz/<Target>/
# and fails this script; commit that file: it is then a regression test that
# every plain `go test` run replays.
set -euo pipefail
cd "$(dirname "$0")/.."
FUZZTIME=${FUZZTIME:-5m}
targets=(
	frame:FuzzReader frame:FuzzParseHeader
	reactor:FuzzUpgrade
	mcp:FuzzScan mcp:FuzzBatchError upstream/builtin:FuzzHandle upstream/pool:FuzzRoundTrip
	auth:FuzzVerify
	config:FuzzParseSize config:FuzzLoadYAML
	edge:FuzzParseProxyHeader
	tlsconn:FuzzHelloReady
)
# Go 1.26's fuzz coordinator can fail a target with a bare "context deadline
# exceeded" when -fuzztime runs out while a worker is busy (go.dev/issue/75804,
# fixed in Go 1.27): no input failed and none is written. Such a run is
# retried; a failure counts only when go test wrote a reproducer or failed
# in any other way.
corpus() { ls "$1/testdata/fuzz/$2" 2>/dev/null | sort || true; }
for spec in "${targets[@]}"; do
	pkg=${spec%%:*}; target=${spec#*:}
	start=$(date +%s)
	for try in 1 2 3; do
		before=$(corpus "$pkg" "$target")
		if go test -run '^$' -fuzz "^${target}\$" -fuzztime "$FUZZTIME" -fuzzminimizetime 200x "./$pkg/" >/tmp/fuzz-$$.log 2>&1; then
			break
		fi
		if [ "$(corpus "$pkg" "$target")" = "$before" ] && grep -q '^    context deadline exceeded$' /tmp/fuzz-$$.log &&
			[ "$(grep -c -- '^--- FAIL' /tmp/fuzz-$$.log)" = 1 ] && [ "$try" -lt 3 ]; then
			echo "fuzz $pkg $target: the coordinator's deadline race (go.dev/issue/75804), no input failed: again"
			continue
		fi
		cat /tmp/fuzz-$$.log; echo "fuzz $pkg $target: FAILED (crasher saved under $pkg/testdata/fuzz/$target/)"; exit 1
	done
	execs=$(grep -o 'execs: [0-9]*' /tmp/fuzz-$$.log | tail -1 | cut -d' ' -f2)
	echo "fuzz $pkg $target: ok, ${execs:-?} execs in $(( $(date +%s) - start ))s"
done
rm -f /tmp/fuzz-$$.log
