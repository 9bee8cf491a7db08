#!/usr/bin/env bash
# Where the gateway's CPU per echo call goes, next to the floor's: both
# servers pinned to CPU 1, `gateway bench` closed loop on CPU 0, and during
# each run `perf record` samples the server (user and kernel stacks). The
# samples are sorted into the parts of the hot path (JSON scan, builtin
# server, reactor, frame reader, gnet, Go runtime, kernel: the socket write
# and read, waking the client, sysmon) and scaled by the run's µs/call, so
# each row is µs per call; the gap between the two columns is the price of
# the gateway's checks and state.
#
#   bench/scripts/profile.sh [conns...]        (default: 100 1000)
#
# Needs perf (Debian: linux-perf; installed when missing and apt-get works)
# and taskset. Loopback only; everything it starts is stopped on exit.
# Env: DURATION (bench run, default 12s), SAMPLE (perf window, default 6 s,
# starting 3 s in), OUT (Markdown output, default stdout).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
DURATION=${DURATION:-12s}
SAMPLE=${SAMPLE:-6}
CONNS=("$@")
[ ${#CONNS[@]} -gt 0 ] || CONNS=(100 1000)

if ! command -v perf >/dev/null || ! perf --version >/dev/null 2>&1; then
	echo "profile.sh: installing linux-perf" >&2
	(apt-get install -y -qq linux-perf >/dev/null 2>&1 ||
		{ apt-get update -qq && apt-get install -y -qq linux-perf >/dev/null; }) || {
		echo "profile.sh: perf is required (apt-get install linux-perf)" >&2
		exit 1
	}
fi
# perf needs to see kernel stacks and other processes' samples.
[ "$(cat /proc/sys/kernel/perf_event_paranoid)" -le 1 ] 2>/dev/null || echo -1 >/proc/sys/kernel/perf_event_paranoid 2>/dev/null || true

work=$(mktemp -d)
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$work"
}
trap cleanup EXIT
(cd "$root" && go build -o "$work/gateway" ./cmd/gateway && go build -o "$work/floor" ./bench/floor)

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
token=profile-token-0123456789abcdef
printf %s "$token" >"$work/token"
echo "$(printf %s $token | sha256sum | cut -d' ' -f1) bench" >"$work/tokens"
gport=$(free_port)
fport=$(free_port)
cat >"$work/gw.yaml" <<YAML
listen: "127.0.0.1:$gport"
reuse_port: false
auth: {static_tokens_file: $work/tokens}
limits: {max_connections_per_ip: 100000, max_pending_auth: 100000}
ratelimit:
  per_connection: {messages: 100000000, window: 1s}
  frames_per_connection: {count: 100000000, window: 1s}
  per_subject: {messages: 1000000000, window: 1s}
  handshakes_per_ip: {count: 1000000, window: 1s}
admin: {listen: ""}
YAML
taskset -c 1 "$work/gateway" serve -c "$work/gw.yaml" >"$work/gw.log" 2>&1 &
gpid=$!
pids+=("$gpid")
taskset -c 1 "$work/floor" -listen "127.0.0.1:$fport" >"$work/floor.log" 2>&1 &
fpid=$!
pids+=("$fpid")
sleep 1

# split FILE: "category<TAB>samples" lines from a perf.data file.
split() {
	local total
	total=$(perf report -i "$1" --no-children --sort dso -g none -n --stdio 2>/dev/null | grep -v '^#' | awk 'NF>=3 {s+=$2} END {print s+0}')
	{
		echo "total	$total"
		# Self time by symbol, user and kernel.
		perf report -i "$1" --no-children --sort dso,sym -g none -n --stdio 2>/dev/null | grep -v '^#' | grep -v '^$' |
			awk '{n=$2; dso=$3; $1=$2=$3=""; s=$0
				if (dso ~ /kernel/) c="kernel, self (all of it)"
				else if (s ~ /gateway\/mcp\./) c="user: JSON-RPC scan (mcp)"
				else if (s ~ /upstream\/builtin/) c="user: builtin server (echo)"
				else if (s ~ /gateway\/reactor/) c="user: reactor (session, limits, dispatch)"
				else if (s ~ /gateway\/(frame|session|ratelimit)|Limiter|gobwas|unicode\/utf8/) c="user: frame reader, UTF-8, session, rate limits"
				else if (dso == "floor" && s ~ /main\./) c="user: floor handler"
				else if (s ~ /gnet/) c="user: gnet"
				else if (s ~ /prometheus/) c="user: metrics"
				else c="user: Go runtime, syscall stubs"
				t[c]+=n} END {for (c in t) print c "\t" t[c]}'
		# Inclusive paths (children %), inside the kernel total above except sysmon.
		perf report -i "$1" --children --sort sym -g none --stdio 2>/dev/null | grep -v '^#' |
			awk -v total="$total" '{p=$1; sub(/%/, "", p); n=p/100*total}
				$4=="ksys_write" {print "  of which: write(2) to the client socket\t" n}
				$4=="ksys_read" {print "  of which: read(2) from the client socket\t" n}
				$4=="sock_def_readable" {print "  of which: waking the client (inside write)\t" n}
				$4=="do_epoll_wait" {print "  of which: epoll_wait\t" n}
				$4=="runtime.sysmon" {print "  Go sysmon thread, user and kernel (inclusive)\t" n}'
	} >"$1.split"
}

