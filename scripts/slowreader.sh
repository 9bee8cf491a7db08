#!/usr/bin/env bash
# 100 slow readers against a real gateway on the four transports (issue 15
# item 6): RSS peak growth and return to baseline. Not in scripts/test.sh
# while its wss:// target is unmet.
set -euo pipefail
cd "$(dirname "$0")/.."
SLOW_READER_RSS=1 go test -count=1 -run TestSlowReaderRSS -v ./abuse/
