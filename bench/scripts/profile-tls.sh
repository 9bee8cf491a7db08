#!/usr/bin/env bash
# Where a wss:// connect's server CPU goes, the gateway next to net/http
# (bench/tlsref): both servers pinned to CPU 1, `gateway bench --mode
# connect` (TCP + full TLS handshake + upgrade + auth + initialize + close)
# on CPU 0, and during each storm `perf record` samples the server (user and
# kernel). The samples are sorted into the parts of a connect (key exchange,
# signature, hashing, records, crypto/tls's own logic, HTTP/WebSocket,
# the gateway's code, gnet, Go's GC, allocator and scheduler, the kernel)
# and scaled by the run's server CPU per connection, so each row is µs per
# connection; then the top symbols of each server by self time.
#
#   bench/scripts/profile-tls.sh [conns]        (default 8000)
#
# Env: SAMPLE (perf window in s, default 5, from 2 s in), GATEWAY_REV (build
# the gateway from this commit instead of the working tree), OUT (Markdown
# output, default stdout), TOP (symbols listed per server, default 25).
# Needs perf (Debian: linux-perf; installed when missing) and taskset.
# Loopback only; everything it starts is stopped on exit.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
N=${1:-8000}
SAMPLE=${SAMPLE:-5}
TOP=${TOP:-25}

if ! command -v perf >/dev/null || ! perf --version >/dev/null 2>&1; then
	echo "profile-tls.sh: installing linux-perf" >&2
	(apt-get install -y -qq linux-perf >/dev/null 2>&1 ||
		{ apt-get update -qq && apt-get install -y -qq linux-perf >/dev/null; }) || {
		echo "profile-tls.sh: perf is required (apt-get install linux-perf)" >&2
		exit 1
	}
fi
[ "$(cat /proc/sys/kernel/perf_event_paranoid)" -le 1 ] 2>/dev/null || echo -1 >/proc/sys/kernel/perf_event_paranoid 2>/dev/null || true

work=$(mktemp -d)
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$work"
}
trap cleanup EXIT
cd "$root"
if [ -n "${GATEWAY_REV:-}" ]; then
	mkdir -p "$work/src"
	git archive "$GATEWAY_REV" | tar -x -C "$work/src"
	(cd "$work/src" && go build -o "$work/gateway" ./cmd/gateway)
	built="commit $(git rev-parse --short "$GATEWAY_REV")"
else
	go build -o "$work/gateway" ./cmd/gateway
	built="working tree at $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- . ':!bench' || echo ' + uncommitted changes')"
fi
go build -o "$work/tlsref" ./bench/tlsref
go build -o "$work/bench" ./cmd/gateway

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=127.0.0.1 \
	-addext subjectAltName=IP:127.0.0.1 -keyout "$work/tls.key" -out "$work/tls.crt" 2>/dev/null
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
token=profile-token-0123456789abcdef
printf %s "$token" >"$work/token"
echo "$(printf %s $token | sha256sum | cut -d' ' -f1) bench" >"$work/tokens"
gport=$(free_port)
rport=$(free_port)
cat >"$work/gw.yaml" <<YAML
listen: "127.0.0.1:$gport"
auth: {static_tokens_file: $work/tokens}
limits: {max_connections_per_ip: 100000, max_pending_auth: 100000}
ratelimit:
  per_connection: {messages: 100000000, window: 1s}
  per_subject: {messages: 1000000000, window: 1s}
  handshakes_per_ip: {count: 1000000, window: 1s}
admin: {listen: ""}
tls: {cert_file: $work/tls.crt, key_file: $work/tls.key}
YAML
taskset -c 1 "$work/gateway" serve -c "$work/gw.yaml" >"$work/gw.log" 2>&1 &
gpid=$!
pids+=("$gpid")
taskset -c 1 "$work/tlsref" -listen "127.0.0.1:$rport" -cert "$work/tls.crt" -key "$work/tls.key" >"$work/ref.log" 2>&1 &
rpid=$!
pids+=("$rpid")
sleep 1

