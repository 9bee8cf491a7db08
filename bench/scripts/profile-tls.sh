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
# Env: ROUNDS (storms per server, alternating which goes first, default 2),
# SAMPLE (perf window in s, default 5, from 2 s in), GATEWAY_REV (build
# the gateway from this commit instead of the working tree), OUT (Markdown
# output, default stdout), TOP (symbols listed per server, default 25).
# Needs perf (Debian: linux-perf; installed when missing) and taskset.
# Loopback only; everything it starts is stopped on exit.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
N=${1:-8000}
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

work=$(mktemp -d)
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
# ROUNDS storms per server, alternating which goes first (the VM's speed
# drifts); the samples of a server's rounds are pooled and scaled by the
# mean of its rounds' CPU per connection.
for r in $(seq 1 "$ROUNDS"); do
	order=(gateway tlsref)
	[ $((r % 2)) = 0 ] && order=(tlsref gateway)
	for s in "${order[@]}"; do
		if [ $s = gateway ]; then port=$gport pid=$gpid; else port=$rport pid=$rpid; fi
		url="wss://127.0.0.1:$port/mcp"
		taskset -c 0 "$work/bench" bench --quiet --insecure --url "$url" --token-file "$work/token" --mode connect --conns 500 >/dev/null # warm-up
		taskset -c 0 "$work/bench" bench --quiet --insecure --url "$url" --token-file "$work/token" --server-pid "$pid" \
			--mode connect --conns "$N" --out-json "$work/$s-$r.json" >"$work/$s-$r.txt" 2>&1 &
		b=$!
		sleep 2
		# The whole of CPU 1 (every thread of the server, old or new); split
		# keeps the server's samples.
		perf record -q -e cpu-clock -F 2999 -g -C 1 -o "$work/$s-$r.perf" -- sleep "$SAMPLE" >/dev/null 2>&1
		echo "$pid" >"$work/$s-$r.pid"
		wait $b || {
			cat "$work/$s-$r.txt" >&2
			exit 1
		}
		us[$s]="${us[$s]:-} $(jget "$work/$s-$r.json" server.cpu_us_per_conn)"
		rate[$s]="${rate[$s]:-} $(jget "$work/$s-$r.json" connections.per_sec | cut -d. -f1)"
		gen[$s]="${gen[$s]:-} $(jget "$work/$s-$r.json" generator.cores | cut -c1-4)"
		split "$work/$s-$r.perf"
	done
done
mean() { echo "$*" | tr ' ' '\n' | awk 'NF {s+=$1; n++} END {printf "%.1f", s/n}'; }
cat "$work"/gateway-*.perf.agg >"$work/gateway.agg"
cat "$work"/tlsref-*.perf.agg >"$work/tlsref.agg"

{
	echo "# Server CPU per wss:// connect, by part"
	echo
	echo "\`bench/scripts/profile-tls.sh $N\` (ROUNDS=$ROUNDS) at $(date -u +%Y-%m-%dT%H:%MZ) on $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), $(nproc) CPUs, Linux $(uname -r), $(go version | cut -d' ' -f3); gateway from the $built."
	echo "Servers on CPU 1 (the gateway: builtin upstream, TLS with a self-signed ECDSA P-256 certificate; bench/tlsref: net/http + crypto/tls, same certificate),"
	echo "\`gateway bench --mode connect --conns $N --insecure\` on CPU 0 (full handshakes: TLS 1.3, X25519MLKEM768, no resumption), \`perf record -e cpu-clock -g -C 1\`"
	echo "on CPU 1 for ${SAMPLE} s from 2 s in, the server's samples only. Each part's share of the server's samples (self time) is scaled by the run's server CPU per connection"
	echo "(from /proc), so the rows are µs per connection. Load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)."
	echo
	python3 - "$work/gateway.agg" "$work/tlsref.agg" "$(mean ${us[gateway]})" "$(mean ${us[tlsref]})" "$TOP" <<'PY'
import sys
TOP = int(sys.argv[5])
def load(f):
    d = {"part": {}, "path": {}, "sym": []}
    tot = 0
    for line in open(f):
        k, *v = line.rstrip("\n").split("\t")
        if k == "total":
            tot += int(v[0])
        elif k in ("part", "path"):
            d[k][v[0]] = d[k].get(v[0], 0) + int(v[1])
        elif k == "sym":
            d["sym"].append((v[0], int(v[1])))
    syms = {}
    for n, c in d["sym"]:
        syms[n] = syms.get(n, 0) + c
    d["sym"] = sorted(syms.items(), key=lambda x: -x[1])[:TOP]
    return d, tot
(g, tg), (r, tr) = load(sys.argv[1]), load(sys.argv[2])
ug, ur = float(sys.argv[3]), float(sys.argv[4])
sc = lambda n, t, u: n / t * u if t else 0.0
print("| part (self time) | gateway µs/conn | net/http µs/conn | gateway - net/http |")
print("|---|---|---|---|")
names = sorted(set(g["part"]) | set(r["part"]), key=lambda n: -(sc(g["part"].get(n, 0), tg, ug) + sc(r["part"].get(n, 0), tr, ur)))
for n in names:
    a, b = sc(g["part"].get(n, 0), tg, ug), sc(r["part"].get(n, 0), tr, ur)
    print("| %s | %.1f | %.1f | %+.1f |" % (n, a, b, a - b))
print("| **total (server CPU per connection, /proc; mean of the rounds)** | **%.1f** | **%.1f** | **%+.1f (%.2f x)** |" % (ug, ur, ug - ur, ug / ur if ur else 0))
print()
print("Paths across the parts (inclusive: the samples with that function on the stack), µs per connection:")
print()
print("| path | gateway | net/http |")
print("|---|---|---|")
names = sorted(set(g["path"]) | set(r["path"]), key=lambda n: -(sc(g["path"].get(n, 0), tg, ug)))
for n in names:
    print("| %s | %.1f | %.1f |" % (n, sc(g["path"].get(n, 0), tg, ug), sc(r["path"].get(n, 0), tr, ur)))
print()
print("Samples of the server: gateway %d, net/http %d." % (tg, tr))
for label, d, t in (("gateway", g, tg), ("net/http tlsref", r, tr)):
    print()
    print("### Top symbols by self time: " + label)
    print()
    print("| self % | symbol |")
    print("|---|---|")
    for sym, n in d["sym"]:
        print("| %.2f%% | %s |" % (100.0 * n / t if t else 0, sym))
PY
	echo
	echo "Round by round: server CPU µs/conn gateway${us[gateway]}, net/http${us[tlsref]}; connections/s gateway${rate[gateway]}, net/http${rate[tlsref]}; load generator cores over the connect phase: gateway runs${gen[gateway]}, net/http runs${gen[tlsref]}."
} | out
