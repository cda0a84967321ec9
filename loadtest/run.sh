#!/usr/bin/env bash
# pyexec load tests, one command (what `make loadtest` calls).
#
#   loadtest/run.sh                    # smoke, capacity, load, stress, spike: fork and spawn mode
#   loadtest/run.sh smoke              # CI: the smoke test only, default mode (a few seconds)
#   loadtest/run.sh load stress spike  # any of: smoke capacity load stress spike soak baseline
#   loadtest/run.sh all                # smoke capacity load stress spike soak baseline
#   loadtest/run.sh check              # syntax/options check of every script, no server
#   MODES=fork loadtest/run.sh stress  # one mode only
#   SOAK_DURATION=10m SOAK_RATE=100 loadtest/run.sh soak   # the issue's soak (fork mode)
#   BASE_URL=https://pyexec-xyz.a.run.app PYEXEC_TIMEOUT=10 loadtest/run.sh smoke load
#
# Each isolation mode of MODES (default "fork spawn"; a selection of only smoke
# and soak defaults to the server's default mode, fork) runs against a server
# of its own, freshly started: it installs what is missing (scripts/setup.sh:
# k6, nsjail, the sandbox venv), builds the release server, starts it on a free
# 127.0.0.1 port with PYEXEC_ISOLATION=<mode> and short limits
# (PYEXEC_TIMEOUT=2, PYEXEC_QUEUE_TIMEOUT=2), waits for /readyz, runs the
# tests, stops it with SIGTERM. "baseline" then starts a server of the same mode
# with PYEXEC_POOL_SIZE=0 and measures its capacity and its latency under
# load.js at the warm pool's arrival rate (its thresholds are reported, not
# enforced: a worker made per request is expected to miss the warm pool's
# budgets).
#
# Results go to loadtest/results/<mode>/ (git-ignored; each run replaces the
# folders of the modes it runs): <test>.summary.json (k6's summary),
# capacity.json, memory.json (every idle worker's memory, from its cgroup),
# server.log. report.py then prints one Markdown table with a column per mode.
# Exit status: 0 when every threshold held, 1 otherwise (2 for a setup failure).
#
# Knobs (environment): MODES, LOAD_DURATION (60s), STRESS_DURATION (85s, plus
# a settle gap), SPIKE_HOLD, SOAK_DURATION (10m), SOAK_RATE (req/s; default
# SOAK_FRACTION of capacity), LOAD_FRACTION, STRESS_FACTOR, MAX_RATE (k6's
# ceiling, 400 req/s), CAPACITY (skip the measurement), CAPACITY_VUS,
# CAPACITY_MIX_VUS, MEMORY_CHILD_PRIVATE_MIB (5, fork mode), PYEXEC_POOL_SIZE /
# PYEXEC_QUEUE_MAX for the local servers, PYEXEC_BIN (a prebuilt server),
# SKIP_BUILD=1, K6 (the k6 binary). See loadtest/README.md.
set -uo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
results=${RESULTS:-$here/results}
# Absolute: k6 resolves a relative open() from the script's folder.
mkdir -p "$results" && results=$(cd "$results" && pwd)
prefix=${PYEXEC_PREFIX:-/opt/pyexec}
K6=${K6:-$prefix/bin/k6}

log() { printf '\n== loadtest: %s\n' "$*" >&2; }
die() { printf 'loadtest: %s\n' "$*" >&2; exit 2; }

# --- which tests --------------------------------------------------------------
tests=("$@")
[ ${#tests[@]} -eq 0 ] && tests=(smoke capacity load stress spike)
if [ "${tests[0]}" = all ]; then tests=(smoke capacity load stress spike soak baseline); fi
for t in "${tests[@]}"; do
  case $t in smoke|capacity|load|stress|spike|soak|baseline|check) ;;
    *) die "unknown test '$t' (smoke capacity load stress spike soak baseline check all)";; esac
done
want() { local t; for t in "${tests[@]}"; do [ "$t" = "$1" ] && return 0; done; return 1; }
# smoke checks the contract, not a mode's figures, and is what CI runs; the soak
# is long and the issue's soak target is fork mode's: alone, they run in the
# default mode. Everything else compares the modes.
only_smoke_soak=yes
for t in "${tests[@]}"; do case $t in smoke|soak) ;; *) only_smoke_soak=;; esac; done
if [ -n "${MODES:-}" ]; then
  read -r -a modes <<<"$MODES"
