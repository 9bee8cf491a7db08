# Common entry points. See README.md and bench/results/README.md.
#
#   make build         build ./gateway
#   make run           run the gateway (embedded default config; CONFIG=file.yaml for -c)
#   make test          the whole test suite (scripts/test.sh)
#   make bench         the benchmark suite: builds, installs the Node peers, runs
#                      every server and scenario, writes bench/results/ (~15 min)
#   make bench-quick   the same with small counts (~2 min), results in bench/results/tmp/
#   make bench-tls     TLS speed: the gateway next to net/http + crypto/tls (bench/tlsref),
#                      storm, echo over wss and ws, idle RSS (~14 min; bench/scripts/tls.sh)

GO ?= go
CONFIG ?=

.PHONY: all build run test bench bench-quick bench-tls

all: build

build:
	$(GO) build -o gateway ./cmd/gateway

run:
	$(GO) run ./cmd/gateway serve $(if $(CONFIG),-c $(CONFIG))

test:
	bash scripts/test.sh

bench:
	bench/suite/run.sh

bench-quick:
	bench/suite/run.sh --quick

bench-tls:
	bench/scripts/tls.sh
