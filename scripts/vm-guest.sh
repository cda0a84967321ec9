#!/usr/bin/env bash
# vm-guest.sh XFER: the guest's side of scripts/vm-test.sh, run by the VM's
# boot unit from the shared checkout (read-only, at the host's path) on a
# cgroup-v2-only kernel. XFER is the per-run share: config and tests.list in,
# stages.tsv and markers out. Exits non-zero if any stage failed.
#
# Stages (VM_STAGES):
#   cgroup-v2      the kernel offers cgroup v2 only, with memory, pids and cpu
#   e2e            the tests of VM_TESTS in every mode of VM_ISOLATION_MODES
#                  (PYEXEC_TEST_ISOLATION=<mode>), those of VM_TESTS_ONCE too
#                  in the first mode; each test binary in a container cgroup
#                  (below). An entry is a test binary (api), or a filter for
#                  its tests (api:test_name, pyexec_worker:jail::cgroup::).
#   probe          the jail policy property by property, both modes
#                  (worker/tests/jail_policy), in a container cgroup
#   server         per mode: the release pyexec started as PID 1's child in a
#                  container cgroup; its cgroup layout checked from outside,
#                  the API checked by the host through the forwarded port,
#                  SIGTERM leaves nothing behind
#   docker         the host's image, `docker load`ed, checked by docker/check-image.sh
#
# "A container cgroup" is what a runtime gives a container on a v2 host (the
# docker stage checks the real thing; Cloud Run gen2's runtime is not public,
# but it too hands the container a cgroup v2 tree of its own): a delegated
# cgroup whose controllers its parent enables (systemd-run --scope -p
# Delegate=yes, as Docker's docker-<id>.scope), the runtime's own waiting
# process in a sibling (the shim's place), and in it the container's
# processes, all of one pid namespace; a cgroup namespace rooted there with
# cgroup2 mounted at /sys/fs/cgroup (what --cgroupns private gives); tini as
# PID 1. So when pyexec starts, the /sys/fs/cgroup it sees is the root of its
# namespace and already holds processes (tini, and the test binary that
# started it): writing the controllers into that root's subtree_control fails
# ("no internal processes") and the move-out path of worker/src/cgroup.rs
# (enable_controllers_at_top) has to run, as in a container.
set -uo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)

# ---------------------------------------------------------------- the container cgroup
# Internal entry point: `vm-guest.sh __container CMD...`, run by in_container
# inside the scope. Splits the scope into runtime/ (this shell and unshare's
# waiting parent: the shim) and container/ (everything the container runs).
if [ "${1:-}" = __container ]; then
  shift
  cg=/sys/fs/cgroup$(sed -n 's/^0:://p' /proc/self/cgroup)
  mkdir "$cg/runtime" "$cg/container" || exit 1
  echo $$ > "$cg/runtime/cgroup.procs" || exit 1
  echo "+memory +pids +cpu" > "$cg/cgroup.subtree_control" || exit 1
  # In the new pid namespace: join container/ (as pid 1), make the cgroup
  # namespace there, mount this namespace's view of cgroup2 (in place of the
  # guest's) and /proc, and become tini.
  exec unshare --pid --fork --mount --propagation private -- /bin/bash -c '
    echo 0 > "$1/container/cgroup.procs" || exit 1
    shift
    exec unshare --cgroup -- /bin/bash -c "
      umount /sys/fs/cgroup && mount -t cgroup2 cgroup2 /sys/fs/cgroup && mount -t proc proc /proc || exit 1
      exec tini -s -- \"\$@\"" bash "$@"' bash "$cg" "$@"
fi

xfer=${1:?usage: vm-guest.sh XFER}
# shellcheck source=/dev/null
. "$xfer/config"
export PYEXEC_TEST_TIME_SCALE
scale=${PYEXEC_TEST_TIME_SCALE:-1}
scaled() { awk -v a="$1" -v s="$scale" 'BEGIN { printf "%d", a * s }'; }
# The server's spawn and queue timeouts (defaults 30 s and 5 s), stretched for
# the emulated CPU, as the tests' harness does (server/tests/common).
server_timeouts() { echo "PYEXEC_SPAWN_TIMEOUT=$(scaled 30) PYEXEC_QUEUE_TIMEOUT=$(scaled 5)"; }

