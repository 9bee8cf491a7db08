#!/usr/bin/env bash
# Where the server CPU of TLS goes, the gateway next to net/http
# (bench/tlsref), with perf. Servers pinned to CPU 1, `gateway bench` on
# CPU 0, `perf record -g -C 1` during each run (the server's samples kept),
# samples sorted into parts (key exchange, signature, hashing, AES-GCM,
# crypto/tls's own code, HTTP/WebSocket, the gateway's code, gnet, Go's GC,
# allocator, stack and scheduler, the kernel) and scaled by the run's
# server CPU from /proc, so each row is µs per connection or per call; then
# inclusive paths (the whole handshake, GC, allocation, syscalls) and the
# top symbols.
#
#   bench/scripts/profile-tls.sh [conns]          the storm: --mode connect
#                                                 over wss:// (default 8000),
#                                                 gateway and tlsref
#   bench/scripts/profile-tls.sh --calls [conns]  tools/call echo, open loop
#                                                 at RATE calls/s (default
#                                                 1000 conns): gateway and
#                                                 tlsref over wss:// and ws://
#
# Env: ROUNDS (runs per server, in rotating order, default 2; a server's
# samples are pooled and scaled by the mean of its runs), SAMPLE (perf
# window in s, default 5, from 2 s in), RATE (--calls, default 20000),
# GATEWAY_REV (build the gateway from this commit instead of the working
# tree), OUT (Markdown output, default stdout), TOP (symbols listed per
# server, default 25), KEEP=1 (keep the work directory).
# Needs perf (Debian: linux-perf; installed when missing) and taskset.
# Loopback only; everything it starts is stopped on exit.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
MODE=storm
if [ "${1:-}" = --calls ]; then
	MODE=calls
	shift
fi
if [ $MODE = storm ]; then N=${1:-8000}; else N=${1:-1000}; fi
RATE=${RATE:-20000}
SAMPLE=${SAMPLE:-5}
ROUNDS=${ROUNDS:-2}
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

mkdir -p "$root/bench/results/tmp"
work=$(mktemp -d -p "$root/bench/results/tmp" profile-tls.XXXXXX)
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	if [ "${KEEP:-}" = 1 ]; then echo "kept: $work" >&2; else rm -rf "$work"; fi
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
declare -A PORT PID URL
gwconf() { # file port tls(yes/no)
	cat >"$1" <<YAML
listen: "127.0.0.1:$2"
auth: {static_tokens_file: $work/tokens}
limits: {max_connections_per_ip: 100000, max_pending_auth: 100000}
ratelimit:
  per_connection: {messages: 100000000, window: 1s}
  frames_per_connection: {count: 100000000, window: 1s}
  per_subject: {messages: 1000000000, window: 1s}
  handshakes_per_ip: {count: 1000000, window: 1s}
admin: {listen: ""}
YAML
	[ "$3" = yes ] && echo "tls: {cert_file: $work/tls.crt, key_file: $work/tls.key}" >>"$1"
	return 0
}
SERVERS=(gateway-tls tlsref)
[ $MODE = calls ] && SERVERS=(gateway-tls gateway tlsref tlsref-plain)
for s in "${SERVERS[@]}"; do
	p=$(free_port)
	case $s in
	gateway-tls | gateway)
		gwconf "$work/$s.yaml" "$p" "$([ $s = gateway-tls ] && echo yes || echo no)"
		taskset -c 1 "$work/gateway" serve -c "$work/$s.yaml" >"$work/$s.log" 2>&1 &
		;;
	tlsref) taskset -c 1 "$work/tlsref" -listen "127.0.0.1:$p" -cert "$work/tls.crt" -key "$work/tls.key" >"$work/$s.log" 2>&1 & ;;
	tlsref-plain) taskset -c 1 "$work/tlsref" -listen "127.0.0.1:$p" -plain >"$work/$s.log" 2>&1 & ;;
	esac
	PID[$s]=$!
	pids+=("$!")
	case $s in gateway-tls | tlsref) URL[$s]="wss://127.0.0.1:$p/mcp" ;; *) URL[$s]="ws://127.0.0.1:$p/mcp" ;; esac
done
sleep 1