# split FILE: "part<TAB>samples" lines from a perf.data file (self time).
split() {
	local total
	total=$(perf report -i "$1" --no-children --sort dso -g none -n --stdio 2>/dev/null | grep -v '^#' | awk 'NF>=3 {s+=$2} END {print s+0}')
	{
		echo "total	$total"
		perf report -i "$1" --no-children --sort dso,sym -g none -n --stdio 2>/dev/null | grep -v '^#' | grep -v '^$' |
			awk '{n=$2; dso=$3; $1=$2=$3=""; s=$0
				if (dso ~ /kernel/) c="kernel (TCP accept, reads, writes, close, epoll, scheduling)"
				else if (s ~ /mlkem|sha3|keccak/) c="key exchange: ML-KEM-768 (with its SHA-3/SHAKE)"
				else if (s ~ /edwards25519|x25519|curve25519|ecdh/) c="key exchange: X25519"
				else if (s ~ /nistec|ecdsa|bigmod|p256/) c="signature: ECDSA P-256"
				else if (s ~ /sha256|sha512|hmac|hkdf|tls13/) c="hashing: SHA-256, HMAC, HKDF (transcript, key schedule)"
				else if (s ~ /aes|gcm|gcmAes|gHash/) c="records: AES-GCM"
				else if (s ~ /drbg|rand\.|getrandom|entropy/) c="crypto/rand"
				else if (s ~ /x509|asn1|cryptobyte/) c="certificate encoding (x509, asn1, cryptobyte)"
				else if (s ~ /crypto\/tls/) c="crypto/tls: handshake state machine, record layer"
				else if (s ~ /mcpgate/) c="gateway: reactor, tlsconn, frame, auth, mcp"
				else if (s ~ /gnet/) c="gnet"
				else if (s ~ /net\/http|websocket|gobwas|textproto|bufio|net\/url/) c="HTTP upgrade, WebSocket frames"
				else if (s ~ /gcBgMarkWorker|scanobject|gcDrain|markroot|greyobject|findObject|scanblock|wbBuf|gcAssist|sweepone|bgsweep|spanOf|heapBitsSmall|typePointers|gcmark|gcStart|gcMark|scanstack|scanframe|pcvalue|funcspdelta|step|findfunc/) c="Go runtime: garbage collector"
				else if (s ~ /mallocgc|nextFreeFast|memclr|growslice|newobject|makeslice|mcache|mcentral|mheap|refill|allocSpan|memmove|rawstring|concatstring|slicebytetostring/) c="Go runtime: allocation, copying"
				else if (s ~ /schedule|findRunnable|park|ready|newproc|gogo|mcall|futex|notesleep|notewakeup|stealWork|runqgrab|runqget|wakep|netpoll|startm|stopm|mPark|execute|goexit|checkTimers|runtimer|lock2|unlock2|semacquire|semrelease|chansend|chanrecv|selectgo|usleep|osyield|procyield/) c="Go runtime: scheduler, goroutines, timers, locks"
				else if (s ~ /runtime\.|internal\/runtime/) c="Go runtime: other"
				else c="other user code"
				t[c]+=n} END {for (c in t) print c "\t" t[c]}'
	} >"$1.split"
	perf report -i "$1" --no-children --sort sym -g none --stdio 2>/dev/null | grep -v '^#' | grep -v '^$' | head -n "$TOP" |
		awk '{p=$1; $1=""; sub(/^ +\[.\] /, "", $0); printf "| %s | %s |\n", p, $0}' >"$1.top"
}
jget() { python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); v=d
for k in sys.argv[2].split("."): v=v[k]
print(v)' "$1" "$2"; }
out() { if [ -n "${OUT:-}" ]; then cat >>"$OUT"; else cat; fi; }
[ -z "${OUT:-}" ] || : >"$OUT"

