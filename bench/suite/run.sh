#!/usr/bin/env bash
# The benchmark suite behind `make bench` (and `make bench-quick`): on one
# machine and in one go, it builds the gateway, the floor server and the
# suite's helpers, installs the Node peers, then runs `gateway bench` against
#   - the gateway (builtin upstream; TLS; a stdio pool of server-everything;
#     4 processes sharing one port with reuse_port),
#   - the floor server (bench/floor),
#   - the seed's design on Node + ws (test/peers-seed/seed-server.mjs, the
#     one the audit tests grade),
#   - supergateway 4.0.0 in ws mode in front of server-everything,
# each started fresh for each scenario (gateway, floor and seed together for
# the call runs, taking turns), pinned to CPU 1 while the load runs on CPU 0,
# and server-everything alone (its CPU per call without a relay). It writes bench/results/<date>-<host>.md (the table), .html (one
# self-contained report) and <date>-<host>/ (the raw JSON).
#
#   bench/suite/run.sh            full run (about 16 minutes)
#   bench/suite/run.sh --quick    small counts, about 2 minutes; results go to
#                                 bench/results/tmp/ (not committed)
#
# Environment: BENCH_OUT (results directory), BENCH_NO_PIN=1 (no taskset),
# BENCH_KEEP=1 (keep the work directory: logs, configs, binaries, the
# worker's CPU profile), ROUNDS (closed-loop rounds: 5, quick 1), OPEN_ROUNDS
# (open-loop rounds: 3, quick 1).
# Every server listens on 127.0.0.1 only; every process started here is
# stopped on exit (trap), by its own process group.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"

MODE=full
case "${1:-}" in
--quick) MODE=quick ;;
"") ;;
*)
	echo "usage: $0 [--quick]" >&2
	exit 2
	;;
esac

DATE=$(date -u +%Y-%m-%d)
HOST=$(hostname -s 2>/dev/null || hostname)
NAME="$DATE-$HOST"
if [ "$MODE" = quick ]; then
	OUT=${BENCH_OUT:-$ROOT/bench/results/tmp/quick}
else
	OUT=${BENCH_OUT:-$ROOT/bench/results}
fi
RAW="$OUT/$NAME"
WORK="$ROOT/bench/results/tmp/work-$NAME-$$"
BIN="$WORK/bin"
META="$WORK/meta.tsv"
mkdir -p "$OUT" "$WORK" "$BIN"
rm -rf "$RAW"
mkdir -p "$RAW"
T0=$(date +%s)

# ---- scenario sizes -------------------------------------------------------
if [ "$MODE" = quick ]; then
	IDLE_N=500 IDLE_HOLD=3s MID_AFTER=0.3s PEER_FALLBACK_N=300
	TLS_N=300
	ATT_N=300 ATT_HOLD=7s
	CALL_SMALL=20 CALL_LARGE=100 CALL_D=2s WARM_D=0
	OPEN_N=100 OPEN_LOW=1000 OPEN_HIGH=2000 OPEN_D=2s
	X4_N=2000 X4_PER_PROCESS=500
	BIG_N=50
	SG_INIT_N=200
	ROUNDS=${ROUNDS:-1} OPEN_ROUNDS=${OPEN_ROUNDS:-1}
	FLOOR_CALLS=5000 FLOOR_RUNS=1
	BENCH_LIMIT=60
else
	IDLE_N=15000 IDLE_HOLD=20s MID_AFTER=8s PEER_FALLBACK_N=10000
	TLS_N=10000
	ATT_N=10000 ATT_HOLD=10s
	CALL_SMALL=100 CALL_LARGE=1000 CALL_D=10s WARM_D=3s
	OPEN_N=1000 OPEN_LOW=20000 OPEN_HIGH=40000 OPEN_D=10s
	X4_N=60000 X4_PER_PROCESS=15000
	BIG_N=500
	SG_INIT_N=1000
	ROUNDS=${ROUNDS:-5} OPEN_ROUNDS=${OPEN_ROUNDS:-3}
	FLOOR_CALLS=50000 FLOOR_RUNS=3
	BENCH_LIMIT=150
fi

