#!/usr/bin/env bash
# TLS speed of the gateway against Go's net/http + crypto/tls (bench/tlsref),
# in one run on one machine (issue 12, item 6):
#
#   - reconnect storm: `gateway bench --mode connect` (TCP + TLS + upgrade +
#     auth + MCP initialize + close) with STORM_N connections, on the
#     gateway over wss:// and on tlsref over wss:// (and both over ws://, for
#     the TLS share of a connect): connections/s and server CPU per
#     connection;
#   - steady state: tools/call echo at CALL_SMALL and CALL_LARGE
#     connections, server CPU per call, on the gateway and tlsref, each over
#     wss:// and ws://, at the same open-loop rate (RATE calls/s) on every
#     server; the TLS overhead per call is wss minus ws; then closed loop
#     (each server's calls/s at one call in flight per connection);
#   - idle: server RSS per wss:// connection at IDLE_N (fresh gateway, as in
#     make bench), and tlsref's next to it.
#
# The four servers (gateway wss, gateway ws, tlsref wss, tlsref -plain ws)
# run side by side, pinned to CPU 1; the load runs on CPU 0. The storm and
# call runs go in ROUNDS interleaved rounds: in each round every server runs
# each scenario in turn (one server loaded at a time), and each round starts
# with the next server. The report (`suite tlsreport`) takes the median of
# the rounds' own ratios and gives a verdict per target. Results:
# bench/results/<date>-<host>-tls[-TAG].md and the raw JSON in the directory
# of the same name.
#
#   bench/scripts/tls.sh            full run (about 12 minutes)
#   bench/scripts/tls.sh --quick    small counts (about 2 minutes), results
#                                   in bench/results/tmp/ (not committed)
#
# Env: PARTS (which parts run: "idle storm calls", the default, or any of
# them, e.g. PARTS=calls for the per-call verdicts alone), ROUNDS (3, quick 1), CLOSED_ROUNDS (closed-loop rounds, at most
# ROUNDS: the first ones; default ROUNDS), RATE (open-loop calls/s, 20000, quick 2000), TAG (suffix of the results' name),
# GATEWAY_REV (build the gateway from this commit, via git archive, instead
# of the working tree; tlsref, the suite and the bench client always come
# from the working tree), BENCH_OUT (results directory), BENCH_KEEP=1 (keep
# the work directory), BENCH_NO_PIN=1 (no taskset).
# Loopback only; every process started here is stopped on exit, by its own
# process group; each bench run is bounded (SIGINT after BENCH_LIMIT s).
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
NAME="$DATE-$HOST-tls${TAG:+-$TAG}"
if [ "$MODE" = quick ]; then
	OUT=${BENCH_OUT:-$ROOT/bench/results/tmp/quick}
	STORM_N=1000 IDLE_N=300 IDLE_HOLD=3s CALL_SMALL=20 CALL_LARGE=100 CALL_D=2s WARM_N=100 WARM_D=1s RATE=${RATE:-2000}
	ROUNDS=${ROUNDS:-1} BENCH_LIMIT=60
else
	OUT=${BENCH_OUT:-$ROOT/bench/results}
	STORM_N=15000 IDLE_N=10000 IDLE_HOLD=20s CALL_SMALL=100 CALL_LARGE=1000 CALL_D=10s WARM_N=1000 WARM_D=3s RATE=${RATE:-20000}
	ROUNDS=${ROUNDS:-3} BENCH_LIMIT=150
fi
CLOSED_ROUNDS=${CLOSED_ROUNDS:-$ROUNDS}
for v in "$ROUNDS" "$CLOSED_ROUNDS"; do
	case "$v" in '' | *[!0-9]*)
		echo "ROUNDS and CLOSED_ROUNDS must be integers" >&2
		exit 2
		;;
	esac
done
[ "$ROUNDS" -ge 1 ] || {
	echo "ROUNDS must be at least 1" >&2
	exit 2
}
RAW="$OUT/$NAME"
WORK="$ROOT/bench/results/tmp/work-$NAME-$$"
BIN="$WORK/bin"
META="$WORK/meta.tsv"
mkdir -p "$OUT" "$WORK" "$BIN"
rm -rf "$RAW"
mkdir -p "$RAW"
T0=$(date +%s)