declare -A us rate gen
for s in gateway tlsref; do
	if [ $s = gateway ]; then port=$gport pid=$gpid; else port=$rport pid=$rpid; fi
	url="wss://127.0.0.1:$port/mcp"
	taskset -c 0 "$work/bench" bench --quiet --insecure --url "$url" --token-file "$work/token" --mode connect --conns 500 >/dev/null # warm-up
	taskset -c 0 "$work/bench" bench --quiet --insecure --url "$url" --token-file "$work/token" --server-pid "$pid" \
		--mode connect --conns "$N" --out-json "$work/$s.json" >"$work/$s.txt" 2>&1 &
	b=$!
	sleep 2
	perf record -q -e cpu-clock -F 2999 -g -p "$pid" -o "$work/$s.perf" -- sleep "$SAMPLE" >/dev/null 2>&1
	wait $b || {
		cat "$work/$s.txt" >&2
		exit 1
	}
	us[$s]=$(jget "$work/$s.json" server.cpu_us_per_conn)
	rate[$s]=$(jget "$work/$s.json" connections.per_sec | cut -d. -f1)
	gen[$s]=$(jget "$work/$s.json" generator.cores)
	split "$work/$s.perf"
done

{
	echo "# Server CPU per wss:// connect, by part"
	echo
	echo "\`bench/scripts/profile-tls.sh $N\` at $(date -u +%Y-%m-%dT%H:%MZ) on $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), $(nproc) CPUs, Linux $(uname -r), $(go version | cut -d' ' -f3); gateway from the $built."
	echo "Servers on CPU 1 (the gateway: builtin upstream, TLS with a self-signed ECDSA P-256 certificate; bench/tlsref: net/http + crypto/tls, same certificate),"
	echo "\`gateway bench --mode connect --conns $N --insecure\` on CPU 0 (full handshakes: TLS 1.3, X25519MLKEM768, no resumption), \`perf record -e cpu-clock -g\`"
	echo "on the server for ${SAMPLE} s from 2 s in. Each part's share of the server's samples (self time) is scaled by the run's server CPU per connection"
	echo "(from /proc), so the rows are µs per connection. Load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)."
	echo
	echo "| part | gateway µs/conn | net/http µs/conn | gateway - net/http |"
	echo "|---|---|---|---|"
	awk -F'\t' -v g="${us[gateway]}" -v f="${us[tlsref]}" '
		FNR==1 {file++}
		$1=="total" {tot[file]=$2; next}
		{v[file, $1]=$2; if (!($1 in seen)) {seen[$1]=1; order[++k]=$1}}
		END {
			for (i=1; i<=k; i++) {
				c=order[i]; a=(tot[1] > 0) ? v[1,c]/tot[1]*g : 0; b=(tot[2] > 0) ? v[2,c]/tot[2]*f : 0
				printf "%s\t| %s | %.1f | %.1f | %+.1f |\n", a+b, c, a, b, a-b
			}
		}' "$work/gateway.perf.split" "$work/tlsref.perf.split" | sort -t$'\t' -k1,1 -g -r | cut -f2-
	printf '| **total (server CPU per connection, /proc)** | **%.1f** | **%.1f** | **%+.1f (%.2f x)** |\n' "${us[gateway]}" "${us[tlsref]}" \
		"$(echo "${us[gateway]} - ${us[tlsref]}" | bc -l)" "$(echo "${us[gateway]} / ${us[tlsref]}" | bc -l)"
	echo
	echo "connections/s: gateway ${rate[gateway]}, net/http ${rate[tlsref]}; load generator cores over the connect phase: gateway run ${gen[gateway]}, net/http run ${gen[tlsref]}."
	for s in gateway tlsref; do
		echo
		echo "### Top $TOP symbols by self time: $([ $s = gateway ] && echo gateway || echo 'net/http tlsref')"
		echo
		echo "| self % | symbol |"
		echo "|---|---|"
		cat "$work/$s.perf.top"
	done
} | out