for v in "$ROUNDS" "$OPEN_ROUNDS"; do
	case "$v" in
	'' | *[!0-9]* | 0)
		echo "ROUNDS and OPEN_ROUNDS must be positive integers" >&2
		exit 2
		;;
	esac
done

# ---- process bookkeeping --------------------------------------------------
GROUPS_STARTED=() # process groups of the servers (setsid: pgid = pid)
HELPERS=()        # plain PIDs of background helpers

stop_group() { # pgid: TERM, up to 5 s, then KILL
	local g=$1 i
	kill -TERM -- "-$g" 2>/dev/null || return 0
	for i in $(seq 1 50); do
		kill -0 -- "-$g" 2>/dev/null || return 0
		sleep 0.1
	done
	kill -KILL -- "-$g" 2>/dev/null || true
}

helper_done() { # pid: stop a background helper if still running, reap it, forget it
	local p=$1 h rest=()
	kill -TERM "$p" 2>/dev/null || true
	wait "$p" 2>/dev/null || true
	for h in "${HELPERS[@]}"; do [ "$h" = "$p" ] || rest+=("$h"); done
	HELPERS=("${rest[@]}")
}

cleanup() {
	local g p
	for p in "${HELPERS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
	for g in "${GROUPS_STARTED[@]}"; do stop_group "$g"; done
	if [ "${BENCH_KEEP:-}" != 1 ]; then
		rm -rf "$WORK"
	else
		echo "work directory kept: $WORK"
	fi
}
trap cleanup EXIT
trap 'echo "interrupted" >&2; exit 130' INT TERM

meta() { printf '%s\t%s\n' "$1" "$2" >>"$META"; }
note() { meta note "$1"; }
fail() {
	echo "!! $1" >&2
	meta fail "$1"
}
say() { printf '\n== %s  [%ss, load %s]\n' "$*" "$(($(date +%s) - T0))" "$(cut -d' ' -f1-3 /proc/loadavg)"; }

# ---- pinning --------------------------------------------------------------
SRV=() GEN=()
if [ "${BENCH_NO_PIN:-}" != 1 ] && command -v taskset >/dev/null && [ "$(nproc)" -ge 2 ]; then
	SRV=(taskset -c 1)
	GEN=(taskset -c 0)
	meta pinning "servers (and their child processes) on CPU 1, load generator and helpers on CPU 0, with taskset"
	meta server_cpu 1
else
	meta pinning "none (fewer than 2 CPUs, no taskset, or BENCH_NO_PIN=1)"
fi

# ---- machine --------------------------------------------------------------
meta date "$DATE"
meta host "$HOST"
meta mode "$MODE"
meta command "make bench$([ "$MODE" = quick ] && echo -quick)"
meta cpu "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
meta cores "$(nproc) available ($(nproc --all) online)"
meta memory "$(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo)"
meta kernel "$(uname -r)"
meta os "$(. /etc/os-release 2>/dev/null && echo "${PRETTY_NAME:-}")"
meta go "$(go version | cut -d' ' -f3-)"
meta node "$(node --version)"
meta npm "$(npm --version)"
meta fd_limit "$(ulimit -Hn) open files per process (hard)"
meta port_range "$(tr '\t' '-' </proc/sys/net/ipv4/ip_local_port_range)"
meta load_before "$(cut -d' ' -f1-3 /proc/loadavg)"
echo "benchmark suite ($MODE): results in $OUT/$NAME.md"
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"

# ---- build and install ----------------------------------------------------
say "build"
go build -o "$BIN/gateway" ./cmd/gateway
go build -o "$BIN/floor" ./bench/floor
go build -o "$BIN/suite" ./bench/suite
meta gateway_build "go build ./cmd/gateway from the working tree at $(date -u +%H:%M:%SZ) (binary sha256 $(sha256sum "$BIN/gateway" | cut -c1-12))"

say "npm ci"
# test/peers-seed (the seed design, supergateway, server-everything) is
# shared with the audit tests: reinstall it only when its node_modules does
# not match its lock file.
if ! npm ls --prefix test/peers-seed --depth=0 >/dev/null 2>&1; then
	npm ci --prefix test/peers-seed --no-audit --no-fund --loglevel=error