GROUPS_STARTED=()
stop_group() { # pgid: TERM, up to 5 s, then KILL
	local g=$1
	kill -TERM -- "-$g" 2>/dev/null || return 0
	for _ in $(seq 1 50); do
		kill -0 -- "-$g" 2>/dev/null || return 0
		sleep 0.1
	done
	kill -KILL -- "-$g" 2>/dev/null || true
}
cleanup() {
	local g
	for g in "${GROUPS_STARTED[@]}"; do stop_group "$g"; done
	if [ "${BENCH_KEEP:-}" != 1 ]; then rm -rf "$WORK"; else echo "work directory kept: $WORK"; fi
}
trap cleanup EXIT
trap 'echo "interrupted" >&2; exit 130' INT TERM

meta() { printf '%s\t%s\n' "$1" "$2" >>"$META"; }
fail() {
	echo "!! $1" >&2
	meta fail "$1"
}
say() { printf '\n== %s  [%ss, load %s]\n' "$*" "$(($(date +%s) - T0))" "$(cut -d' ' -f1-3 /proc/loadavg)"; }

# ---- pinning and machine (as bench/suite/run.sh) ----------------------------
SRV=() GEN=()
if [ "${BENCH_NO_PIN:-}" != 1 ] && command -v taskset >/dev/null && [ "$(nproc)" -ge 2 ]; then
	SRV=(taskset -c 1)
	GEN=(taskset -c 0)
	meta pinning "servers on CPU 1, load generator (gateway bench) on CPU 0, with taskset"
	meta server_cpu 1
else
	meta pinning "none (fewer than 2 CPUs, no taskset, or BENCH_NO_PIN=1)"
fi
meta date "$DATE"
meta host "$HOST"
meta mode "$MODE"
meta command "$([ -n "${GATEWAY_REV:-}" ] && echo "GATEWAY_REV=$GATEWAY_REV ")$([ -n "${TAG:-}" ] && echo "TAG=$TAG ")ROUNDS=$ROUNDS CLOSED_ROUNDS=$CLOSED_ROUNDS bench/scripts/tls.sh$([ "$MODE" = quick ] && echo " --quick")"
meta cpu "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
meta cores "$(nproc) available ($(nproc --all) online)"
meta memory "$(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo)"
meta kernel "$(uname -r)"
meta os "$(. /etc/os-release 2>/dev/null && echo "${PRETTY_NAME:-}")"
meta go "$(go version | cut -d' ' -f3-)"
meta fd_limit "$(ulimit -Hn) open files per process (hard)"
meta load_before "$(cut -d' ' -f1-3 /proc/loadavg)"
meta sizes "storm $STORM_N connections; calls at $CALL_SMALL and $CALL_LARGE connections for $CALL_D each, open loop at $RATE calls/s ($ROUNDS rounds) and closed loop ($CLOSED_ROUNDS rounds); idle $IDLE_N held $IDLE_HOLD; storm in $ROUNDS rounds"
meta rate "$RATE"
echo "TLS benchmark ($MODE): results in $OUT/$NAME.md"

# ---- build -----------------------------------------------------------------
say "build"
if [ -n "${GATEWAY_REV:-}" ]; then
	rev=$(git rev-parse --verify "$GATEWAY_REV^{commit}")
	mkdir -p "$WORK/src"
	git archive "$rev" | tar -x -C "$WORK/src"
	(cd "$WORK/src" && go build -o "$BIN/gateway" ./cmd/gateway)
	meta commit "$(git log -1 --format='%h %s' "$rev" | cut -c1-100) (gateway built from this commit with git archive)"
else
	go build -o "$BIN/gateway" ./cmd/gateway
	dirty=$(git status --porcelain -- . ':!bench' | awk '{print $2}' | tr '\n' ' ')
	meta commit "$(git log -1 --format='%h %s' | cut -c1-100)${dirty:+ + uncommitted changes in: $dirty}(gateway built from the working tree)"
fi
go build -o "$BIN/tlsref" ./bench/tlsref
go build -o "$BIN/suite" ./bench/suite
go build -o "$BIN/bench" ./cmd/gateway # the load generator: this tree's gateway bench
meta gateway_build "binary sha256 $(sha256sum "$BIN/gateway" | cut -c1-12), built $(date -u +%H:%M:%SZ)"

# ---- credentials and certificate -------------------------------------------
head -c 32 /dev/urandom | base64 | tr -d '/+=\n' >"$WORK/token"
echo "$(tr -d '\n' <"$WORK/token" | sha256sum | cut -d' ' -f1) benchuser" >"$WORK/tokens"
chmod 600 "$WORK/token" "$WORK/tokens"
# ECDSA P-256: what operators' certificates are (Let's Encrypt's default key
# type too); self-signed for 127.0.0.1, so the bench runs with --insecure
# (it skips the chain check; the client still verifies the server's
# CertificateVerify signature, and the server's cost is the same).
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
	-subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1 \
	-keyout "$WORK/tls.key" -out "$WORK/tls.crt" 2>/dev/null