# agg.py PID TOP: reads `perf script` of CPU 1, keeps the server's samples
# (by process id) and prints "total", "part" (self time by part of a
# connect), "path" (inclusive: samples with that function on the stack)
# and "sym" (top symbols by self time) lines, tab-separated.
cat >"$work/agg.py" <<'PY'
import re, sys, collections
# perf script -F comm,pid,tid,ip,sym,dso output on stdin; argv[1] = pid (tgid)
PARTS = [
    ("kernel (TCP accept, reads, writes, close, epoll, scheduling)", None),
    ("key exchange: ML-KEM-768 (with its SHA-3/SHAKE)", r"mlkem|sha3|keccak"),
    ("key exchange: X25519", r"edwards25519|x25519|curve25519|ecdh"),
    ("signature: ECDSA P-256", r"nistec|ecdsa|bigmod|p256"),
    ("hashing: SHA-256, HMAC, HKDF (transcript, key schedule)", r"sha256|sha512|hmac|hkdf|tls13"),
    ("records: AES-GCM", r"aes|gcm|gHash"),
    ("crypto/rand", r"drbg|crypto/rand|getrandom|entropy"),
    ("certificate encoding (x509, asn1, cryptobyte)", r"x509|asn1|cryptobyte"),
    ("crypto/tls: handshake state machine, record layer", r"crypto/tls"),
    ("gateway: reactor, tlsconn, frame, auth, mcp", r"mcpgate"),
    ("gnet", r"gnet"),
    ("HTTP upgrade, WebSocket frames", r"net/http|websocket|gobwas|textproto|bufio|net/url"),
    ("Go runtime: stack growth (copystack)", r"morestack|newstack|copystack|adjustframe|adjustpointers|stackalloc|stackfree|stackcache"),
    ("Go runtime: stack walking (GC stack scans, stack growth, profiling)", r"pcvalue|funcspdelta|runtime\.step|findfunc|unwinder|funcInfo|pcdatavalue|readvarint|getStackMap|tracebackPCs"),
    ("Go runtime: garbage collector", r"gcBgMarkWorker|scanobject|scanObject|gcDrain|markroot|greyobject|findObject|scanblock|wbBuf|gcAssist|sweep|spanOf|heapBits|typePointers|gcmark|gcStart|gcMark|scanstack|scanframe|tryDeferToSpanScan|scanSpan|spanSet|markBits|gcWork|gcFlush|bulkBarrier|\(\*mspan\)|scanConservative|pageAlloc|gcController|lfstack|MarkBits|internal/runtime/gc"),
    ("Go runtime: allocation, copying", r"mallocgc|nextFreeFast|memclr|growslice|newobject|makeslice|mcache|mcentral|mheap|refill|allocSpan|memmove|rawstring|concatstring|slicebytetostring|gcWriteBarrier"),
    ("Go runtime: scheduler, goroutines, timers, locks", r"schedule|findRunnable|park|ready|newproc|gogo|mcall|futex|notesleep|notewakeup|stealWork|runqgrab|runqget|wakep|netpoll|startm|stopm|mPark|execute|goexit|checkTimers|runtimer|lock2|unlock2|semacquire|semrelease|chansend|chanrecv|selectgo|usleep|osyield|procyield|timer"),
    ("Go runtime: other", r"runtime\.|internal/runtime"),
]
COMPILED = [(n, re.compile(r) if r else None) for n, r in PARTS]
PATHS = [
    ("crypto/tls server handshake (all of it)", lambda s: s.startswith("crypto/tls.(*Conn).serverHandshake")),
    ("GC: background mark workers", lambda s: s.startswith("runtime.gcBgMarkWorker")),
    ("GC: mark assists charged to allocating goroutines", lambda s: s == "runtime.gcAssistAlloc"),
    ("allocation (mallocgc, assists included)", lambda s: s == "runtime.mallocgc"),
    ("goroutine stack growth (newstack)", lambda s: s == "runtime.newstack"),
    ("memory profiler sampling (mProf_Malloc)", lambda s: s == "runtime.mProf_Malloc"),
    ("kernel: read(2)", lambda s: s == "ksys_read"),
    ("kernel: write(2)", lambda s: s == "ksys_write"),
    ("kernel: close(2)", lambda s: s == "__x64_sys_close"),
    ("kernel: accept4(2)", lambda s: s == "__sys_accept4"),
    ("kernel: epoll_wait(2)", lambda s: s == "do_epoll_wait"),
    ("kernel: futex(2) (thread sleeps, wake-ups)", lambda s: s == "__x64_sys_futex"),
    ("kernel: page faults", lambda s: s == "exc_page_fault"),
]
def part_of(sym, dso):
    if "kernel" in dso or dso.startswith("[k"):
        return PARTS[0][0]
    for n, r in COMPILED[1:]:
        if r.search(sym):
            return n
    return "other user code"
want = sys.argv[1]
line_re = re.compile(r"^\s*[0-9a-f]+ (.*) \((.*)\)\s*$")
parts = collections.Counter(); paths = collections.Counter(); selfsym = collections.Counter()
total = 0
cur = None
def flush():
    global total
    if not cur: return
    frames = cur
    total_add = 1
    sym, dso = frames[0] if frames else ("[unknown]", "?")
    parts[part_of(sym, dso)] += 1
    selfsym[sym] += 1
    seen = set()
    for s, d in frames:
        for name, f in PATHS:
            if name not in seen and f(s):
                seen.add(name)
    for n in seen: paths[n] += 1
