#!/usr/bin/env bash
# pyexec load tests, one command (what `make loadtest` calls).
#
#   loadtest/run.sh                    # smoke, capacity, load, stress against a fresh local server
#   loadtest/run.sh smoke              # CI: the smoke test only (a few seconds)
#   loadtest/run.sh load stress spike  # any of: smoke capacity load stress spike soak baseline
#   loadtest/run.sh all                # smoke capacity load stress spike soak baseline
#   loadtest/run.sh check              # syntax/options check of every script, no server
#   BASE_URL=https://pyexec-xyz.a.run.app PYEXEC_TIMEOUT=10 loadtest/run.sh smoke load
#
# Without BASE_URL it installs what is missing (scripts/setup.sh: k6, nsjail, the
# sandbox venv), builds the release server, starts it on a free 127.0.0.1 port
# with short limits (PYEXEC_TIMEOUT=2, PYEXEC_QUEUE_TIMEOUT=2), waits for /readyz,
# runs the tests, stops it with SIGTERM. "baseline" starts a second server with
# PYEXEC_POOL_SIZE=0 and measures its capacity and its latency under load.js at
# the warm pool's arrival rate (its thresholds are reported, not enforced: a
# jail per request is expected to miss the warm pool's budgets).
#
# Each run's k6 summary goes to loadtest/results/<test>.summary.json (git-ignored), the
# capacity to results/capacity.json, the server log to results/server*.log,
# memory per warm worker to results/memory.json. Exit status: 0 when every
# threshold held, 1 otherwise (2 for a setup failure).
#
# Knobs (environment): LOAD_DURATION (60s), STRESS_DURATION (85s, plus a settle
# gap), SOAK_DURATION (10m), SPIKE_HOLD, LOAD_FRACTION, STRESS_FACTOR,
# CAPACITY (skip the measurement), PYEXEC_POOL_SIZE / PYEXEC_QUEUE_MAX for the
# local server, PYEXEC_BIN (a prebuilt server), SKIP_BUILD=1, K6 (the k6 binary).
set -uo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
results="$here/results"
prefix=${PYEXEC_PREFIX:-/opt/pyexec}
K6=${K6:-$prefix/bin/k6}

log() { printf '\n== loadtest: %s\n' "$*" >&2; }
die() { printf 'loadtest: %s\n' "$*" >&2; exit 2; }

# --- which tests --------------------------------------------------------------
tests=("$@")
[ ${#tests[@]} -eq 0 ] && tests=(smoke capacity load stress)
if [ "${tests[0]}" = all ]; then tests=(smoke capacity load stress spike soak baseline); fi
for t in "${tests[@]}"; do
  case $t in smoke|capacity|load|stress|spike|soak|baseline|check) ;;
    *) die "unknown test '$t' (smoke capacity load stress spike soak baseline check all)";; esac
done
want() { local t; for t in "${tests[@]}"; do [ "$t" = "$1" ] && return 0; done; return 1; }
needs_capacity() { want load || want stress || want spike || want soak || want baseline; }
if needs_capacity && ! want capacity && [ -z "${CAPACITY:-}" ]; then
  # Capacity is measured on the server under test, not taken from an old file.
  tests=(capacity "${tests[@]}")
fi

# --- k6 -----------------------------------------------------------------------
if ! [ -x "$K6" ] && ! command -v k6 >/dev/null 2>&1; then
  log "k6 missing: running scripts/setup.sh"
  bash "$root/scripts/setup.sh" || die "scripts/setup.sh failed"
fi
[ -x "$K6" ] || K6=$(command -v k6) || die "no k6 after setup"

mkdir -p "$results"
failed=()
export PYEXEC_TIMEOUT=${PYEXEC_TIMEOUT:-2}
export PYEXEC_QUEUE_TIMEOUT=${PYEXEC_QUEUE_TIMEOUT:-2}
export CAPACITY_FILE=${CAPACITY_FILE:-$results/capacity.json}
color=(); [ -t 1 ] || color=(--no-color)