elif [ -n "$only_smoke_soak" ]; then
  modes=("${PYEXEC_ISOLATION:-fork}")
else
  modes=(fork spawn)
fi
for m in "${modes[@]}"; do
  case $m in fork|spawn) ;; *) die "unknown mode '$m' in MODES (fork spawn)";; esac
done
needs_capacity() {
  want load || want stress || want spike || want baseline || { want soak && [ -z "${SOAK_RATE:-}" ]; }
}
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
color=(); [ -t 1 ] || color=(--no-color)

if want check; then
  rc=0
  for m in fork spawn; do
    for s in smoke capacity load stress spike soak; do
      if "$K6" inspect -e CAPACITY=5 -e PYEXEC_ISOLATION=$m --execution-requirements "$here/$s.js" \
        >/dev/null 2>"$results/inspect-$s.err"; then
        echo "ok    $s.js ($m)"
      else
        echo "FAIL  $s.js ($m)"; cat "$results/inspect-$s.err"; rc=1
      fi
    done
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

# start_server LABEL LOGFILE [VAR=value ...]: starts the server with extra env, waits for /readyz.
start_server() {
  server_label=$1; local logf=$2; shift 2
  local port; port=$(free_port)
  log "starting the $server_label server on 127.0.0.1:$port ($*) log: $logf"
  (cd "$root" && exec env PORT="$port" "$@" "$bin") >"$logf" 2>&1 &
  server_pid=$!
  export BASE_URL="http://127.0.0.1:$port"
  for _ in $(seq 1 240); do
    if ! kill -0 "$server_pid" 2>/dev/null; then
      tail -n 30 "$logf" >&2; server_pid=; die "the $server_label server exited during start-up"
    fi
    [ "$(curl -s -o /dev/null -w '%{http_code}' "$BASE_URL/readyz")" = 200 ] && return 0
    sleep 0.25
  done
  tail -n 30 "$logf" >&2; die "the $server_label server was not ready within 60 s"
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

# run_k6 NAME SCRIPT [k6 args...]: one k6 run, its summary in $out/NAME.summary.json.
run_k6() {
  local name=$1 script=$2; shift 2
  log "$mode: $name ($script) against $BASE_URL; load average $(cut -d' ' -f1-3 /proc/loadavg)"
  "$K6" run "${color[@]}" --quiet --summary-export "$out/$name.summary.json" "$@" "$here/$script"
  local rc=$?
  case $rc in
    0) echo "loadtest: $mode: $name passed" >&2 ;;
    99) echo "loadtest: $mode: $name FAILED its thresholds" >&2; failed+=("$mode:$name") ;;
    *) echo "loadtest: $mode: $name did not complete (k6 exit $rc)" >&2; failed+=("$mode:$name(k6 exit $rc)") ;;
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
else
  # One server, one mode: the one it reports (pyexec_build_info), unless MODES says.
  auth=(); [ -n "${AUTH_TOKEN:-}" ] && auth=(-H "Authorization: Bearer $AUTH_TOKEN")
  detected=$(curl -s "${auth[@]}" "$BASE_URL/metrics" | sed -n 's/^pyexec_build_info{.*isolation="\([a-z]*\)".*/\1/p' | head -1)
  modes=("${MODES:-${detected:-${PYEXEC_ISOLATION:-fork}}}")
  [ ${#modes[@]} -eq 1 ] || die "a remote target runs in one mode: MODES=${MODES:-}"
  log "remote target $BASE_URL (${modes[0]} mode): no local server; PYEXEC_TIMEOUT=$PYEXEC_TIMEOUT PYEXEC_QUEUE_TIMEOUT=$PYEXEC_QUEUE_TIMEOUT must match it"
fi

# --- one mode: its own server, the tests in a fixed order -----------------------
run_mode() {
  mode=$1
  out="$results/$mode"
  rm -rf "$out"; mkdir -p "$out"
  export PYEXEC_ISOLATION=$mode
  export CAPACITY_FILE="$out/capacity.json"
  # Closed-model users of capacity.js's mix phase: 8 x CPUs in fork mode,
  # where job slots can bound the mix (this was twice PYEXEC_MAX_JOBS when its
  # default was 4 x CPUs; now it is sized by memory); in spawn mode the spawns
  # bound it and more users would only wait in the queue.
  local cpus; cpus=$(nproc)
  if [ "$mode" = fork ]; then mix_vus=$((8 * cpus)); else mix_vus=$((4 * cpus)); fi
  export CAPACITY_MIX_VUS=${user_mix_vus:-$mix_vus}

  if [ -z "$remote" ]; then
    pool_env=()
    [ -n "${PYEXEC_POOL_SIZE:-}" ] && pool_env+=("PYEXEC_POOL_SIZE=$PYEXEC_POOL_SIZE")
    [ -n "${PYEXEC_QUEUE_MAX:-}" ] && pool_env+=("PYEXEC_QUEUE_MAX=$PYEXEC_QUEUE_MAX")
    start_server "$mode" "$out/server.log" PYEXEC_ISOLATION="$mode" \
      PYEXEC_TIMEOUT="$PYEXEC_TIMEOUT" PYEXEC_QUEUE_TIMEOUT="$PYEXEC_QUEUE_TIMEOUT" "${pool_env[@]}"
  fi

  if want smoke; then run_k6 smoke smoke.js; fi
  if [ -z "$remote" ]; then
    wait_idle
    # The issue's target: an idle pre-forked child holds at most 5 MiB of its own.
    local limit=()
    [ "$mode" = fork ] && limit=(--max-child-private-mib "${MEMORY_CHILD_PRIVATE_MIB:-5}")
    log "$mode: memory of the idle pool"
    /usr/bin/python3 "$here/lib/memory.py" "$server_pid" "$out/memory.json" "${limit[@]}"
    case $? in 0) ;; 1) failed+=("$mode:memory") ;; *) echo "loadtest: $mode: memory not measured" >&2 ;; esac
  fi
  if want capacity; then
    [ -z "$remote" ] && wait_idle
    if ! run_k6 capacity capacity.js && [ -z "${CAPACITY:-}" ]; then
      echo "loadtest: $mode: no capacity measured; the other tests scale from it: skipped" >&2
      stop_server
      return
    fi
  fi
  for t in load stress spike soak; do
    if want $t; then
      [ -z "$remote" ] && wait_idle
      run_k6 $t $t.js
    fi
  done
  stop_server

  if want baseline; then
    if [ -n "$remote" ]; then
      echo "loadtest: baseline needs a local server (PYEXEC_POOL_SIZE=0); skipped for $BASE_URL" >&2
    else
      # The warm pool's capacity for the mix is the arrival rate of the comparison.
      local warm_capacity
      warm_capacity=${CAPACITY:-$(/usr/bin/python3 -c 'import json,sys; c=json.load(open(sys.argv[1])); print(c.get("mix_jobs_per_second") or c["jobs_per_second"])' "$CAPACITY_FILE")}
      start_server "$mode-pool0" "$out/server-pool0.log" PYEXEC_ISOLATION="$mode" PYEXEC_POOL_SIZE=0 \
        PYEXEC_TIMEOUT="$PYEXEC_TIMEOUT" PYEXEC_QUEUE_TIMEOUT="$PYEXEC_QUEUE_TIMEOUT"
      local saved=("${failed[@]}")
      CAPACITY_FILE="$out/capacity-pool0.json" run_k6 capacity-pool0 capacity.js
      CAPACITY="$warm_capacity" run_k6 load-pool0 load.js
      # Reported, not judged: restore the list of failures.
      failed=("${saved[@]}")
      stop_server
    fi
  fi
}

user_mix_vus=${CAPACITY_MIX_VUS:-}
log "tests: ${tests[*]}; modes: ${modes[*]}; results in $results/<mode>/"
for m in "${modes[@]}"; do run_mode "$m"; done

echo >&2
if [ -x /usr/bin/python3 ]; then /usr/bin/python3 "$here/report.py" "$results" "${modes[@]}" >&2 || true; fi
if [ ${#failed[@]} -gt 0 ]; then
  echo "loadtest: FAILED: ${failed[*]} (summaries in $results)" >&2
  exit 1
fi
echo "loadtest: all thresholds held (summaries in $results)" >&2