keep = False
for line in sys.stdin:
    if line.strip() == "":
        if keep and cur is not None:
            flush(); total += 1
        cur = None; keep = False
        continue
    if not line.startswith((" ", "\t")):
        m = re.search(r"\s(\d+)/(\d+)", line)
        keep = bool(m and m.group(1) == want)
        cur = [] if keep else None
        continue
    if keep:
        m = line_re.match(line)
        if m: cur.append((m.group(1).strip(), m.group(2)))
if keep and cur is not None:
    flush(); total += 1
print("total\t%d" % total)
for n, c in parts.items(): print("part\t%s\t%d" % (n, c))
for n, c in paths.items(): print("path\t%s\t%d" % (n, c))
for n, c in selfsym.most_common(int(sys.argv[2]) if len(sys.argv) > 2 else 25): print("sym\t%s\t%d" % (n, c))
PY
split() { # FILE.perf: FILE.perf.agg
	perf script -i "$1" -F comm,pid,tid,ip,sym,dso 2>/dev/null | python3 "$work/agg.py" "$(cat "${1%.perf}.pid")" "$TOP" >"$1.agg"
}
jget() { python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); v=d
for k in sys.argv[2].split("."): v=v[k]
print(v)' "$1" "$2"; }
out() { if [ -n "${OUT:-}" ]; then cat >>"$OUT"; else cat; fi; }
[ -z "${OUT:-}" ] || : >"$OUT"

declare -A us rate gen
export GATEWAY_BENCH_ENGINE=goroutine # the same client over ws:// and wss://
B=(taskset -c 0 "$work/bench" bench --quiet --insecure --token-file "$work/token")
for s in "${SERVERS[@]}"; do # warm-up
	if [ $MODE = storm ]; then
		"${B[@]}" --url "${URL[$s]}" --mode connect --conns 500 >/dev/null
	else
		"${B[@]}" --url "${URL[$s]}" --mode call --conns "$N" --rate "$RATE" --duration 3s >/dev/null
	fi