fi
SEEDMOD="$ROOT/test/peers-seed/node_modules"
SG_JS="$SEEDMOD/supergateway/dist/index.js"
EVERYTHING_JS="$SEEDMOD/@modelcontextprotocol/server-everything/dist/index.js"
PRELOAD="$ROOT/bench/peers/bench-preload.cjs"
pkgver() { node -p "require('$1/package.json').version"; }
meta ws "$(pkgver "$SEEDMOD/ws") (test/peers-seed)"
meta supergateway "$(pkgver "$SEEDMOD/supergateway") (test/peers-seed), --logLevel none"
meta server_everything "$(pkgver "$SEEDMOD/@modelcontextprotocol/server-everything")"

# ---- credentials ----------------------------------------------------------
head -c 32 /dev/urandom | base64 | tr -d '/+=\n' >"$WORK/token"
echo "$(tr -d '\n' <"$WORK/token" | sha256sum | cut -d' ' -f1) benchuser" >"$WORK/tokens"
chmod 600 "$WORK/token" "$WORK/tokens"

# ---- servers --------------------------------------------------------------
# Each start_* sets SPID (the server's PID, also its process group), PORT,
# URL and AUTH (the bench's auth flags).
# Ports below the ephemeral range, a new one for every server start (never
# one whose TIME_WAIT sockets from the previous scenario are still around).
NEXT_PORT=$((20000 + RANDOM % 8000))
free_port() { # sets PORT
	local p
	for _ in $(seq 1 200); do
		p=$NEXT_PORT
		NEXT_PORT=$((NEXT_PORT + 1))
		[ "$NEXT_PORT" -ge 32000 ] && NEXT_PORT=20000
		if [ -z "$(ss -Htan "( sport = :$p or dport = :$p )" 2>/dev/null)" ]; then
			PORT=$p
			return 0
		fi
	done
	fail "no free port"
	return 1
}

wait_listen() { # port pid...: until something listens on the port (30 s)
	local port=$1 p
	shift
	for _ in $(seq 1 300); do
		for p in "$@"; do
			kill -0 "$p" 2>/dev/null || {
				fail "server pid $p exited while starting (port $port)"
				return 1
			}
		done
		[ -n "$(ss -Hltn "sport = :$port" 2>/dev/null)" ] && return 0
		sleep 0.1
	done
	fail "nothing listens on port $port after 30 s"
	return 1
}

launch() { # log cmd...: start a server in its own process group; sets LPID
	local log=$1
	shift
	setsid "${SRV[@]}" "$@" >"$log" 2>&1 </dev/null &
	LPID=$!
	GROUPS_STARTED+=("$LPID")
}

stop_server() {
	local g h rest=()
	for g in "${SPIDS[@]}"; do stop_group "$g"; done
	for h in "${GROUPS_STARTED[@]}"; do
		[[ " ${SPIDS[*]} " == *" $h "* ]] || rest+=("$h")
	done
	GROUPS_STARTED=("${rest[@]}")
}

gw_config() { # file port reuse_port extra-yaml
	cat >"$1" <<EOF
listen: "127.0.0.1:$2"
reuse_port: $3
auth:
  static_tokens_file: $WORK/tokens
limits:
  max_connections_per_ip: 100000
  max_pending_auth: 100000
ratelimit:
  per_connection: {messages: 100000000, window: 1s}
  frames_per_connection: {count: 100000000, window: 1s}
  per_subject: {messages: 1000000000, window: 1s}
  handshakes_per_ip: {count: 1000000, window: 1s}
admin:
  listen: ""
$4
EOF
}