failures=0
now() { date +%s.%N; }
stage() { # stage NAME CMD...: runs CMD, records its time and exit code
  local name=$1 t0 rc=0 dt
  shift
  t0=$(now)
  printf '\n=== stage %s\n' "$name"
  "$@" || rc=$?
  dt=$(awk -v a="$t0" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }')
  printf '%s\t%s\t%s\n' "$name" "$dt" "$rc" >> "$xfer/stages.tsv"
  if [ "$rc" = 0 ]; then
    printf '=== stage %s: PASS (%s s)\n' "$name" "$dt"
  else
    printf '=== stage %s: FAIL (exit %s, %s s)\n' "$name" "$rc" "$dt"
    failures=$((failures + 1))
  fi
}

# in_container NAME CMD...: CMD as the container "NAME" (see the top).
in_container() {
  local name=$1
  shift
  systemd-run --quiet --scope --collect -p Delegate=yes --unit="pyexec-vm-$name" -- \
    /bin/bash "$here/vm-guest.sh" __container "$@"
}

scope_dir() { # the container/ cgroup of the scope of in_container NAME
  echo "/sys/fs/cgroup$(systemctl show -p ControlGroup --value "pyexec-vm-$1.scope")/container"
}

# ---------------------------------------------------------------- stages
check_v2() {
  local ok=0
  echo "kernel $(uname -r); cmdline: $(cat /proc/cmdline)"
  echo "mounts: $(grep -E ' cgroup2? ' /proc/mounts | tr '\n' ';')"
  grep -q ' /sys/fs/cgroup cgroup2 ' /proc/mounts || { echo "FAIL /sys/fs/cgroup is not cgroup2"; ok=1; }
  if grep -q ' cgroup ' /proc/mounts; then echo "FAIL a cgroup v1 hierarchy is mounted"; ok=1; fi
  # Every controller sits on the v2 hierarchy (hierarchy id 0)...
  if awk 'NR > 1 && $2 != 0 { bad = 1 } END { exit !bad }' /proc/cgroups; then
    echo "FAIL controllers on a v1 hierarchy:"; cat /proc/cgroups; ok=1
  fi
  # ...and none can be mounted as v1 (cgroup_no_v1=all).
  mkdir -p /tmp/v1probe
  if mount -t cgroup -o memory none /tmp/v1probe 2>/dev/null; then
    umount /tmp/v1probe; echo "FAIL a v1 memory hierarchy could be mounted"; ok=1
  fi
  local controllers
  controllers=$(cat /sys/fs/cgroup/cgroup.controllers)
  echo "controllers: $controllers"
  for c in memory pids cpu; do
    [[ " $controllers " == *" $c "* ]] || { echo "FAIL no $c controller"; ok=1; }
  done
  return $ok
}

# The test binary NAME from tests.list (built on the host).
test_binary() { awk -v n="$1" '$1 == n { print $2 }' "$xfer/tests.list"; }

run_tests() { # run_tests BINARY MODE [FILTER...]
  local name=$1 mode=$2 bin
  shift 2
  bin=$(test_binary "$name")
  [ -n "$bin" ] || { echo "no test binary $name in tests.list"; return 1; }
  # One test at a time: under emulation parallel servers only compete for
  # the two vCPUs and stretch every timeout.
  in_container "$name-$mode" env PYEXEC_TEST_ISOLATION="$mode" PYEXEC_TEST_TIME_SCALE="$scale" \
    "$bin" --test-threads=1 "$@"
}

# e2e_stages MODE ENTRY...: a stage per test binary, with the tests named for
# it; a binary named whole runs whole.
e2e_stages() {
  local mode=$1 entry bin
  shift
  local -A tests=() whole=()
  local names=()
  for entry in "$@"; do
    bin=${entry%%:*}
    [[ " ${names[*]} " == *" $bin "* ]] || { names+=("$bin"); tests[$bin]=""; }
    if [[ $entry != *:* ]]; then
      whole[$bin]=1; tests[$bin]=""
    elif [ -z "${whole[$bin]:-}" ]; then
      tests[$bin]+=" ${entry#*:}"
    fi
  done
  for bin in "${names[@]}"; do
    # shellcheck disable=SC2086  # the test names are words
    stage "$bin-$mode" run_tests "$bin" "$mode" ${tests[$bin]}
  done
}