jget() { python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); v=d
for k in sys.argv[2].split("."): v=v[k]
print(v)' "$1" "$2"; }

out() { if [ -n "${OUT:-}" ]; then cat >>"$OUT"; else cat; fi; }
[ -z "${OUT:-}" ] || : >"$OUT"
{
	echo "# Server CPU per echo call, by part of the hot path"
	echo
	echo "\`bench/scripts/profile.sh\` at $(date -u +%Y-%m-%dT%H:%MZ) on $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), $(nproc) CPUs, Linux $(uname -r), $(go version | cut -d' ' -f3):"
	echo "servers on CPU 1, \`gateway bench --mode call\` (closed loop, 64-byte echo, $DURATION) on CPU 0,"
	echo "\`perf record -e cpu-clock -g\` on the server for ${SAMPLE} s from 3 s in. Each part's share of the samples is scaled"
	echo "by the run's server CPU per call (from /proc), so the rows are µs per call. Kernel rows marked \"of which\" are"
	echo "inclusive paths inside the kernel total."
} | out

for n in "${CONNS[@]}"; do
	declare -A us
	for s in gateway floor; do
		if [ $s = gateway ]; then port=$gport pid=$gpid; else port=$fport pid=$fpid; fi
		taskset -c 0 "$work/gateway" bench --quiet --url "ws://127.0.0.1:$port/mcp" --token-file "$work/token" \
			--server-pid "$pid" --mode call --conns "$n" --duration "$DURATION" --out-json "$work/$s-$n.json" >"$work/$s-$n.txt" 2>&1 &
		b=$!
		sleep 3
		perf record -q -e cpu-clock -F 2999 -g -p "$pid" -o "$work/$s-$n.perf" -- sleep "$SAMPLE" >/dev/null 2>&1
		wait $b || { cat "$work/$s-$n.txt" >&2; exit 1; }
		us[$s]=$(jget "$work/$s-$n.json" server.cpu_us_per_call)
		split "$work/$s-$n.perf"
	done
	{
		echo
		echo "## $n connections"
		echo
		echo "| part | gateway µs/call | floor µs/call | gateway - floor |"
		echo "|---|---|---|---|"
		awk -F'\t' -v g="${us[gateway]}" -v f="${us[floor]}" '
			FNR==1 {file++}
			$1=="total" {tot[file]=$2; next}
			{v[file, $1]=$2; if (!($1 in seen)) {seen[$1]=1; order[++k]=$1}}
			END {
				# user rows first, then the kernel total and its parts
				for (pass=1; pass<=3; pass++) for (i=1; i<=k; i++) {
					c=order[i]; isk=(c ~ /^kernel/); isof=(c ~ /of which|sysmon/)
					if ((pass==1 && !isk && !isof) || (pass==2 && isk) || (pass==3 && isof)) {
						a=(tot[1] > 0) ? v[1,c]/tot[1]*g : 0; b=(tot[2] > 0) ? v[2,c]/tot[2]*f : 0
						printf "| %s | %.2f | %.2f | %+.2f |\n", c, a, b, a-b
					}
				}
				printf "| **total (server CPU per call, /proc)** | **%.2f** | **%.2f** | **%+.2f (%.2f x)** |\n", g, f, g-f, (f > 0 ? g/f : 0)
			}' "$work/gateway-$n.perf.split" "$work/floor-$n.perf.split"
		echo
		echo "calls/s: gateway $(jget "$work/gateway-$n.json" calls.per_sec | cut -d. -f1), floor $(jget "$work/floor-$n.json" calls.per_sec | cut -d. -f1)."
	} | out
	unset us
done