start_server() { # kind tag
	local kind=$1 tag=$2 cfg
	free_port || return 1
	SPIDS=()
	AUTH=(--token-file "$WORK/token")
	URL="ws://127.0.0.1:$PORT/mcp"
	case $kind in
	gateway)
		cfg="$WORK/$tag.yaml"
		gw_config "$cfg" "$PORT" false ""
		launch "$WORK/$tag.log" "$BIN/gateway" serve -c "$cfg"
		SPIDS=("$LPID")
		;;
	gateway-tls)
		if [ ! -f "$WORK/tls.crt" ]; then
			openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
				-subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1 \
				-keyout "$WORK/tls.key" -out "$WORK/tls.crt" 2>/dev/null
		fi
		cfg="$WORK/$tag.yaml"
		gw_config "$cfg" "$PORT" false "tls: {cert_file: $WORK/tls.crt, key_file: $WORK/tls.key}"
		launch "$WORK/$tag.log" "$BIN/gateway" serve -c "$cfg"
		SPIDS=("$LPID")
		URL="wss://127.0.0.1:$PORT/mcp"
		AUTH+=(--insecure)
		;;
	gateway-stdio)
		cfg="$WORK/$tag.yaml"
		gw_config "$cfg" "$PORT" false "upstreams:
  - name: everything
    type: stdio
    command: [\"node\", \"$EVERYTHING_JS\", \"stdio\"]
    min_idle: 2
    max: 4"
		launch "$WORK/$tag.log" "$BIN/gateway" serve -c "$cfg"
		SPIDS=("$LPID")
		;;
	gateway-x4)
		cfg="$WORK/$tag.yaml"
		gw_config "$cfg" "$PORT" true ""
		for i in 1 2 3 4; do
			launch "$WORK/$tag-$i.log" "$BIN/gateway" serve -c "$cfg"
			SPIDS+=("$LPID")
		done
		;;
	floor)
		launch "$WORK/$tag.log" "$BIN/floor" -listen "127.0.0.1:$PORT"
		SPIDS=("$LPID")
		;;
	seed)
		SEED_TOKEN=$(cat "$WORK/token") SEED_RATE_MAX=1000000000 SEED_RATE_WINDOW_MS=1000 \
			launch "$WORK/$tag.log" node --expose-gc --require "$PRELOAD" "$ROOT/test/peers-seed/seed-server.mjs" "$PORT"
		SPIDS=("$LPID")
		;;
	supergateway)
		launch "$WORK/$tag.log" node --expose-gc --require "$PRELOAD" "$SG_JS" \
			--stdio "node $EVERYTHING_JS stdio" --outputTransport ws --port "$PORT" --logLevel none
		SPIDS=("$LPID")
		URL="ws://127.0.0.1:$PORT/message"
		AUTH=(--auth none)
		;;
	esac
	SPID=$(
		IFS=,
		echo "${SPIDS[*]}"
	)
	wait_listen "$PORT" "${SPIDS[@]}" || {
		stop_server
		return 1
	}
	# Listening (the port is bound) is not always serving yet: let the
	# stdio pools start their children.
	case $kind in gateway-stdio | supergateway) sleep 2 ;; *) sleep 0.3 ;; esac
	if [ -n "$(ss -Hltn "sport = :$PORT" | awk '$4 !~ /^127\.0\.0\.1:/')" ]; then
		fail "$kind listens off loopback on port $PORT: stopped"
		stop_server
		return 1
	fi
}

# bench server scenario args...: one gateway bench run, JSON to RAW.
bench_run() {
	local server=$1 sc=$2 rc=0
	shift 2
	local json="$RAW/$server--$sc.bench.json" txt="$WORK/$server--$sc.txt"
	meta load "$server--$sc	$(cut -d' ' -f1-3 /proc/loadavg)"
	# Bounded: SIGINT after BENCH_LIMIT s ends the run early with the report
	# of what ran (gateway bench's Ctrl-C); SIGKILL 30 s later if need be.
	timeout -s INT -k 30 "$BENCH_LIMIT" "${GEN[@]}" "$BIN/gateway" bench --quiet --url "$URL" "${AUTH[@]}" \
		--server-pid "$SPID" --out-json "$json" "$@" >"$txt" 2>&1 || rc=$?
	sed 's/^/   /' "$txt"
	if [ $rc -eq 124 ] || [ $rc -eq 130 ]; then
		fail "$server $sc: stopped after the ${BENCH_LIMIT}s bound on one run; the figures are those of the part that ran"
	elif [ $rc -ne 0 ]; then
		fail "$server $sc: gateway bench exited $rc ($(tail -n1 "$txt"))"
	fi
	for p in "${SPIDS[@]}"; do
		kill -0 "$p" 2>/dev/null || fail "$server $sc: the server (pid $p) died during the run"
	done
	return 0
}

established_of() { grep -m1 -o '"established": [0-9]*' "$1" 2>/dev/null | grep -o '[0-9]*$' || echo 0; }