# The release server, started as a container's PID 1's child; looked at from
# outside the container while it serves, checked over HTTP by the host, then
# stopped with SIGTERM to PID 1 (what `docker stop` and Cloud Run do).
serve_stage() { # serve_stage MODE
  local mode=$1 name=server-$1 log=/tmp/server-$1.log
  curl -s -o /dev/null --max-time 2 http://127.0.0.1:8080/ && { echo "port 8080 already taken"; return 1; }
  in_container "$name" env PORT=8080 PYEXEC_ISOLATION="$mode" PYEXEC_LOG_FORMAT=json \
    PYEXEC_POOL_SIZE=2 $(server_timeouts) "$VM_PYEXEC" > "$log" 2>&1 &
  local runner=$! ok=0 deadline
  deadline=$(( $(date +%s) + $(scaled 60) ))
  until curl -sf -o /dev/null --max-time 5 http://127.0.0.1:8080/readyz; do
    if ! kill -0 "$runner" 2>/dev/null || [ "$(date +%s)" -ge "$deadline" ]; then
      echo "FAIL pyexec did not become ready"; tail -30 "$log"; kill "$runner" 2>/dev/null; return 1
    fi
    sleep 1
  done
  grep -m1 '"sandbox self-check passed"' "$log" | cut -c1-600
  grep -q '"sandbox self-check passed".*"cgroup_mode":"v2"' "$log" \
    || { echo "FAIL the self-check did not report cgroup v2"; ok=1; }

  # The container's cgroup, from the guest's root.
  local c procs pid tini="" server="" nspid
  c=$(scope_dir "$name")
  for procs in $(find "$c" -name cgroup.procs); do
    for pid in $(cat "$procs"); do
      case $(cat "/proc/$pid/comm" 2>/dev/null) in
        tini) tini=$pid ;;
        pyexec) server=$pid ;;
      esac
    done
  done
  [ -n "$tini" ] && [ -n "$server" ] || { echo "FAIL tini ($tini) or pyexec ($server) not found in $c"; ok=1; }
  nspid=$(awk '/^NSpid:/ { print $NF }' "/proc/$server/status")
  echo "container cgroup $c:"
  echo "  root cgroup.procs: [$(tr '\n' ' ' < "$c/cgroup.procs")]  subtree_control: $(cat "$c/cgroup.subtree_control")"
  echo "  pyexec-server/cgroup.procs: [$(tr '\n' ' ' < "$c/pyexec-server/cgroup.procs" 2>/dev/null)] (tini $tini, pyexec $server, pid $nspid in the container)"
  [ -z "$(cat "$c/cgroup.procs")" ] || { echo "FAIL processes left in the container's root cgroup"; ok=1; }
  for cc in memory pids cpu; do
    grep -qw "$cc" "$c/cgroup.subtree_control" || { echo "FAIL $cc not delegated below the container's root"; ok=1; }
  done
  grep -qx "$tini" "$c/pyexec-server/cgroup.procs" && grep -qx "$server" "$c/pyexec-server/cgroup.procs" \
    || { echo "FAIL tini and pyexec were not moved into pyexec-server/"; ok=1; }
  local root=$c/pyexec/$nspid workers=0 w want_pids=128
  [ "$mode" = spawn ] && want_pids=129
  for w in "$root"/w*/; do
    [ -d "$w" ] || continue
    workers=$((workers + 1))
    echo "  ${w#"$c"/}: memory.max $(cat "$w/memory.max"), pids.max $(cat "$w/pids.max"), cpu.max $(cat "$w/cpu.max"), procs $(wc -l < "$w/cgroup.procs")"
    # pids.max: the script's 128, plus nsjail itself in spawn mode (a fork
    # child's cgroup holds the job alone).
    [ "$(cat "$w/memory.max")" = 268435456 ] && [ "$(cat "$w/pids.max")" = "$want_pids" ] \
      && [ "$(cat "$w/cpu.max")" = "100000 100000" ] || { echo "FAIL worker limits"; ok=1; }
  done
  [ "$workers" -ge 1 ] || { echo "FAIL no worker cgroup under $root"; ok=1; }

  # The host checks the API through the forwarded port (scripts/vm-test.sh).
  touch "$xfer/serving-$mode"
  deadline=$(( $(date +%s) + $(scaled 120) ))
  until [ -f "$xfer/host-checks-$mode" ]; do
    [ "$(date +%s)" -lt "$deadline" ] || { echo "FAIL no answer from the host's API checks"; ok=1; break; }
    sleep 1
  done
  if [ -f "$xfer/host-checks-$mode" ]; then
    local hrc
    hrc=$(cat "$xfer/host-checks-$mode")
    echo "host's API checks through the forwarded port: exit $hrc"
    [ "$hrc" = 0 ] || ok=1
  fi

  # SIGTERM to the container's PID 1: tini forwards it, pyexec drains and
  # exits 0, and leaves neither a jail nor a cgroup behind.
  kill -TERM "$tini"
  local rc=0
  wait "$runner" || rc=$?
  echo "pyexec exited $rc after SIGTERM to PID 1"
  grep -q 'shutdown complete' "$log" || { echo "FAIL no 'shutdown complete' in the log"; ok=1; }
  [ "$rc" = 0 ] || { tail -20 "$log"; ok=1; }
  if [ -d "$root" ]; then echo "FAIL $root left behind"; ok=1; fi
  if pgrep -x nsjail >/dev/null; then echo "FAIL nsjail processes left: $(pgrep -x nsjail | tr '\n' ' ')"; ok=1; fi
  return $ok
}