if want check; then
  rc=0
  for s in smoke capacity load stress spike soak; do
    if "$K6" inspect -e CAPACITY=5 --execution-requirements "$here/$s.js" >/dev/null 2>"$results/inspect-$s.err"; then
      echo "ok    $s.js"
    else
      echo "FAIL  $s.js"; cat "$results/inspect-$s.err"; rc=1
    fi
  done
  exit $rc
fi

# --- the server under test ----------------------------------------------------
server_pid=
server_label=
stop_server() {
  [ -n "$server_pid" ] || return 0
  if kill -0 "$server_pid" 2>/dev/null; then
    kill -TERM "$server_pid" 2>/dev/null
    for _ in $(seq 1 60); do kill -0 "$server_pid" 2>/dev/null || break; sleep 0.5; done
    if kill -0 "$server_pid" 2>/dev/null; then
      echo "loadtest: server $server_pid ignored SIGTERM for 30 s; SIGKILL" >&2
      kill -KILL "$server_pid" 2>/dev/null
      failed+=("shutdown($server_label)")
    fi
  fi
  wait "$server_pid" 2>/dev/null
  local rc=$?
  [ "$rc" -ne 0 ] && [ "$rc" -ne 143 ] && echo "loadtest: server ($server_label) exited with status $rc" >&2
  server_pid=
}
trap 'stop_server' EXIT
trap 'stop_server; exit 130' INT TERM

free_port() {
  /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# start_server LABEL [VAR=value ...]: starts the server with extra env, waits for /readyz.
start_server() {
  server_label=$1; shift
  local port; port=$(free_port)
  local logf="$results/server-$server_label.log"
  log "starting $server_label server on 127.0.0.1:$port ($*) log: $logf"
  (cd "$root" && exec env PORT="$port" "$@" "$bin") >"$logf" 2>&1 &
  server_pid=$!
  export BASE_URL="http://127.0.0.1:$port"
  for _ in $(seq 1 240); do
    if ! kill -0 "$server_pid" 2>/dev/null; then
      tail -n 30 "$logf" >&2; server_pid=; die "the server exited during start-up"
    fi
    [ "$(curl -s -o /dev/null -w '%{http_code}' "$BASE_URL/readyz")" = 200 ] && return 0
    sleep 0.25
  done
  tail -n 30 "$logf" >&2; die "the server was not ready within 60 s"
}

# Waits (up to 30 s) until every pool slot is a ready worker and nothing runs.
wait_idle() {
  local m ready target busy
  for _ in $(seq 1 60); do
    m=$(curl -s "$BASE_URL/metrics") || true
    ready=$(awk '/^pyexec_workers\{.*state="ready"/ {print $2}' <<<"$m")
    busy=$(awk '/^pyexec_workers\{.*state="busy"/ {print $2}' <<<"$m")
    target=$(awk '/^pyexec_pool_target_size[ {]/ {print $2}' <<<"$m")
    if [ -n "$target" ] && [ "${ready%.*}" -ge "${target%.*}" ] 2>/dev/null && [ "${busy%.*}" = 0 ]; then return 0; fi
    sleep 0.5
  done
  echo "loadtest: server not idle after 30 s (ready=$ready busy=$busy target=$target)" >&2
}

# run_k6 NAME SCRIPT [k6 args...]: one k6 run, its summary in results/NAME.summary.json.
run_k6() {
  local name=$1 script=$2; shift 2
  log "$name ($script) against $BASE_URL"
  "$K6" run "${color[@]}" --quiet --summary-export "$results/$name.summary.json" "$@" "$here/$script"
  local rc=$?
  case $rc in
    0) echo "loadtest: $name passed" >&2 ;;
    99) echo "loadtest: $name FAILED its thresholds" >&2; failed+=("$name") ;;
    *) echo "loadtest: $name did not complete (k6 exit $rc)" >&2; failed+=("$name(k6 exit $rc)") ;;
  esac
  return $rc
}

