#!/usr/bin/env bash
# profile-saturation.sh: where the whole machine's CPU goes while fork mode
# (or spawn mode) serves hello-world at saturation. Starts the release
# server, drives it with closed-loop keep-alive clients, samples every CPU
# with `perf record -a -e cpu-clock` (a software clock: it works where the
# VM has no PMU) and prints the share of each process name, then the top
# symbols of each of the busiest. Prints figures; checks nothing.
#
#   sudo bash scripts/profile-saturation.sh
#   ISOLATION=spawn SECONDS_=10 CLIENTS=8 TOP=15 sudo bash scripts/profile-saturation.sh
#
# Environment: PYEXEC_BIN (default target/release/pyexec, built if missing),
# ISOLATION (fork), CLIENTS (8), SECONDS_ (sampling time, 8), FREQ (499 Hz),
# TOP (symbols per process, 12), KEEP (a directory to keep perf.data in).
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
if ! command -v perf >/dev/null; then
    echo "profile-saturation.sh: perf is not installed; nothing to do" >&2
    exit 0
fi
BIN=${PYEXEC_BIN:-$here/target/release/pyexec}
if [[ ! -x "$BIN" ]]; then
    (cd "$here" && cargo build --release --locked -q -p pyexec-server --bin pyexec)
fi
ISOLATION=${ISOLATION:-fork}
CLIENTS=${CLIENTS:-8}
SECONDS_=${SECONDS_:-8}
FREQ=${FREQ:-499}
TOP=${TOP:-12}
work=$(mktemp -d /tmp/pyexec-profile.XXXXXX)
server=""
load=""
cleanup() {
    [[ -n "$load" ]] && kill "$load" 2>/dev/null || true
    [[ -n "$server" ]] && kill -TERM "$server" 2>/dev/null && wait "$server" 2>/dev/null || true
    if [[ -n "${KEEP:-}" ]]; then
        mkdir -p "$KEEP" && cp "$work"/perf.data "$KEEP"/ 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
(cd "$here" && PORT=$port PYEXEC_ISOLATION=$ISOLATION PYEXEC_LOG_LEVEL=warn PYEXEC_QUEUE_MAX=64 \
    exec "$BIN") &
server=$!
for _ in $(seq 600); do
    curl -fs "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break
    sleep 0.1
done
curl -fs "http://127.0.0.1:$port/readyz" >/dev/null || { echo "the server did not become ready" >&2; exit 1; }
sleep 2

# Closed-loop clients, one keep-alive connection each, for the sampling
# time and a little more on both sides.
python3 - "$port" "$CLIENTS" "$((SECONDS_ + 4))" >"$work/load.out" <<'PY' &
import http.client, json, sys, threading, time
port, clients, seconds = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
body = json.dumps({"script": "def main():\n    return {\"hello\": \"world\"}\n"})
end = time.monotonic() + seconds
counts = []
def client():
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    ok = 0
    while time.monotonic() < end:
        c.request("POST", "/execute", body, {"Content-Type": "application/json"})
        r = c.getresponse(); r.read()
        ok += r.status == 200
    counts.append(ok)
threads = [threading.Thread(target=client) for _ in range(clients)]
for t in threads: t.start()
for t in threads: t.join()
print(f"{sum(counts)} jobs in {seconds:.0f} s: {sum(counts) / seconds:.1f} jobs/s")
PY
load=$!
sleep 2
perf record -q -a -e cpu-clock -F "$FREQ" -o "$work/perf.data" -- sleep "$SECONDS_" 2>/dev/null
# This server's zygote: a zygote.py process descending from it.
zygotes=""
for pid in $(pgrep -f 'zygote.py' || true); do
    p=$pid
    while [[ "$p" -gt 1 ]]; do
        [[ "$p" == "$server" ]] && { zygotes="$zygotes $pid"; break; }
        p=$(awk '/^PPid:/ {print $2}' "/proc/$p/status" 2>/dev/null || echo 1)
    done
done
wait "$load" || true
load=""
echo "== $ISOLATION mode, $CLIENTS clients: $(cat "$work/load.out") (load: $(cut -d' ' -f1-3 /proc/loadavg))"
echo "== samples by process name (every CPU, $SECONDS_ s at $FREQ Hz)"
perf report -i "$work/perf.data" --stdio --sort comm --percent-limit 0.5 2>/dev/null \
    | grep -v '^#' | grep -v '^$' | head -20
# The zygote and its children share a name: by pid, the zygote (and any
# other long-lived process) stands out from the many short job children.
echo "== the busiest single processes (pid:name); this server's zygote:${zygotes:- none}"
perf report -i "$work/perf.data" --stdio --sort pid --percent-limit 1 2>/dev/null \
    | grep -v '^#' | grep -v '^$' | head -10 || true
perf report -i "$work/perf.data" --stdio --sort comm --percent-limit 3 2>/dev/null \
    | grep -v '^#' | grep -v '^$' | sed 's/^ *[0-9.]*% *//; s/ *$//' | head -5 >"$work/comms" || true
while IFS= read -r comm; do
    echo "== top symbols of $comm"
    perf report -i "$work/perf.data" --stdio --comm "$comm" --sort sym 2>/dev/null \
        | grep -v '^#' | grep -v '^$' | head -"$TOP" || true
done <"$work/comms"