done
k=${#SERVERS[@]}
for r in $(seq 1 "$ROUNDS"); do
	for i in $(seq 0 $((k - 1))); do
		s=${SERVERS[$(((i + r - 1) % k))]}
		if [ $MODE = storm ]; then
			"${B[@]}" --url "${URL[$s]}" --server-pid "${PID[$s]}" --mode connect --conns "$N" --out-json "$work/$s-$r.json" >"$work/$s-$r.txt" 2>&1 &
		else
			"${B[@]}" --url "${URL[$s]}" --server-pid "${PID[$s]}" --mode call --conns "$N" --rate "$RATE" \
				--duration "$((SAMPLE + 5))s" --out-json "$work/$s-$r.json" >"$work/$s-$r.txt" 2>&1 &
		fi
		b=$!
		sleep 2
		[ $MODE = calls ] && sleep 1 # connected and settled
		# The whole of CPU 1 (every thread of the server, old or new); split
		# keeps the server's samples.
		perf record -q -e cpu-clock -F 2999 -g -C 1 -o "$work/$s-$r.perf" -- sleep "$SAMPLE" >/dev/null 2>&1
		echo "${PID[$s]}" >"$work/$s-$r.pid"
		wait $b || {
			cat "$work/$s-$r.txt" >&2
			exit 1
		}
		if [ $MODE = storm ]; then
			us[$s]="${us[$s]:-} $(jget "$work/$s-$r.json" server.cpu_us_per_conn | xargs printf %.1f)"
			rate[$s]="${rate[$s]:-} $(jget "$work/$s-$r.json" connections.per_sec | cut -d. -f1)"
		else
			us[$s]="${us[$s]:-} $(jget "$work/$s-$r.json" server.cpu_us_per_call | xargs printf %.2f)"
			rate[$s]="${rate[$s]:-} $(jget "$work/$s-$r.json" calls.per_sec | cut -d. -f1)"
		fi
		gen[$s]="${gen[$s]:-} $(jget "$work/$s-$r.json" generator.cores | cut -c1-4)"
		split "$work/$s-$r.perf"
	done
done
mean() { echo "$*" | tr ' ' '\n' | awk 'NF {s+=$1; n++} END {printf "%.2f", s/n}'; }
cols=()
for s in "${SERVERS[@]}"; do
	cat "$work/$s"-[0-9]*.perf.agg >"$work/$s.agg" # not gateway-tls-N for gateway
	cols+=("$s=$work/$s.agg=$(mean ${us[$s]})")
done

{
	if [ $MODE = storm ]; then
		echo "# Server CPU per wss:// connect, by part"
		echo
		echo "\`bench/scripts/profile-tls.sh $N\` (ROUNDS=$ROUNDS) at $(date -u +%Y-%m-%dT%H:%MZ) on $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), $(nproc) CPUs, Linux $(uname -r), $(go version | cut -d' ' -f3); gateway from the $built."
		echo "Servers on CPU 1 (the gateway: builtin upstream, TLS with a self-signed ECDSA P-256 certificate; bench/tlsref: net/http + crypto/tls, same certificate),"
		echo "\`gateway bench --mode connect --conns $N --insecure\` on CPU 0 (full handshakes: TLS 1.3, X25519MLKEM768, no resumption),"
	else
		echo "# Server CPU per tools/call echo over wss:// and ws://, by part"
		echo
		echo "\`bench/scripts/profile-tls.sh --calls $N\` (ROUNDS=$ROUNDS, RATE=$RATE) at $(date -u +%Y-%m-%dT%H:%MZ) on $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), $(nproc) CPUs, Linux $(uname -r), $(go version | cut -d' ' -f3); gateway from the $built."
		echo "Servers on CPU 1 (the gateway, builtin upstream, over wss:// and as a second process over ws://; bench/tlsref over wss:// and with -plain over ws://),"
		echo "\`gateway bench --mode call --conns $N --rate $RATE\` (open loop, 64-byte echo, goroutine engine for both schemes) on CPU 0,"
	fi
	echo "\`perf record -e cpu-clock -g -C 1\` on CPU 1 for ${SAMPLE} s of each run, the server's samples only. Each part's share of the server's samples (self time) is scaled by the"
	echo "run's server CPU from /proc (mean of the rounds). Load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)."
	echo
	python3 - "$MODE" "$TOP" "${cols[@]}" <<'PY'
import sys
mode, TOP, cols = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
unit = "µs/conn" if mode == "storm" else "µs/call"
names = {"gateway-tls": "gateway wss", "gateway": "gateway ws", "tlsref": "net/http wss", "tlsref-plain": "net/http ws"}
def load(f):
    d = {"part": {}, "path": {}, "sym": {}}
    tot = 0
    for line in open(f):
        k, *v = line.rstrip("\n").split("\t")
        if k == "total":
            tot += int(v[0])
        elif k in ("part", "path", "sym"):
            d[k][v[0]] = d[k].get(v[0], 0) + int(v[1])
    return d, tot
C = []
for c in cols:
    s, f, u = c.split("=")
    d, t = load(f)
    C.append((s, d, t, float(u)))
val = lambda c, kind, n: c[1][kind].get(n, 0) / c[2] * c[3] if c[2] else 0.0
pairs = []  # (label, a, b): a - b columns
if mode == "storm":
    pairs = [("gateway - net/http", 0, 1)]
else:
    pairs = [("gateway: wss - ws", 0, 1), ("net/http: wss - ws", 2, 3)]
head = ["part (self time)"] + ["%s %s" % (names[c[0]], unit) for c in C] + [p[0] for p in pairs]
print("| " + " | ".join(head) + " |")
print("|" + "---|" * len(head))
parts = sorted({n for c in C for n in c[1]["part"]}, key=lambda n: -sum(val(c, "part", n) for c in C))
for n in parts:
    v = [val(c, "part", n) for c in C]
    print("| %s | %s | %s |" % (n, " | ".join("%.2f" % x for x in v), " | ".join("%+.2f" % (v[a] - v[b]) for _, a, b in pairs)))
tot = [c[3] for c in C]
print("| **total (server CPU, /proc)** | %s | %s |" % (" | ".join("**%.2f**" % x for x in tot), " | ".join("**%+.2f**" % (tot[a] - tot[b]) for _, a, b in pairs)))
print()
print("Paths across the parts (inclusive: the samples with that function on the stack), %s:" % unit)
print()
print("| path | " + " | ".join(names[c[0]] for c in C) + " |")
print("|" + "---|" * (len(C) + 1))
for n in sorted({n for c in C for n in c[1]["path"]}, key=lambda n: -val(C[0], "path", n)):
    print("| %s | %s |" % (n, " | ".join("%.2f" % val(c, "path", n) for c in C)))
print()
print("Samples of each server: " + ", ".join("%s %d" % (names[c[0]], c[2]) for c in C) + ".")
for c in C:
    print()
    print("### Top symbols by self time: " + names[c[0]])
    print()
    print("| self % | symbol |")
    print("|---|---|")
    for sym, n in sorted(c[1]["sym"].items(), key=lambda x: -x[1])[:TOP]:
        print("| %.2f%% | %s |" % (100.0 * n / c[2] if c[2] else 0, sym))
PY
	echo
	echo -n "Round by round:"
	for s in "${SERVERS[@]}"; do echo -n " $s: server CPU${us[$s]}, rate${rate[$s]}, generator cores${gen[$s]};"; done
	echo
} | out