# ---- scenarios ------------------------------------------------------------
scenario_idle() { # server [conns [scenario-name [bench args...]]]
	local s=$1 n=${2:-$IDLE_N} sc=${3:-idle} mh sig=none
	shift $(($# < 3 ? $# : 3))
	say "$s: (a) $sc, $n connections, hold $IDLE_HOLD $*"
	local per_process=${PER_PROCESS:-15000}
	start_server "$s" "$s-$sc" || return 0
	# Halfway through the hold: each process's share of the connections,
	# and a full GC in the Node servers (SIGUSR2, bench-preload.cjs).
	case $s in seed | supergateway) sig=USR2 ;; esac
	"${GEN[@]}" "$BIN/suite" midhold -pid "$SPID" -min $((n / 2)) -after "$MID_AFTER" -signal "$sig" \
		-out "$RAW/$s--$sc.midhold.json" -max 10m 2>>"$WORK/midhold.log" &
	mh=$!
	HELPERS+=("$mh")
	bench_run "$s" "$sc" --mode idle --conns "$n" --duration "$IDLE_HOLD" --per-process "$per_process" "$@"
	if [ ! -s "$RAW/$s--$sc.midhold.json" ]; then
		note "$s $sc: the connections did not settle before the end of the hold: no mid-hold sample$([ $sig = USR2 ] && echo ", no forced GC")"
	fi
	helper_done "$mh"
	stop_server
}

scenario_attack() { # server
	local s=$1 w
	say "$s: (d) $ATT_N connections that never authenticate"
	start_server "$s" "$s-attack" || return 0
	"${GEN[@]}" "$BIN/suite" sockwatch -pid "$SPID" -out "$RAW/$s--attack.sockwatch.json" \
		-interval 100ms -quiet-stop 7.5s -max 5m 2>>"$WORK/sockwatch.log" &
	w=$!
	HELPERS+=("$w")
	sleep 0.3 # its first sample is the baseline
	local auth=("${AUTH[@]}")
	AUTH=(--auth none)
	[ "$s" = gateway-tls ] && AUTH+=(--insecure)
	bench_run "$s" attack --mode idle --no-init --conns "$ATT_N" --duration "$ATT_HOLD"
	AUTH=("${auth[@]}")
	helper_done "$w"
	stop_server
}

scenario_calls() { # server open-loop(yes/no) [extra bench args]
	local s=$1 open=$2
	shift 2
	say "$s: (b) closed loop at $CALL_SMALL and $CALL_LARGE connections$([ "$open" = yes ] && echo ", (c) open loop at $OPEN_LOW and $OPEN_HIGH calls/s")"
	start_server "$s" "$s-calls" || return 0
	# Warm-up, not recorded: JIT in the Node servers, the stdio pools' children.
	if [ "$WARM_D" != 0 ]; then
		"${GEN[@]}" "$BIN/gateway" bench --quiet --url "$URL" "${AUTH[@]}" --mode call --conns "$CALL_LARGE" \
			--duration "$WARM_D" "$@" >"$WORK/$s--warmup.txt" 2>&1 || fail "$s: warm-up run failed ($(tail -n1 "$WORK/$s--warmup.txt"))"
	fi
	bench_run "$s" closed-small --mode call --conns "$CALL_SMALL" --duration "$CALL_D" "$@"
	bench_run "$s" closed-large --mode call --conns "$CALL_LARGE" --duration "$CALL_D" "$@"
	if [ "$open" = yes ]; then
		bench_run "$s" open-low --mode call --conns "$OPEN_N" --rate "$OPEN_LOW" --duration "$OPEN_D" "$@"
		bench_run "$s" open-high --mode call --conns "$OPEN_N" --rate "$OPEN_HIGH" --duration "$OPEN_D" "$@"
	fi
	stop_server
}

# scenario_call_rounds servers...: the CPU-per-call comparison. The servers
# are started together (each pinned like the others, each on its own port)
# and take turns, so that the machine's noise (a shared VM) falls on every
# server alike: one warm-up each, then ROUNDS rounds of the closed-loop runs
# (in each round, each size on every server in turn), then OPEN_ROUNDS
# rounds of the open-loop runs (each rate on every server in turn); each
# round starts with the next server. One server is loaded at a time. Round N
# is <server>--closed-<size>-rN / --open-<rate>-rN.bench.json; the report
# takes medians per server and the median of the rounds' own ratios.
scenario_call_rounds() {
	local s r sc conns rate
	declare -A R_URL R_SPID R_SPIDS R_AUTH
	local up=()
	say "$*: (b) closed loop at $CALL_SMALL and $CALL_LARGE connections in $ROUNDS round(s), (c) open loop at $OPEN_LOW and $OPEN_HIGH calls/s, servers taking turns"
	for s in "$@"; do
		start_server "$s" "$s-calls" || continue
		R_URL[$s]=$URL R_SPID[$s]=$SPID R_SPIDS[$s]="${SPIDS[*]}" R_AUTH[$s]=$(printf '%q ' "${AUTH[@]}")
		up+=("$s")
	done
	use_server() { # make server $1 the current one (URL, SPID, SPIDS, AUTH)
		URL=${R_URL[$1]} SPID=${R_SPID[$1]}
		read -ra SPIDS <<<"${R_SPIDS[$1]}"
		eval "AUTH=(${R_AUTH[$1]})"
	}
	for s in "${up[@]}"; do
		use_server "$s"
		# Warm-up, not recorded: JIT in the Node server.
		if [ "$WARM_D" != 0 ]; then
			"${GEN[@]}" "$BIN/gateway" bench --quiet --url "$URL" "${AUTH[@]}" --mode call --conns "$CALL_LARGE" \
				--duration "$WARM_D" >"$WORK/$s--warmup.txt" 2>&1 || fail "$s: warm-up run failed ($(tail -n1 "$WORK/$s--warmup.txt"))"
		fi
	done
	local order
	# rotate r: the servers in the order of round r, which starts with the
	# next server, so that no server always runs first or after the same one.
	rotate() {
		local k n=${#up[@]}
		order=()
		for k in $(seq 0 $((n - 1))); do order+=("${up[$(((k + $1 - 1) % n))]}"); done
	}
	for r in $(seq 1 "$ROUNDS"); do
		rotate "$r"
		for sc in small large; do
			conns=$CALL_SMALL
			[ $sc = large ] && conns=$CALL_LARGE
			for s in "${order[@]}"; do
				use_server "$s"
				say "$s: closed-$sc round $r of $ROUNDS"
				bench_run "$s" "closed-$sc-r$r" --mode call --conns "$conns" --duration "$CALL_D"
			done
		done
	done
	# Open loop in rounds too: one 10 s run's p99 moves by 2x on this VM.
	for r in $(seq 1 "$OPEN_ROUNDS"); do
		rotate "$r"
		for sc in low high; do
			rate=$OPEN_LOW
			[ $sc = high ] && rate=$OPEN_HIGH
			for s in "${order[@]}"; do
				use_server "$s"
				say "$s: open-$sc, $rate calls/s, round $r of $OPEN_ROUNDS"
				bench_run "$s" "open-$sc-r$r" --mode call --conns "$OPEN_N" --rate "$rate" --duration "$OPEN_D"
			done
		done
	done
	for s in "${up[@]}"; do
		use_server "$s"
		stop_server
	done
}

# The stdio worker alone: server-everything's CPU per echo call with no
# relay in front of it, pinned like the servers, then once under
# node --cpu-prof (the profile stays in the work directory; its summary goes
# into the JSON).
scenario_stdiofloor() {
	say "server-everything alone: initialize + $FLOOR_CALLS echo calls on its stdin, $FLOOR_RUNS run(s), then one under --cpu-prof"
	meta load "everything--alone	$(cut -d' ' -f1-3 /proc/loadavg)"
	# -message-size 64: gateway bench's default --message-size, which the
	# relay runs use.
	"${GEN[@]}" "$BIN/suite" stdiofloor -script "$EVERYTHING_JS" -pin "${SRV[*]}" -calls "$FLOOR_CALLS" -runs "$FLOOR_RUNS" \
		-message-size 64 -prof-dir "$WORK/cpuprof" -out "$RAW/everything--alone.stdiofloor.json" -max 5m 2>&1 | sed 's/^/   /' ||
		fail "server-everything alone: suite stdiofloor failed"
}

scenario_bigframe() {
	say "gateway: a frame header declaring 2 GiB, $BIG_N authenticated connections"
	start_server gateway gateway-bigframe || return 0
	meta load "gateway--bigframe	$(cut -d' ' -f1-3 /proc/loadavg)"
	"${GEN[@]}" "$BIN/suite" bigframe -url "$URL" -token-file "$WORK/token" -pid "$SPID" -conns "$BIG_N" \
		-payload 65536 -out "$RAW/gateway--bigframe.bigframe.json" || fail "gateway bigframe: helper failed"
	stop_server
}

scenario_x4() {
	local n=$X4_N lim per_proc
	lim=$(ulimit -Hn)
	per_proc=$((n / 4))
	if [ "$per_proc" -gt $((lim - 2000)) ]; then
		note "gateway x4: $per_proc connections per process is close to the $lim-file limit; some processes may refuse connections"
	fi
	PER_PROCESS=$X4_PER_PROCESS scenario_idle gateway-x4 "$n"
}

# ---- the run --------------------------------------------------------------
# Idle first (the largest memory figures, on a machine not yet full of
# TIME_WAIT sockets), then attack, calls, and the 4-process run last.
for s in gateway floor seed supergateway; do
	args=()
	# supergateway has no auth; its connections are opened without initialize
	# (see the note below and the idle-init scenario).
	[ "$s" = supergateway ] && args=(--no-init)
	scenario_idle "$s" "$IDLE_N" idle "${args[@]}"
	if [ "$s" = seed ] || [ "$s" = supergateway ]; then
		got=$(established_of "$RAW/$s--idle.bench.json")
		if [ "$got" -lt "$IDLE_N" ]; then
			for f in "$RAW/$s--idle".*.json; do mv "$f" "${f/--idle./--idle-$IDLE_N.}"; done
			note "$s held $got of $IDLE_N idle connections (JSON: $s--idle-$IDLE_N.bench.json); measured again at $PEER_FALLBACK_N"
			scenario_idle "$s" "$PEER_FALLBACK_N" idle "${args[@]}"
		fi
	fi
done
# supergateway with initialize: each initialize makes server-everything send
# notifications/tools/list_changed, which supergateway broadcasts to every
# client, so opening N initialized connections costs O(N^2). Measured at a
# size that stays bounded.
scenario_idle supergateway "$SG_INIT_N" idle-init
note "supergateway's idle connections are opened without initialize (--no-init): with it, every initialize makes server-everything emit notifications/tools/list_changed, which supergateway broadcasts to every connected client (other clients' notifications included), so N initialized connections cost O(N^2) CPU. The idle-init row measures that at $SG_INIT_N connections."
scenario_idle gateway-tls "$TLS_N"

ATTACK_SERVERS=(gateway seed floor supergateway)
[ "$MODE" = quick ] && ATTACK_SERVERS=(gateway seed) # the two with an auth deadline
for s in "${ATTACK_SERVERS[@]}"; do
	scenario_attack "$s"
done
scenario_bigframe

meta call_warmup "$WARM_D"
scenario_call_rounds gateway floor seed
scenario_calls gateway-stdio no --no-init
scenario_calls supergateway no --no-init
scenario_stdiofloor
note "supergateway is not run open loop: its one stdio child caps it below the open-loop rates ($OPEN_LOW and $OPEN_HIGH calls/s; see its closed-loop calls/s), so those runs would only measure an ever-growing queue."
note "The stdio-pool runs (gateway-stdio, supergateway) use --no-init: a connection whose first message is not initialize is served in request mode by the gateway's shared children; supergateway forwards every connection to its one child in any case."

scenario_x4

# ---- report ---------------------------------------------------------------
meta load_after "$(cut -d' ' -f1-3 /proc/loadavg)"
meta duration_s "$(($(date +%s) - T0))"
cp "$META" "$RAW/meta.tsv"
"$BIN/suite" report -dir "$RAW" -meta "$META" -md "$OUT/$NAME.md" -html "$OUT/$NAME.html"
say "done in $(($(date +%s) - T0)) s"
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "results: $OUT/$NAME.md, $OUT/$NAME.html, raw JSON in $RAW/"
