#!/usr/bin/env bash
# The whole test suite: the command README.md gives and .ci/run calls.
#   scripts/test.sh            everything (format, vet, race tests, fuzz smoke)
#   FUZZTIME=60s scripts/test.sh   longer fuzzing per target (or scripts/fuzz.sh alone)
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/deps.sh redis-server haproxy chromium python3-websockets iproute2 systemd

echo "== gofmt"
unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go' -not -path './test/node/*'))
if [ -n "$unformatted" ]; then
	echo "not gofmt'ed:"; echo "$unformatted"; exit 1
fi

echo "== shell scripts parse"
for f in $(git ls-files '*.sh' 2>/dev/null || find scripts bench .ci -name '*.sh'); do
	bash -n "$f"
done

echo "== go vet"
go vet ./...

# Fault injection (package fault) exists only under -tags faultinject: vet
# and test that build too (the e2e tests build their own tagged gateway).
echo "== fault injection (-tags faultinject)"
go vet -tags faultinject ./fault/ ./upstream/...
go test -race -count=1 -tags faultinject ./fault/
go test -race -count=1 -tags faultinject -run 'Inject' ./upstream/...

export E2E_RACE=1 # the e2e tests run a -race build of the gateway too
echo "== go test -race"
go test -race -count=1 -timeout 15m ./...

echo "== benchmarks compile and run once"
go test -run '^$' -bench . -benchtime 1x ./frame/ ./session/ ./ratelimit/ ./mcp/ ./upstream/... ./auth/ >/dev/null

echo "== fuzz smoke"
FUZZTIME=${FUZZTIME:-5s} scripts/fuzz.sh
echo "== all tests passed"