docker_stage() {
  local t0 id other
  # Docker's store, kept between runs on a disk of its own (scripts/vm-test.sh).
  if [ -e /dev/disk/by-id/virtio-pyexec-docker ]; then
    mkdir -p /var/lib/docker
    mount /dev/disk/by-id/virtio-pyexec-docker /var/lib/docker || return 1
    touch "$xfer/docker-store-opened"
    echo "Docker's store: the cached disk"
  fi
  systemctl start docker || return 1
  for _ in $(seq "$(scaled 30)"); do docker info >/dev/null 2>&1 && break; sleep 1; done
  docker info --format 'docker {{.ServerVersion}}, cgroup v{{.CgroupVersion}} ({{.CgroupDriver}} driver), storage {{.Driver}}' || return 1
  id=$VM_DOCKER_IMAGE_ID
  if docker image inspect "$id" >/dev/null 2>&1; then
    echo "image $id: already in the store"
  else
    t0=$(now)
    docker load < /dev/disk/by-id/virtio-pyexec-image | grep -q "^Loaded image ID: $id$" \
      || { echo "docker load did not load $id"; return 1; }
    echo "docker load: $(awk -v a="$t0" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }') s"
  fi
  docker tag "$id" "$VM_DOCKER_IMAGE"
  # Only this image stays in the store.
  for other in $(docker image ls -q --no-trunc | sort -u); do
    [ "$other" = "$id" ] || docker rmi -f "$other" >/dev/null
  done
  local rc=0
  READY_TIMEOUT=$(scaled 60) SERVER_ENV="$(server_timeouts)" \
    bash "$repo/docker/check-image.sh" "$VM_DOCKER_IMAGE" || rc=$?
  # The host keeps the store for the next run only if it was closed cleanly.
  if systemctl stop docker docker.socket && mountpoint -q /var/lib/docker \
     && umount /var/lib/docker; then
    touch "$xfer/docker-store-closed"
  fi
  return $rc
}

# ---------------------------------------------------------------- run
echo "pyexec cgroup v2 run: stages '$VM_STAGES', modes '$VM_ISOLATION_MODES', tests per mode '$VM_TESTS', once '$VM_TESTS_ONCE', time scale $scale"
: > "$xfer/stages.tsv"
stage cgroup-v2 check_v2
first_mode=${VM_ISOLATION_MODES%% *}
for mode in $VM_ISOLATION_MODES; do
  if [[ " $VM_STAGES " == *" e2e "* ]]; then
    if [ "$mode" = "$first_mode" ]; then
      # shellcheck disable=SC2086  # lists of words
      e2e_stages "$mode" $VM_TESTS $VM_TESTS_ONCE
    else
      # shellcheck disable=SC2086
      e2e_stages "$mode" $VM_TESTS
    fi
  fi
  if [[ " $VM_STAGES " == *" server "* ]]; then stage "server-$mode" serve_stage "$mode"; fi
done
# Both modes in one binary (the mode argument only names its container);
# each property it checks is printed.
if [[ " $VM_STAGES " == *" probe "* ]]; then stage jail-policy run_tests jail_policy both --nocapture; fi
if [[ " $VM_STAGES " == *" docker "* ]]; then stage docker docker_stage; fi

echo
if [ "$failures" = 0 ]; then echo "=== every stage passed"; else echo "=== $failures stage(s) failed"; fi
[ "$failures" = 0 ]