remote=${BASE_URL:+yes}
if [ -z "$remote" ]; then
  bin=${PYEXEC_BIN:-$root/target/release/pyexec}
  if [ -z "${PYEXEC_BIN:-}" ]; then
    if ! [ -x "$prefix/bin/nsjail" ] || ! [ -x "$prefix/sandbox-venv/bin/python3" ]; then
      log "sandbox not installed: running scripts/setup.sh"
      bash "$root/scripts/setup.sh" || die "scripts/setup.sh failed"
    fi
    if [ "${SKIP_BUILD:-0}" != 1 ]; then
      log "cargo build --release --locked"
      (cd "$root" && cargo build --release --locked) || die "cargo build --release failed"
    fi
  fi
  [ -x "$bin" ] || die "no server binary at $bin"
  pool_env=()
  [ -n "${PYEXEC_POOL_SIZE:-}" ] && pool_env+=("PYEXEC_POOL_SIZE=$PYEXEC_POOL_SIZE")
  [ -n "${PYEXEC_QUEUE_MAX:-}" ] && pool_env+=("PYEXEC_QUEUE_MAX=$PYEXEC_QUEUE_MAX")
  start_server pool PYEXEC_TIMEOUT="$PYEXEC_TIMEOUT" PYEXEC_QUEUE_TIMEOUT="$PYEXEC_QUEUE_TIMEOUT" "${pool_env[@]}"
else
  log "remote target $BASE_URL: no local server; PYEXEC_TIMEOUT=$PYEXEC_TIMEOUT PYEXEC_QUEUE_TIMEOUT=$PYEXEC_QUEUE_TIMEOUT must match it"
fi

# --- the tests, in a fixed order ------------------------------------------------
if want smoke; then run_k6 smoke smoke.js; fi
if [ -z "$remote" ] && [ -n "$server_pid" ]; then
  wait_idle
  /usr/bin/python3 "$here/lib/memory.py" "$server_pid" "$results/memory.json" || true
fi
if want capacity; then
  [ -z "$remote" ] && wait_idle
  run_k6 capacity capacity.js || { [ -z "${CAPACITY:-}" ] && die "no capacity measured: the other tests scale from it"; }
fi
for t in load stress spike soak; do
  if want $t; then
    [ -z "$remote" ] && wait_idle
    run_k6 $t $t.js
  fi
done

if want baseline; then
  if [ -n "$remote" ]; then
    echo "loadtest: baseline needs a local server (PYEXEC_POOL_SIZE=0); skipped for $BASE_URL" >&2
  else
    # The warm pool's capacity is the arrival rate of the comparison.
    warm_capacity=${CAPACITY:-$(/usr/bin/python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["jobs_per_second"])' "$CAPACITY_FILE")}
    stop_server
    start_server pool0 PYEXEC_POOL_SIZE=0 PYEXEC_TIMEOUT="$PYEXEC_TIMEOUT" PYEXEC_QUEUE_TIMEOUT="$PYEXEC_QUEUE_TIMEOUT"
    saved=("${failed[@]}")
    CAPACITY_FILE="$results/capacity-pool0.json" run_k6 capacity-pool0 capacity.js
    CAPACITY="$warm_capacity" run_k6 load-pool0 load.js
    # Reported, not judged: restore the list of failures.
    failed=("${saved[@]}")
  fi
fi

stop_server

echo >&2
if [ -x /usr/bin/python3 ]; then /usr/bin/python3 "$here/report.py" "$results" >&2 || true; fi
if [ ${#failed[@]} -gt 0 ]; then
  echo "loadtest: FAILED: ${failed[*]} (summaries in $results)" >&2
  exit 1
fi
echo "loadtest: all thresholds held (summaries in $results)" >&2