meta cert "self-signed ECDSA P-256 (openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256), SAN IP:127.0.0.1; the bench uses --insecure"

# ---- servers ---------------------------------------------------------------
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
wait_listen() { # port pid
	for _ in $(seq 1 300); do
		kill -0 "$2" 2>/dev/null || {
			fail "server pid $2 exited while starting (port $1)"
			return 1
		}
		[ -n "$(ss -Hltn "sport = :$1" 2>/dev/null)" ] && return 0
		sleep 0.1
	done
	fail "nothing listens on port $1 after 30 s"
	return 1
}
gw_config() { # file port extra-yaml
	cat >"$1" <<EOF
listen: "127.0.0.1:$2"
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
$3
EOF
}
declare -A S_URL S_PID
start_server() { # name: sets S_URL[name], S_PID[name]
	local s=$1 pid
	free_port || return 1
	case $s in
	gateway-tls)
		gw_config "$WORK/$s.yaml" "$PORT" "tls: {cert_file: $WORK/tls.crt, key_file: $WORK/tls.key}"
		setsid "${SRV[@]}" "$BIN/gateway" serve -c "$WORK/$s.yaml" >"$WORK/$s.log" 2>&1 </dev/null &
		S_URL[$s]="wss://127.0.0.1:$PORT/mcp"
		;;
	gateway)
		gw_config "$WORK/$s.yaml" "$PORT" ""
		setsid "${SRV[@]}" "$BIN/gateway" serve -c "$WORK/$s.yaml" >"$WORK/$s.log" 2>&1 </dev/null &
		S_URL[$s]="ws://127.0.0.1:$PORT/mcp"
		;;
	tlsref)
		setsid "${SRV[@]}" "$BIN/tlsref" -listen "127.0.0.1:$PORT" -cert "$WORK/tls.crt" -key "$WORK/tls.key" >"$WORK/$s.log" 2>&1 </dev/null &
		S_URL[$s]="wss://127.0.0.1:$PORT/mcp"
		;;
	tlsref-plain)
		setsid "${SRV[@]}" "$BIN/tlsref" -listen "127.0.0.1:$PORT" -plain >"$WORK/$s.log" 2>&1 </dev/null &
		S_URL[$s]="ws://127.0.0.1:$PORT/mcp"
		;;
	esac
	pid=$!
	GROUPS_STARTED+=("$pid")
	S_PID[$s]=$pid
	wait_listen "$PORT" "$pid" || return 1
	sleep 0.3
	if [ -n "$(ss -Hltn "sport = :$PORT" | awk '$4 !~ /^127\.0\.0\.1:/')" ]; then
		fail "$s listens off loopback on port $PORT"
		return 1
	fi
}
stop_server() { # name
	local s=$1 g rest=()
	stop_group "${S_PID[$s]}"
	for g in "${GROUPS_STARTED[@]}"; do [ "$g" = "${S_PID[$s]}" ] || rest+=("$g"); done
	GROUPS_STARTED=("${rest[@]}")
	unset "S_PID[$s]"
}

