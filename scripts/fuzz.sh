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
	mcp:FuzzScan upstream/builtin:FuzzHandle upstream/pool:FuzzRoundTrip
	auth:FuzzVerify
	config:FuzzParseSize config:FuzzLoadYAML
	edge:FuzzParseProxyHeader
	tlsconn:FuzzHelloReady
)
for spec in "${targets[@]}"; do
	pkg=${spec%%:*}; target=${spec#*:}
	start=$(date +%s)
	go test -run '^$' -fuzz "^${target}\$" -fuzztime "$FUZZTIME" -fuzzminimizetime 200x "./$pkg/" >/tmp/fuzz-$$.log 2>&1 || {
		cat /tmp/fuzz-$$.log; echo "fuzz $pkg $target: FAILED (crasher saved under $pkg/testdata/fuzz/$target/)"; exit 1; }
	execs=$(grep -o 'execs: [0-9]*' /tmp/fuzz-$$.log | tail -1 | cut -d' ' -f2)
	echo "fuzz $pkg $target: ok, ${execs:-?} execs in $(( $(date +%s) - start ))s"
done
rm -f /tmp/fuzz-$$.log