# bench_run server scenario args...: one gateway bench run, JSON to RAW.
bench_run() {
	local s=$1 sc=$2 rc=0 auth=(--token-file "$WORK/token")
	shift 2
	[[ ${S_URL[$s]} == wss://* ]] && auth+=(--insecure)
	local json="$RAW/$s--$sc.bench.json" txt="$WORK/$s--$sc.txt"
	meta load "$s--$sc	$(cut -d' ' -f1-3 /proc/loadavg)"
	timeout -s INT -k 30 "$BENCH_LIMIT" "${GEN[@]}" "$BIN/bench" bench --quiet --url "${S_URL[$s]}" "${auth[@]}" \
		--server-pid "${S_PID[$s]}" --out-json "$json" "$@" >"$txt" 2>&1 || rc=$?
	sed 's/^/   /' "$txt" | grep -v '^ *$' | head -n 20
	if [ $rc -eq 124 ] || [ $rc -eq 130 ]; then
		fail "$s $sc: stopped after the ${BENCH_LIMIT}s bound; the figures are those of the part that ran"
	elif [ $rc -ne 0 ]; then
		fail "$s $sc: gateway bench exited $rc ($(tail -n1 "$txt"))"
	fi
	kill -0 "${S_PID[$s]}" 2>/dev/null || fail "$s $sc: the server died during the run"
	return 0
}

# ---- idle: fresh servers, one at a time (as make bench's gateway-tls idle) ---
PARTS=${PARTS:-idle storm calls}
has() { [[ " $PARTS " == *" $1 "* ]]; }
meta parts "$PARTS"
has idle && for s in gateway-tls tlsref; do
	say "$s: idle, $IDLE_N connections held $IDLE_HOLD"
	start_server "$s" || continue
	bench_run "$s" idle --mode idle --conns "$IDLE_N" --duration "$IDLE_HOLD"
	stop_server "$s"
done

# ---- the four servers side by side -----------------------------------------
SERVERS=(gateway-tls tlsref gateway tlsref-plain)
UP=()
for s in "${SERVERS[@]}"; do
	start_server "$s" && UP+=("$s")
done
for s in "${UP[@]}"; do
	if [[ ${S_URL[$s]} == wss://* ]]; then
		a=${S_URL[$s]#wss://}
		meta "tls_$s" "$("$BIN/suite" tlsprobe -addr "${a%%/*}" 2>&1 | head -n1)"
	fi
done
# The same client for ws:// and wss://: the goroutine engine (over ws://
# gateway bench would otherwise take its epoll engine for the call phase).
export GATEWAY_BENCH_ENGINE=goroutine
meta client_engine "goroutine (GATEWAY_BENCH_ENGINE=goroutine for every run, ws:// and wss:// alike)"

say "warm-up (not recorded)"
for s in "${UP[@]}"; do
	auth=(--token-file "$WORK/token")
	[[ ${S_URL[$s]} == wss://* ]] && auth+=(--insecure)
	"${GEN[@]}" "$BIN/bench" bench --quiet --url "${S_URL[$s]}" "${auth[@]}" --mode connect --conns "$WARM_N" >/dev/null 2>&1 ||
		fail "$s: warm-up connect failed"
	"${GEN[@]}" "$BIN/bench" bench --quiet --url "${S_URL[$s]}" "${auth[@]}" --mode call --conns "$CALL_LARGE" --duration "$WARM_D" >/dev/null 2>&1 ||
		fail "$s: warm-up calls failed"
done
meta warmup "$WARM_N connects and $WARM_D of calls at $CALL_LARGE connections per server"

order=()
rotate() { # the servers in the order of round $1
	local k n=${#UP[@]}
	order=()
	for k in $(seq 0 $((n - 1))); do order+=("${UP[$(((k + $1 - 1) % n))]}"); done
}
for r in $(seq 1 "$ROUNDS"); do
	rotate "$r"
	has storm && for s in "${order[@]}"; do
		say "$s: storm, $STORM_N connects, round $r of $ROUNDS"
		bench_run "$s" "connect-r$r" --mode connect --conns "$STORM_N"
	done
	# Steady state: the same load on every server (open loop, RATE calls/s:
	# the CPU per call is compared at equal work), then each server's
	# capacity (closed loop, one call in flight per connection).
	has calls || continue
	for sc in small large; do
		n=$CALL_SMALL
		[ $sc = large ] && n=$CALL_LARGE
		for s in "${order[@]}"; do
			say "$s: open loop, $RATE calls/s over $n connections, round $r of $ROUNDS"
			bench_run "$s" "open-$sc-r$r" --mode call --conns "$n" --rate "$RATE" --duration "$CALL_D"
		done
	done
	[ "$r" -le "$CLOSED_ROUNDS" ] || continue
	for sc in small large; do
		n=$CALL_SMALL
		[ $sc = large ] && n=$CALL_LARGE
		for s in "${order[@]}"; do
			say "$s: closed loop at $n connections, round $r of $CLOSED_ROUNDS"
			bench_run "$s" "closed-$sc-r$r" --mode call --conns "$n" --duration "$CALL_D"
		done
	done
done
for s in "${UP[@]}"; do stop_server "$s"; done

# ---- report ----------------------------------------------------------------
meta load_after "$(cut -d' ' -f1-3 /proc/loadavg)"
meta duration_s "$(($(date +%s) - T0))"
cp "$META" "$RAW/meta.tsv"
"$BIN/suite" tlsreport -dir "$RAW" -meta "$META" -md "$OUT/$NAME.md"
say "done in $(($(date +%s) - T0)) s"
echo "results: $OUT/$NAME.md, raw JSON in $RAW/"
